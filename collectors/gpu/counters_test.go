package gpu

import (
	"strings"
	"testing"
)

// dcgm-exporter's own default-counters.csv shape, unchanged: exactly the
// rows named are exported; what cannot be honoured is said with its line.
func TestCountersFileSelectsFieldsAndNamesWhatItCannotHonour(t *testing.T) {
	csv := `# Format
# If line starts with a '#' it is considered a comment
# DCGM FIELD, Prometheus metric type, help message

# Clocks
DCGM_FI_DEV_SM_CLOCK,  gauge, SM clock frequency (in MHz).
DCGM_FI_DEV_GPU_TEMP,          gauge, GPU temperature (in C).
DCGM_FI_DEV_POWER_USAGE,              gauge, Power draw (in W).
DCGM_FI_DEV_XID_ERRORS,            gauge,   Value of the last XID error encountered.
DCGM_FI_DRIVER_VERSION,        label, Driver Version
DCGM_FI_DEV_VGPU_LICENSE_STATUS, gauge, vGPU License status
DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION, gauge, Total energy consumption since boot (in mJ).
`
	c, err := ParseCounters([]byte(csv), "default-counters.csv")
	if err != nil {
		t.Fatal(err)
	}
	var on []string
	for i, ok := range c.Only {
		if ok {
			on = append(on, Fields[i].Name)
		}
	}
	want := "DCGM_FI_DEV_SM_CLOCK DCGM_FI_DEV_GPU_TEMP DCGM_FI_DEV_POWER_USAGE DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION"
	if got := strings.Join(on, " "); got != want {
		t.Errorf("exported %s\nwant %s", got, want)
	}
	w := strings.Join(c.Warnings, "\n")
	if !strings.Contains(w, "default-counters.csv:11: DCGM_FI_DEV_VGPU_LICENSE_STATUS is not a field gpuwarden samples") ||
		!strings.Contains(w, "default-counters.csv:12: DCGM_FI_DEV_TOTAL_ENERGY_CONSUMPTION is a counter") {
		t.Errorf("warnings:\n%s", w)
	}
	if _, err := ParseCounters([]byte("DCGM_FI_DEV_GPU_TEMP gauge\nX, histogram, h\n"), "bad.csv"); err == nil ||
		!strings.Contains(err.Error(), "bad.csv:1") || !strings.Contains(err.Error(), "bad.csv:2") {
		t.Errorf("bad rows: %v, want both lines named", err)
	}
}
