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

func TestActionRankOrdersTheVocabularyLeastFirst(t *testing.T) {
	if !(ActionNone.Rank() < ActionRestartApplication.Rank() && ActionRestartApplication.Rank() < ActionResetGPU.Rank() &&
		ActionResetGPU.Rank() < ActionReboot.Rank() && ActionReboot.Rank() < ActionDrainAndReset.Rank() &&
		ActionDrainAndReset.Rank() < ActionHardwareInspection.Rank() && ActionHardwareInspection.Rank() < ActionContactSupport.Rank()) {
		t.Error("actions are not ranked least to most")
	}
	if Action("").Rank() != 0 || Action("dkms autoinstall -k 6.1.0-20-amd64").Rank() != 0 {
		t.Error("empty and free text must rank 0: they are not actions")
	}
}
