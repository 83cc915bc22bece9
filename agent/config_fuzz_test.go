package agent

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// The config file is parsed strictly: any bytes are a Config or an error
// naming the file, never a panic, and an accepted Config is valid.
func FuzzConfig(f *testing.F) {
	f.Add([]byte("web:\n  listen-address: \":9400\"\nlog:\n  level: info\n"))
	f.Add([]byte("collector:\n  gpu:\n    interval: 10s\nreplay:\n  speed: .nan\n"))
	f.Add([]byte("a: &a [*a, *a]\nb: *a\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "gpuwarden.yaml")
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
		RegisterFlags(fs)
		c, err := Load(fs, p)
		if err != nil {
			return
		}
		if verr := c.validate(); verr != nil {
			t.Fatalf("Load accepted a config validate refuses: %v", verr)
		}
	})
}
