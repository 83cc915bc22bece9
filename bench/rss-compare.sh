#!/bin/sh
# Resident memory of the built agent beside node_exporter's, in the same
# harness: each daemon alone in a fresh network namespace (only lo, up), at
# its default interval, scraped every 10 s as Prometheus does (gzip
# accepted) for a span (60 s by default); then VmRSS, RssAnon and RssFile
# from /proc/<pid>/status. RSS_RUNS runs of each, one after the other.
# Goal: the agent's VmRSS at most node_exporter's.
#
#   bench/rss-compare.sh [BINARY] [NODE_EXPORTER]
#       (default: bin/gpuwarden /usr/bin/prometheus-node-exporter)
#   RSS_RUNS=3 RSS_SECONDS=60 RSS_SCRAPE=10
#
# The agent plays the embedded 8-GPU demo trace, looping. node_exporter is
# Debian's prometheus-node-exporter (`make deps`), run directly, not as a
# service; without it the agent is measured alone. Needs root (unshare -n).
#
# Each daemon runs from a copy made with cp, as a package manager would
# install it: how a file came into the page cache changes how much of it a
# fault maps in, and a binary fresh from the linker showed 1.5 to 3 MB more
# RssFile than a copy of itself.
set -eu
bin=${1:-bin/gpuwarden}
nodeexp=${2:-/usr/bin/prometheus-node-exporter}
runs=${RSS_RUNS:-3}
span=${RSS_SECONDS:-60}
every=${RSS_SCRAPE:-10}

daemons=gpuwarden
if [ -x "$nodeexp" ]; then
	daemons="gpuwarden node_exporter"
else
	echo "rss-compare: $nodeexp is not installed (apt-get install prometheus-node-exporter, or make deps): measuring the agent alone" >&2
fi

# measure NAME DIR runs one daemon in a new network namespace, scrapes it
# and prints "VmRSS RssAnon RssFile scrapes-failed" (kB) on stdout.
measure() {
	name=$1 dir=$2
	case $name in
	gpuwarden)
		addr=127.0.0.1:19400
		set -- "$bin" run --backend replay --replay.loop --state.dir "$dir/state" \
			--control.socket "$dir/control.sock" --web.listen-address "$addr" --log.level warn
		;;
	node_exporter)
		addr=127.0.0.1:9100
		set -- "$nodeexp" --web.listen-address="$addr" --log.level=warn
		;;
	esac
	# The namespace's shell starts the daemon, scrapes it, reads its status
	# and stops it; the daemon's output goes to DIR/log.
	# shellcheck disable=SC2016 # expanded by the namespace's shell
	unshare -n sh -c '
		ip link set lo up
		span=$1 every=$2 addr=$3 dir=$4; shift 4
		"$@" >"$dir/log" 2>&1 &
		pid=$!
		failed=0 t=0
		while [ "$t" -lt "$span" ]; do
			sleep "$every"; t=$((t + every))
			curl -sf -o /dev/null -H "Accept-Encoding: gzip" "http://$addr/metrics" || failed=$((failed + 1))
		done
		if ! kill -0 "$pid" 2>/dev/null; then
			echo "rss-compare: $1 exited:" >&2; cat "$dir/log" >&2; exit 1
		fi
		awk -v f="$failed" "/^VmRSS:/ { v = \$2 } /^RssAnon:/ { a = \$2 } /^RssFile:/ { r = \$2 }
			END { print v, a, r, f }" "/proc/$pid/status"
		kill "$pid"; wait "$pid" 2>/dev/null || true
	' rss-compare "$span" "$every" "$addr" "$dir" "$@"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
trap 'exit 130' INT TERM
size() { wc -c <"$1" | tr -d ' '; }
binsize=$(size "$bin") nodesize=""
origbin=$bin orignode=$nodeexp
cp "$bin" "$work/gpuwarden"
bin=$work/gpuwarden
if [ -x "$nodeexp" ]; then
	nodesize=$(size "$nodeexp")
	cp "$nodeexp" "$work/node_exporter"
	nodeexp=$work/node_exporter
fi
echo "rss-compare: $runs runs of ${span} s each, a scrape every ${every} s; kB from /proc/PID/status"
i=1
while [ "$i" -le "$runs" ]; do
	line=$(printf '%-4s' "$i")
	for d in $daemons; do
		mkdir -p "$work/$d-$i/state"
		r=$(measure "$d" "$work/$d-$i")
		# shellcheck disable=SC2086 # four numbers, split on purpose
		set -- $r
		line="$line$(printf '  %-13s VmRSS %6s  RssAnon %6s  RssFile %6s' "$d" "$1" "$2" "$3")"
		[ "$4" = 0 ] || line="$line (scrapes failed: $4)"
	done
	echo "$line"
	i=$((i + 1))
done
printf 'binary  %s %s B' "$origbin" "$binsize"
[ -n "$nodesize" ] && printf ', %s %s B (%s)' "$orignode" "$nodesize" \
	"$("$nodeexp" --version 2>&1 | sed -n '1s/^node_exporter, version \([^ ]*\).*/node_exporter \1/p')"
echo
