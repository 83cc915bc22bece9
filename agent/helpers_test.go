package agent

import (
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/agent/sdnotify"
)

var regexpGoVersion = regexp.MustCompile(`goversion="[^"]*"`)

func newTestNotifier() *sdnotify.Notifier { return sdnotify.New() }

func waitFor(t *testing.T, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func sampleAge(t *testing.T, body string) float64 {
	t.Helper()
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, "gpuwarden_gpu_sample_age_seconds{") {
			f := strings.Fields(line)
			v, err := strconv.ParseFloat(f[len(f)-1], 64)
			if err != nil {
				t.Fatal(err)
			}
			return v
		}
	}
	t.Fatal("no gpuwarden_gpu_sample_age_seconds")
	return 0
}
