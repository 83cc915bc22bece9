package replay

import (
	"bytes"
	"fmt"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"

	"github.com/gpuwarden/gpuwarden/collectors/gpu"
	"github.com/gpuwarden/gpuwarden/collectors/replay/internal/nvmlcalls"
)

// go-nvml's devices, live and mock, are a gpu.Device as they are.
var _ gpu.Device = nvml.Device(nil)

func TestGeneratedFilesAreCurrent(t *testing.T) {
	dir := t.TempDir()
	if err := nvmlcalls.Write(dir); err != nil {
		t.Fatal(err)
	}
	for _, name := range nvmlcalls.Files {
		want, err := os.ReadFile(dir + "/" + name)
		if err != nil {
			t.Fatal(err)
		}
		got, err := os.ReadFile(name)
		if err != nil || !bytes.Equal(got, want) {
			t.Errorf("collectors/replay/%s is not what its table generates: run make generate", name)
		}
	}
}

func TestEveryDeviceMethodIsATableRowOrWrittenByHand(t *testing.T) {
	where := map[string]string{}
	for _, m := range nvmlcalls.Methods {
		where[m.Name] = "the table"
	}
	for _, name := range nvmlcalls.ByHand {
		if w, ok := where[name]; ok {
			t.Errorf("%s is both in %s and in nvmlcalls.ByHand", name, w)
		}
		where[name] = "nvmlcalls.ByHand"
	}
	dev := reflect.TypeFor[gpu.Device]()
	for i := range dev.NumMethod() {
		name := dev.Method(i).Name
		if where[name] == "" {
			t.Errorf("gpu.Device.%s is neither a row in nvmlcalls.Methods nor in nvmlcalls.ByHand", name)
		}
		delete(where, name)
	}
	for name, w := range where {
		t.Errorf("%s is in %s but not in gpu.Device", name, w)
	}
}

// Every table method, recorded through the recorder over go-nvml's DGX H100
// mock and played back, answers what the mock said, and only for the
// arguments it was called with; an error return comes back as itself.
func TestEveryTableMethodRoundTrips(t *testing.T) {
	for _, m := range nvmlcalls.Methods {
		t.Run(m.Name, func(t *testing.T) {
			for _, want := range []nvml.Return{nvml.SUCCESS, nvml.ERROR_GPU_IS_LOST} {
				srv := dgxh100.New()
				md := srv.Devices[0].(*server.Device)
				fn := reflect.ValueOf(md).Elem().FieldByName(m.Name + "Func")
				if !fn.IsValid() {
					t.Fatalf("go-nvml's mock device has no %sFunc", m.Name)
				}
				results := tableResults(t, m, fn.Type(), want == nvml.SUCCESS)
				fn.Set(reflect.MakeFunc(fn.Type(), func([]reflect.Value) []reflect.Value {
					return append(append([]reflect.Value(nil), results...), reflect.ValueOf(want))
				}))

				rec := NewRecorder(gpu.FromNVML(srv))
				rd, ret := rec.Library().DeviceGetHandleByIndex(0)
				if ret != nvml.SUCCESS {
					t.Fatal(ret)
				}
				args := tableArgs(fn.Type(), 1)
				recorded := reflect.ValueOf(rd).MethodByName(m.Name).Call(args)
				rec.Commit(0)

				start := time.Unix(0, 0)
				p := NewPlayer(rec.Trace(Header{GPUs: []gpu.Info{{Index: 0}}}), PlayerOptions{Clock: func() time.Time { return start }})
				pd, _ := p.Library().DeviceGetHandleByIndex(0)
				played := reflect.ValueOf(pd).MethodByName(m.Name).Call(args)
				if g, w := show(played), show(recorded); g != w {
					t.Errorf("recorded %s, played back %s", w, g)
				}
				if w := show(append(results, reflect.ValueOf(want))); show(recorded) != w {
					t.Errorf("the recorder answered %s; the mock said %s", show(recorded), w)
				}
				if len(args) > 0 {
					other := reflect.ValueOf(pd).MethodByName(m.Name).Call(tableArgs(fn.Type(), 2))
					if r := other[len(other)-1].Interface(); r != nvml.ERROR_NOT_SUPPORTED {
						t.Errorf("other arguments than recorded answer %v, want NOT_SUPPORTED", r)
					}
				}
			}
		})
	}
}

// tableResults makes m's results as the mock's function type returns them:
// every value the trace stores distinct and not zero (when filled), and
// nothing the trace does not store.
func tableResults(t *testing.T, m nvmlcalls.Method, fn reflect.Type, filled bool) []reflect.Value {
	t.Helper()
	out := make([]reflect.Value, fn.NumOut()-1)
	for i := range out {
		out[i] = reflect.New(fn.Out(i)).Elem()
	}
	if !filled {
		return out
	}
	refs := []string{"v0"}
	if m.JSON != "" {
		refs = refs[:0]
		for _, f := range m.Fields {
			refs = append(refs, f.Result)
		}
	}
	for n, ref := range refs {
		var i int
		sel, _, _ := strings.Cut(ref, ".")
		if _, err := fmt.Sscanf(sel, "v%d", &i); err != nil || i >= len(out) {
			t.Fatalf("field %q is not a result", ref)
		}
		v := out[i]
		if _, field, ok := strings.Cut(ref, "."); ok {
			v = v.FieldByName(field)
		}
		switch v.Kind() {
		case reflect.Bool:
			v.SetBool(n%2 == 0)
		case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
			v.SetInt(int64(41 + n))
		case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
			v.SetUint(uint64(41 + n))
		default:
			t.Fatalf("%s: cannot fill a %s", ref, v.Type())
		}
	}
	return out
}

// tableArgs are arguments for fn, each base plus its position.
func tableArgs(fn reflect.Type, base int64) []reflect.Value {
	args := make([]reflect.Value, fn.NumIn())
	for i := range args {
		args[i] = reflect.New(fn.In(i)).Elem()
		args[i].SetInt(base + int64(i))
	}
	return args
}

func show(vs []reflect.Value) string {
	s := make([]string, len(vs))
	for i, v := range vs {
		s[i] = fmt.Sprintf("%+v", v.Interface())
	}
	return strings.Join(s, ", ")
}

// Static enumeration asks for the memory size before any record applies;
// the header answers it until the trace does.
func TestMemoryIsAnsweredFromTheHeaderBeforeTheTraceSaysIt(t *testing.T) {
	start := time.Unix(0, 0)
	tr := &Trace{Header: Header{GPUs: []gpu.Info{{Index: 0, MemoryTotalMB: 81559}}}}
	p := NewPlayer(tr, PlayerOptions{Clock: func() time.Time { return start }})
	d, _ := p.Library().DeviceGetHandleByIndex(0)
	if m, ret := d.GetMemoryInfo_v2(); ret != nvml.SUCCESS || m.Total != 81559<<20 {
		t.Errorf("GetMemoryInfo_v2 = %+v, %v; want the header's total", m, ret)
	}
	tr.Header.GPUs[0].MemoryTotalMB = 0
	d, _ = p.Library().DeviceGetHandleByIndex(0)
	if _, ret := d.GetMemoryInfo_v2(); ret != nvml.ERROR_NOT_SUPPORTED {
		t.Errorf("without a header total: %v, want NOT_SUPPORTED", ret)
	}
}
