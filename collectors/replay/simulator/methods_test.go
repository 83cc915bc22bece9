package simulator

import (
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
)

// GetFieldValues, written by hand, round-trips too: each value with its own
// return. (GPM's hand-written methods: gpm_test.go.)
func TestFieldValuesRoundTrip(t *testing.T) {
	sim := New(demoScenario(t))
	sim.Step(60)
	rec := replay.NewRecorder(sim.Library())
	rd, _ := rec.Library().DeviceGetHandleByIndex(1)
	ids := []uint32{nvml.FI_DEV_MEMORY_TEMP, nvml.FI_DEV_NVLINK_THROUGHPUT_RAW_TX, nvml.FI_DEV_RETIRED_SBE}
	ask := func(d gpu.Device) (string, nvml.Return) {
		vals := make([]nvml.FieldValue, len(ids))
		for i, id := range ids {
			vals[i].FieldId = id
		}
		ret := d.GetFieldValues(vals)
		var s []string
		for _, v := range vals {
			s = append(s, fmt.Sprintf("%d=%g/%d", v.FieldId, gpu.FieldValueFloat(v), v.NvmlReturn))
		}
		return strings.Join(s, " "), ret
	}
	recorded, rret := ask(rd)
	rec.Commit(0)

	start := time.Unix(0, 0)
	p := replay.NewPlayer(rec.Trace(replay.Header{GPUs: make([]gpu.Info, 2)}), replay.PlayerOptions{Clock: func() time.Time { return start }})
	pd, _ := p.Library().DeviceGetHandleByIndex(1)
	played, pret := ask(pd)
	if played != recorded || pret != rret {
		t.Errorf("field values recorded %s (%v), played back %s (%v)", recorded, rret, played, pret)
	}
	if !strings.Contains(recorded, fmt.Sprintf("%d=0/%d", nvml.FI_DEV_RETIRED_SBE, nvml.ERROR_NOT_SUPPORTED)) {
		t.Errorf("field values %s: want retired pages NOT_SUPPORTED, as the simulated H100 says", recorded)
	}
}
