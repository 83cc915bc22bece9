package hooks

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// apiServer answers the few Kubernetes API calls that cordon, annotate and
// drain make for one node with no pods, and keeps that node's state.
type apiServer struct {
	mu            sync.Mutex
	node          string
	unschedulable bool
	annotations   map[string]string
	patches       []string
	unknown       []string
}

func (a *apiServer) nodeJSON() []byte {
	data, _ := json.Marshal(map[string]any{
		"kind": "Node", "apiVersion": "v1",
		"metadata": map[string]any{"name": a.node, "resourceVersion": "1", "annotations": a.annotations},
		"spec":     map[string]any{"unschedulable": a.unschedulable},
		"status":   map[string]any{},
	})
	return data
}

func (a *apiServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	a.mu.Lock()
	defer a.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	resource := func(name, kind string, namespaced bool) map[string]any {
		return map[string]any{"name": name, "kind": kind, "namespaced": namespaced,
			"verbs": []string{"get", "list", "patch", "create"}}
	}
	switch {
	case r.URL.Path == "/api":
		fmt.Fprint(w, `{"kind":"APIVersions","versions":["v1"],"serverAddressByClientCIDRs":[]}`)
	case r.URL.Path == "/apis":
		fmt.Fprint(w, `{"kind":"APIGroupList","apiVersion":"v1","groups":[]}`)
	case r.URL.Path == "/api/v1":
		_ = json.NewEncoder(w).Encode(map[string]any{"kind": "APIResourceList", "groupVersion": "v1",
			"resources": []any{resource("nodes", "Node", false), resource("pods", "Pod", true),
				resource("pods/eviction", "Eviction", true)}})
	case r.URL.Path == "/api/v1/nodes/"+a.node && r.Method == http.MethodGet:
		_, _ = w.Write(a.nodeJSON())
	case r.URL.Path == "/api/v1/nodes/"+a.node && r.Method == http.MethodPatch:
		body, _ := io.ReadAll(r.Body)
		a.patches = append(a.patches, string(body))
		var p struct {
			Metadata struct {
				Annotations map[string]string `json:"annotations"`
			} `json:"metadata"`
			Spec struct {
				Unschedulable *bool `json:"unschedulable"`
			} `json:"spec"`
		}
		if err := json.Unmarshal(body, &p); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if p.Spec.Unschedulable != nil {
			a.unschedulable = *p.Spec.Unschedulable
		}
		for k, v := range p.Metadata.Annotations {
			if a.annotations == nil {
				a.annotations = map[string]string{}
			}
			a.annotations[k] = v
		}
		_, _ = w.Write(a.nodeJSON())
	case r.URL.Path == "/api/v1/pods" && r.Method == http.MethodGet:
		fmt.Fprint(w, `{"kind":"PodList","apiVersion":"v1","metadata":{"resourceVersion":"1"},"items":[]}`)
	default:
		a.unknown = append(a.unknown, r.Method+" "+r.URL.String())
		http.NotFound(w, r)
	}
}

// TestK8sDrainWithTheRealKubectl runs k8s-drain with kubectl itself, so its
// argv is checked by kubectl and not only against the list we wrote.
func TestK8sDrainWithTheRealKubectl(t *testing.T) {
	if _, err := exec.LookPath("kubectl"); err != nil {
		// Not in .ci/apt-packages.txt: Debian's kubernetes-client clashes
		// with the other kubectl packages a host may already have.
		t.Skip("kubectl not installed (Debian's kubernetes-client, 1.20 or newer, runs this test)")
	}
	api := &apiServer{node: "gpu-node-07"}
	srv := httptest.NewServer(api)
	defer srv.Close()
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	cfg := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: test, cluster: {server: %q}}]
users: [{name: gpuwarden, user: {token: test}}]
contexts: [{name: test, context: {cluster: test, user: gpuwarden}}]
current-context: test
`, srv.URL)
	if err := os.WriteFile(kubeconfig, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}

	out, code := runHook(t, contractEnv(""), "k8s-drain", "--kubeconfig="+kubeconfig, "--timeout=20s")
	api.mu.Lock()
	defer api.mu.Unlock()
	if code != 0 {
		t.Fatalf("exit %d:\n%s\nrequests the stand-in API did not know: %q", code, out, api.unknown)
	}
	if !api.unschedulable {
		t.Errorf("node not cordoned; patches %q", api.patches)
	}
	if got, want := api.annotations["gpuwarden/drain-reason"], "gpuwarden: xid 79 on GPU 3 (00000000:3B:00.0)"; got != want {
		t.Errorf("annotation gpuwarden/drain-reason %q, want %q", got, want)
	}
	if !strings.Contains(out, "drained") {
		t.Errorf("kubectl did not report the drain:\n%s", out)
	}
}
