// Package fleet asks a system the site already runs whether this node may
// take a disruptive action (drain, reboot) now. A node cannot see the
// fleet; without such a permit every node that sees the same fault (a bad
// driver push, a flaky switch) would drain itself at once.
//
// Two guards, each a Guard:
//
//   - Prometheus evaluates a PromQL query the operator wrote (how many
//     nodes are cordoned, how many agents report a remediation in
//     progress) and holds the action while its value is at or above a
//     limit. A Prometheus that cannot be asked holds the action (fail
//     closed) unless FailOpen says otherwise; a decision that failed open
//     says so, for the audit log.
//   - Lease is a counting semaphore of Kubernetes coordination.k8s.io/v1
//     Lease objects <prefix>-0 .. <prefix>-(N-1): acquiring takes a free or
//     lapsed slot with an optimistic update, releasing clears it. It talks
//     to the API server over plain HTTPS (in-cluster service account or an
//     explicit server, token and CA) and fails closed.
//
// All combines guards: every one must allow, and when a later one holds,
// what the earlier ones took is given back.
//
// Check never panics on what a server answers, and its error is reserved
// for a guard that could not apply its own policy (invalid configuration,
// the caller's context ended); an unreachable server is a policy outcome,
// reported in the Decision.
//
// # Tests
//
// The Prometheus guard is tested against a real Prometheus (Debian's
// /usr/bin/prometheus) scraping a static target; the test is skipped only
// when that binary is absent. The Lease guard is tested against an
// in-process stand-in that implements just the Lease REST calls it makes
// (GET, POST and PUT with resourceVersion conflicts), because no API server
// can run on the build host; it is not a Kubernetes conformance test.
package fleet
