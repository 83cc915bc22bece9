package ebpf

import (
	"testing"

	"github.com/cilium/ebpf"
)

// standIn is a tracepoint this kernel has whose five arguments are plain
// integers: the verifier checks a tp_btf program's context reads against
// its target's argument count and types, so the programs whose own
// tracepoint is missing here can still be verified against it.
const standIn = "kvm_hypercall"

// The AER and module programs cannot attach on this kernel, but they pass
// the verifier: on a kernel with their tracepoints only the target differs.
func TestTheProgramsWithoutTheirTracepointPassTheVerifier(t *testing.T) {
	needRoot(t)
	for _, p := range programs {
		if p.Kind == kindOOM {
			continue
		}
		t.Run(p.Symbol, func(t *testing.T) {
			spec, err := loadGpuwarden()
			if err != nil {
				t.Fatal(err)
			}
			ps := spec.Programs[p.Symbol]
			ps.AttachTo = standIn
			spec.Programs = map[string]*ebpf.ProgramSpec{p.Symbol: ps}
			coll, err := ebpf.NewCollection(spec)
			if err != nil {
				t.Fatalf("%s against %s: %v", p.Name, standIn, err)
			}
			coll.Close()
		})
	}
}
