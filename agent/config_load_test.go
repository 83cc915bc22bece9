package agent

import (
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

// twoValues returns two values of the setting's type that differ, as text
// (for a flag, a variable or the file) and as the Config field holds them.
func twoValues(t *testing.T, s Setting) (a, b string, va, vb any) {
	t.Helper()
	switch d := s.Default.(type) {
	case string:
		return "a-" + d, "b-" + d, "a-" + d, "b-" + d
	case []string:
		return "127.0.0.1:1", "127.0.0.1:2", []string{"127.0.0.1:1"}, []string{"127.0.0.1:2"}
	case bool:
		return strconv.FormatBool(!d), strconv.FormatBool(d), !d, d
	case int:
		return "7", "9", 7, 9
	case float64:
		return "3.5", "4.5", 3.5, 4.5
	case time.Duration:
		return "7s", "9s", 7 * time.Second, 9 * time.Second
	}
	t.Fatalf("setting %s: default of type %T", s.Name, s.Default)
	return
}

// Every setting is the first of: its flag as given, its environment
// variable, the config file's key, the flag's default.
func TestEverySettingTakesTheFlagThenTheEnvironmentThenTheFile(t *testing.T) {
	layers := []string{"flag", "env", "file", "default"}
	for _, s := range Settings {
		for hi := 0; hi < len(layers)-1; hi++ {
			for lo := hi + 1; lo < len(layers); lo++ {
				t.Run(s.Name+"/"+layers[hi]+"-over-"+layers[lo], func(t *testing.T) {
					a, b, va, vb := twoValues(t, s)
					set := map[string]string{layers[hi]: a}
					want := va
					if layers[lo] != "default" {
						set[layers[lo]] = b
					} else if reflect.DeepEqual(va, s.Default) {
						want = vb // a bool whose default is a's value
					}
					var args []string
					if v, ok := set["flag"]; ok {
						args = append(args, "--"+s.Name+"="+v)
					}
					if v, ok := set["env"]; ok {
						t.Setenv(s.Env(), v)
					}
					file := ""
					if v, ok := set["file"]; ok {
						file = filepath.Join(t.TempDir(), "gpuwarden.yaml")
						if err := os.WriteFile(file, []byte(s.Name+": \""+v+"\"\n"), 0o644); err != nil {
							t.Fatal(err)
						}
					}
					c, _ := Load(runFlags(t, args...), file) // some values are not valid: only the reading matters here
					if got := s.value(&c); !reflect.DeepEqual(got, want) {
						t.Errorf("%v: %s is %#v, want %#v", set, s.Name, got, want)
					}
				})
			}
		}
	}
}

// A list from the environment, or a scalar in the file, is its words; an
// empty list in the file is an empty list, not the default.
func TestAListSettingFromTextIsItsWords(t *testing.T) {
	t.Setenv("GPUWARDEN_WEB_LISTEN_ADDRESS", " 127.0.0.1:1  127.0.0.1:2 ")
	c, err := Load(runFlags(t), "")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(c.ListenAddresses, "|"); got != "127.0.0.1:1|127.0.0.1:2" {
		t.Errorf("from the environment: %q", c.ListenAddresses)
	}
	os.Unsetenv("GPUWARDEN_WEB_LISTEN_ADDRESS")
	for text, want := range map[string][]string{
		"web.listen-address: \"127.0.0.1:3 127.0.0.1:4\"\n":    {"127.0.0.1:3", "127.0.0.1:4"},
		"web:\n  listen-address: [\"127.0.0.1:5\", \"x y\"]\n": {"127.0.0.1:5", "x y"},
		"web.listen-address: []\n":                             nil,
	} {
		file := filepath.Join(t.TempDir(), "gpuwarden.yaml")
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		c, _ := Load(runFlags(t), file)
		if !reflect.DeepEqual(c.ListenAddresses, want) {
			t.Errorf("%q: %q, want %q", text, c.ListenAddresses, want)
		}
	}
}
