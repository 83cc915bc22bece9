package fleet

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// fakeAPI is a stand-in for the Kubernetes API server's Lease REST calls,
// as the coordination.k8s.io/v1 API documents them: GET and PUT on
// .../namespaces/{ns}/leases/{name}, POST on .../leases; a PUT must carry
// the resourceVersion it read (409 Conflict otherwise), a POST of an
// existing name is 409 AlreadyExists, MicroTime fields must be RFC3339
// with microseconds. Objects are kept as generic JSON, not the package's
// types, so a wrong field name in the guard shows.
type fakeAPI struct {
	t      *testing.T
	srv    *httptest.Server
	token  string
	tokenF string // file holding token
	caF    string // file holding the server's certificate

	mu     sync.Mutex
	rv     int
	leases map[string]map[string]any // "ns/name"
	// beforeWrite, when set, runs under the lock before a POST or PUT of
	// name is applied: a concurrent writer's chance to get there first.
	beforeWrite func(method, name string)
}

func newFakeAPI(t *testing.T) *fakeAPI {
	f := &fakeAPI{t: t, token: "sa-token", leases: map[string]map[string]any{}}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(f.serve))
	f.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the untrusted-CA test's handshake error
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	dir := t.TempDir()
	f.tokenF, f.caF = filepath.Join(dir, "token"), filepath.Join(dir, "ca.crt")
	os.WriteFile(f.tokenF, []byte(f.token+"\n"), 0o600)
	os.WriteFile(f.caF, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: f.srv.Certificate().Raw}), 0o644)
	return f
}

// guard is a Lease guard for holder talking to f.
func (f *fakeAPI) guard(holder string, limit int) *Lease {
	return &Lease{Server: f.srv.URL, TokenFile: f.tokenF, CAFile: f.caF, Namespace: "gpu-ops",
		Prefix: "gpuwarden-disruption", Holder: holder, Limit: limit, Duration: 10 * time.Minute}
}

func status(w http.ResponseWriter, code int, reason, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(map[string]any{"kind": "Status", "apiVersion": "v1", "status": "Failure",
		"reason": reason, "message": msg, "code": code})
}

