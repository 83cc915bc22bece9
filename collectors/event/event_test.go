package event

import (
	"encoding/json"
	"testing"
)

func TestWorseRanksCriticalAboveUnknownAboveNothingWrong(t *testing.T) {
	cases := []struct{ a, b, want Level }{
		{OK, Warning, Warning},
		{Warning, Critical, Critical},
		{Critical, Unknown, Critical}, // one critical finding and one check that could not run: critical
		{OK, Unknown, Unknown},
		{Unknown, Warning, Warning},
	}
	for _, c := range cases {
		if got := Worse(c.a, c.b); got != c.want {
			t.Errorf("Worse(%v, %v) = %v, want %v", c.a, c.b, got, c.want)
		}
		if got := Worse(c.b, c.a); got != c.want {
			t.Errorf("Worse(%v, %v) = %v, want %v", c.b, c.a, got, c.want)
		}
	}
}

func TestLevelsAreNagiosExitCodesAndNamesInJSON(t *testing.T) {
	for l, code := range map[Level]int{OK: 0, Warning: 1, Critical: 2, Unknown: 3} {
		if l.ExitCode() != code {
			t.Errorf("%v exit code %d, want %d", l, l.ExitCode(), code)
		}
		b, _ := json.Marshal(l)
		var back Level
		if err := json.Unmarshal(b, &back); err != nil || back != l {
			t.Errorf("%s does not round-trip: %v %v", b, back, err)
		}
	}
	var l Level
	if err := json.Unmarshal([]byte(`"fine"`), &l); err == nil {
		t.Error(`"fine" accepted as a level`)
	}
}
