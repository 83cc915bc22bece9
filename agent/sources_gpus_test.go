package agent

import (
	"reflect"
	"testing"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
)

func TestASourceSeesTheGPUsWithTheLabelsOfTheirSeries(t *testing.T) {
	st := NewState("node7", 0, time.Hour, time.Now)
	v := gpuView{st}
	if got := v.GPUs(); len(got) != 0 {
		t.Fatalf("GPUs before the first round: %+v", got)
	}
	info := gpu.Info{Index: 0, UUID: "GPU-aaaa", Name: "NVIDIA H100 80GB HBM3", PCIBusID: "00000000:18:00.0", Minor: 3}
	at := time.Now()
	smp := &gpu.Sample{GPU: info, Time: at, Values: make([]float64, len(gpu.Fields)), Status: make([]gpu.Status, len(gpu.Fields))}
	st.ApplyRound(gpu.Round{Time: time.Now(), DriverVersion: "550.54.15", Samples: []*gpu.Sample{smp}})
	got := v.GPUs()
	if len(got) != 1 {
		t.Fatalf("GPUs: %+v", got)
	}
	want := []string{"gpu", "0", "UUID", "GPU-aaaa", "pci_bus_id", "00000000:18:00.0", "device", "nvidia3",
		"modelName", "NVIDIA H100 80GB HBM3", "Hostname", "node7", "DCGM_FI_DRIVER_VERSION", "550.54.15"}
	if !reflect.DeepEqual(got[0].Labels, want) || got[0].UUID != "GPU-aaaa" || got[0].PCIBusID != info.PCIBusID ||
		!got[0].SampleTime.Equal(at) {
		t.Fatalf("GPU %+v, want labels %v", got[0], want)
	}
}
