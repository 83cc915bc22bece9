package agent

import (
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/spf13/pflag"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

// The README's settings table and metric list are generated from Settings
// and the field table, so the README cannot disagree with the code: every
// key with its environment variable, default, whether SIGHUP applies it,
// and its help.
func TestREADMEFlagTableAndMetricListMatchTheCode(t *testing.T) {
	fs := pflag.NewFlagSet("run", pflag.ContinueOnError)
	RegisterFlags(fs)
	var flags strings.Builder
	flags.WriteString("| flag | environment | default | on SIGHUP | meaning |\n| --- | --- | --- | --- | --- |\n")
	fs.VisitAll(func(f *pflag.Flag) {
		if strings.HasPrefix(f.Name, "no-collector.") {
			return // the off spelling of a collector.<name> row, named in the text
		}
		s := setting(f.Name)
		if s == nil {
			t.Fatalf("flag --%s is not in Settings", f.Name)
		}
		reload := "restart"
		if s.Reload {
			reload = "applied"
		}
		fmt.Fprintf(&flags, "| `--%s` | `%s` | `%s` | %s | %s |\n", f.Name, s.Env(), f.DefValue, reload, f.Usage)
	})

	var metrics strings.Builder
	metrics.WriteString("| metric | type | DCGM field | in dcgm-exporter's defaults | help |\n| --- | --- | --- | --- | --- |\n")
	for _, f := range gpu.Fields {
		typ, def := "gauge", ""
		if f.Type == gpu.Counter {
			typ = "counter"
		}
		if f.Default {
			def = "yes"
		}
		fmt.Fprintf(&metrics, "| `%s` | %s | %d | %s | %s |\n", f.Name, typ, f.DCGMID, def, f.Help)
	}
	fmt.Fprintf(&metrics, "| `DCGM_FI_DEV_XID_ERRORS` | gauge | 230 | yes | Value of the last XID error encountered (labels `err_code`, `err_msg`). |\n")

	path := "../README.md"
	readme, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	s := string(readme)
	for _, sec := range []struct{ name, body string }{{"flags", flags.String()}, {"metrics", metrics.String()}} {
		begin := strings.Index(s, "<!-- "+sec.name+":begin")
		end := strings.Index(s, "<!-- "+sec.name+":end -->")
		if begin < 0 || end < begin {
			t.Fatalf("README.md has no %s:begin/end markers", sec.name)
		}
		begin += strings.Index(s[begin:], "-->\n") + len("-->\n")
		if s[begin:end] != sec.body {
			if !*update {
				t.Fatalf("README.md: the %s section is out of date: run go test ./agent -run TestREADME -update", sec.name)
			}
			s = s[:begin] + sec.body + s[end:]
		}
	}
	if *update {
		if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