func (f *fakeAPI) serve(w http.ResponseWriter, r *http.Request) {
	if r.Header.Get("Authorization") != "Bearer "+f.token {
		status(w, 401, "Unauthorized", "Unauthorized")
		return
	}
	const prefix = "/apis/coordination.k8s.io/v1/namespaces/"
	parts := strings.Split(strings.TrimPrefix(r.URL.Path, prefix), "/")
	if !strings.HasPrefix(r.URL.Path, prefix) || len(parts) < 2 || len(parts) > 3 || parts[1] != "leases" {
		status(w, 404, "NotFound", "the server could not find the requested resource")
		return
	}
	ns, name := parts[0], ""
	if len(parts) == 3 {
		name = parts[2]
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	switch {
	case r.Method == http.MethodGet && name != "":
		obj, ok := f.leases[ns+"/"+name]
		if !ok {
			status(w, 404, "NotFound", fmt.Sprintf("leases.coordination.k8s.io %q not found", name))
			return
		}
		json.NewEncoder(w).Encode(obj)
	case r.Method == http.MethodPost && name == "":
		obj, msg := f.decode(r)
		if msg != "" {
			status(w, 400, "BadRequest", msg)
			return
		}
		name = meta(obj, "name")
		if f.beforeWrite != nil {
			f.beforeWrite("POST", name)
		}
		if _, ok := f.leases[ns+"/"+name]; ok {
			status(w, 409, "AlreadyExists", fmt.Sprintf("leases.coordination.k8s.io %q already exists", name))
			return
		}
		f.store(ns, name, obj)
		w.WriteHeader(201)
		json.NewEncoder(w).Encode(obj)
	case r.Method == http.MethodPut && name != "":
		obj, msg := f.decode(r)
		if msg != "" {
			status(w, 400, "BadRequest", msg)
			return
		}
		if meta(obj, "name") != name {
			status(w, 400, "BadRequest", "the name of the object does not match the name on the URL")
			return
		}
		if f.beforeWrite != nil {
			f.beforeWrite("PUT", name)
		}
		cur, ok := f.leases[ns+"/"+name]
		switch {
		case !ok:
			status(w, 404, "NotFound", fmt.Sprintf("leases.coordination.k8s.io %q not found", name))
		case meta(obj, "resourceVersion") == "":
			status(w, 422, "Invalid", "metadata.resourceVersion: Invalid value: 0x0: must be specified for an update")
		case meta(obj, "resourceVersion") != meta(cur, "resourceVersion"):
			status(w, 409, "Conflict", fmt.Sprintf("Operation cannot be fulfilled on leases.coordination.k8s.io %q: the object has been modified; please apply your changes to the latest version and try again", name))
		default:
			f.store(ns, name, obj)
			json.NewEncoder(w).Encode(obj)
		}
	default:
		status(w, 405, "MethodNotAllowed", r.Method+" not allowed")
	}
}

// decode reads a Lease and checks what the API server's validation would.
func (f *fakeAPI) decode(r *http.Request) (map[string]any, string) {
	var obj map[string]any
	if err := json.NewDecoder(r.Body).Decode(&obj); err != nil {
		return nil, err.Error()
	}
	if obj["apiVersion"] != "coordination.k8s.io/v1" || obj["kind"] != "Lease" {
		return nil, fmt.Sprintf("apiVersion %v kind %v", obj["apiVersion"], obj["kind"])
	}
	spec, _ := obj["spec"].(map[string]any)
	for _, k := range []string{"acquireTime", "renewTime"} {
		if v, ok := spec[k]; ok {
			s, _ := v.(string)
			if _, err := time.Parse("2006-01-02T15:04:05.000000Z07:00", s); err != nil {
				return nil, fmt.Sprintf("spec.%s: %v", k, err)
			}
		}
	}
	if v, ok := spec["leaseDurationSeconds"]; ok {
		if n, _ := v.(float64); n <= 0 || n != float64(int32(n)) {
			return nil, fmt.Sprintf("spec.leaseDurationSeconds: %v", v)
		}
	}
	return obj, ""
}

func meta(obj map[string]any, key string) string {
	m, _ := obj["metadata"].(map[string]any)
	s, _ := m[key].(string)
	return s
}

// store saves obj as ns/name with a new resourceVersion; f.mu is held.
func (f *fakeAPI) store(ns, name string, obj map[string]any) {
	f.rv++
	m, _ := obj["metadata"].(map[string]any)
	if m == nil {
		m = map[string]any{}
		obj["metadata"] = m
	}
	m["name"], m["namespace"], m["resourceVersion"] = name, ns, strconv.Itoa(f.rv)
	f.leases[ns+"/"+name] = obj
}

// put stores a Lease held by holder (none when "") as another writer
// would; f.mu is held or the server is idle.
func (f *fakeAPI) put(name, holder string, renewed time.Time, seconds int) {
	spec := map[string]any{"leaseDurationSeconds": seconds,
		"acquireTime": renewed.UTC().Format(microTime), "renewTime": renewed.UTC().Format(microTime)}
	if holder != "" {
		spec["holderIdentity"] = holder
	}
	f.store("gpu-ops", name, map[string]any{"apiVersion": "coordination.k8s.io/v1", "kind": "Lease",
		"metadata": map[string]any{"labels": map[string]any{"owner": "someone-else"}}, "spec": spec})
}

// spec returns a stored Lease's spec, nil when absent.
func (f *fakeAPI) spec(name string) map[string]any {
	f.mu.Lock()
	defer f.mu.Unlock()
	obj, ok := f.leases["gpu-ops/"+name]
	if !ok {
		return nil
	}
	s, _ := obj["spec"].(map[string]any)
	return s
}
