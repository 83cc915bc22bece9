package pattern

import (
	"regexp"
	"strings"
	"testing"
)

// Each bounded pattern the agent uses (remediation, attribution) matches what its counted form
// matches, on strings around both ends of the bound and off the classes.
func TestBoundedMatchesItsCountedForm(t *testing.T) {
	cases := []struct {
		counted, expr string
		min, max      int
		alphabet      string
	}{
		{`^[a-z0-9][a-z0-9_-]{0,63}$`, `^[a-z0-9][a-z0-9_-]*$`, 1, 64, "a0_-A"},
		{`^[A-Za-z0-9][A-Za-z0-9._-]{0,252}$`, `^[A-Za-z0-9][A-Za-z0-9._-]*$`, 1, 253, "aZ9._-+"},
		{`^gpuwarden: [A-Za-z0-9 :()._,/-]{1,200}$`, `^gpuwarden: [A-Za-z0-9 :()._,/-]+$`, 12, 211, "a :()._,/-;"},
		{`^GPU-[0-9a-fA-F-]{1,64}$`, `^GPU-[0-9a-fA-F-]+$`, 5, 68, "0aF-g"},
		{`^[0-9a-f]{12,128}$`, `^[0-9a-f]+$`, 12, 128, "0fg"},
		{`^[A-Za-z0-9][A-Za-z0-9._+-]{0,127}$`, `^[A-Za-z0-9][A-Za-z0-9._+-]*$`, 0, 128, "a.+-_~"},
		{`^[0-9A-Fa-f:.]{1,32}$`, `^[0-9A-Fa-f:.]+$`, 0, 32, "0F:.g"},
		{`^[a-z_]{1,32}$`, `^[a-z_]+$`, 0, 32, "a_A"},
		{`^[A-Za-z0-9._][A-Za-z0-9._-]{0,63}$`, `^[A-Za-z0-9._][A-Za-z0-9._-]*$`, 0, 64, "a._-@"},
		{`^(host|[0-9]{1,4}|GPU-[0-9a-fA-F-]{1,64}|[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])$`,
			`^(host|[0-9]{1,4}|GPU-[0-9a-fA-F-]+|[0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-7])$`, 1, 68, "0aF-"},
	}
	for _, c := range cases {
		counted := regexp.MustCompile(c.counted)
		bounded := MustCompile(c.expr, c.min, c.max)
		n, matched := 0, 0
		for _, p := range []string{"", "gpuwarden: ", "GPU-", "host", "0000:18:00.", "é"} {
			for _, ch := range c.alphabet + "é\xff" {
				for l := 0; l <= c.max+3; l++ {
					s := p + strings.Repeat(string(ch), l)
					for _, x := range []string{s, "a" + s, s + "0", s + "\xff"} {
						n++
						if counted.MatchString(x) {
							matched++
						}
						if got, want := bounded.MatchString(x), counted.MatchString(x); got != want {
							t.Fatalf("%s: %q: bounded %v, counted %v", c.counted, x, got, want)
						}
					}
				}
			}
		}
		if matched < c.max-c.min {
			t.Fatalf("%s: %d of %d strings matched", c.counted, matched, n)
		}
	}
}
