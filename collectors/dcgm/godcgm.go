package dcgm

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdlib.h>

// pin takes a reference to the library DCGM's Init loaded, with
// RTLD_NODELETE, so that it stays mapped after go-dcgm's Shutdown closes
// it. RTLD_NOLOAD: it never loads anything itself.
static int pin(const char *name) {
	return dlopen(name, RTLD_LAZY | RTLD_GLOBAL | RTLD_NOLOAD | RTLD_NODELETE) != NULL;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
	"unsafe"

	godcgm "github.com/NVIDIA/go-dcgm/pkg/dcgm"
)

// FromGoDCGM is the Library over go-dcgm. go-dcgm dlopens libdcgm.so.4 in
// Init and links with unresolved symbols allowed, so the binary builds
// without DCGM and starts without it: Init then fails with "libdcgm.so.4 not
// found". Any other call after a failed Init would kill the process on an
// unresolved symbol, which is why the source's guard owns every call.
func FromGoDCGM() Library { return goDCGM{} }

type goDCGM struct{}

func (goDCGM) Init(address string) error {
	var err error
	if address == "" {
		_, err = godcgm.Init(godcgm.Embedded)
	} else {
		addr, unix := splitAddress(address)
		_, err = godcgm.Init(godcgm.Standalone, addr, unix)
	}
	if err == nil {
		pinLibrary()
	}
	return err
}

var pinOnce sync.Once

// pinLibrary keeps libdcgm mapped for the life of the process once an Init
// has loaded it. go-dcgm unregisters a policy from its own goroutine after
// the context ends, which can run after Shutdown has dlclosed the library:
// pinned, that late call gets an error from DCGM instead of jumping into
// unmapped memory.
func pinLibrary() {
	pinOnce.Do(func() {
		name := C.CString(libName)
		defer C.free(unsafe.Pointer(name))
		C.pin(name)
	})
}

// splitAddress is go-dcgm's pair for a standalone hostengine: the address
// and "1" for a unix socket path (absolute, or "unix:" before it), "0" for
// host:port.
func splitAddress(a string) (string, string) {
	if p, ok := strings.CutPrefix(a, "unix:"); ok {
		return p, "1"
	}
	if strings.HasPrefix(a, "/") {
		return a, "1"
	}
	return a, "0"
}

func (goDCGM) Shutdown() error { return godcgm.Shutdown() }

func (goDCGM) Devices() ([]Device, error) {
	ids, err := godcgm.GetSupportedDevices()
	if err != nil {
		return nil, err
	}
	out := make([]Device, 0, len(ids))
	for _, id := range ids {
		d, err := godcgm.GetDeviceInfo(id)
		if err != nil {
			return nil, fmt.Errorf("DCGM GPU %d: %w", id, err)
		}
		out = append(out, Device{ID: id, UUID: d.UUID, PCIBusID: d.PCI.BusID})
	}
	return out, nil
}

func (goDCGM) ProfilingFields(gpu uint) ([]uint16, error) {
	groups, err := godcgm.GetSupportedMetricGroups(gpu)
	if err != nil {
		return nil, err
	}
	var out []uint16
	for _, g := range groups {
		for _, f := range g.FieldIds {
			out = append(out, uint16(f))
		}
	}
	return out, nil
}

// groupName is unique per agent process: a standalone hostengine holds the
// groups of every client by name.
func groupName(what string) string {
	return "gpuwarden-" + what + "-" + strconv.Itoa(os.Getpid())
}

func gpuGroup(what string, gpus []uint) (godcgm.GroupHandle, error) {
	g, err := godcgm.CreateGroup(groupName(what))
	if err != nil {
		return g, err
	}
	for _, id := range gpus {
		if err := godcgm.AddToGroup(g, id); err != nil {
			godcgm.DestroyGroup(g)
			return g, fmt.Errorf("DCGM GPU %d: %w", id, err)
		}
	}
	return g, nil
}

func (goDCGM) WatchProfiling(gpus []uint, fields []uint16, every time.Duration) (Watch, error) {
	if len(gpus) == 0 || len(fields) == 0 {
		return nil, errors.New("nothing to watch")
	}
	g, err := gpuGroup("prof", gpus)
	if err != nil {
		return nil, err
	}
	ids := make([]godcgm.Short, len(fields))
	for i, f := range fields {
		ids[i] = godcgm.Short(f)
	}
	fg, err := godcgm.FieldGroupCreate(groupName("prof-fields"), ids)
	if err != nil {
		godcgm.DestroyGroup(g)
		return nil, err
	}
	// Keep a few intervals of samples: the newest is all that is read.
	keep := max(3*every, time.Minute).Seconds()
	if err := godcgm.WatchFieldsWithGroupEx(fg, g, every.Microseconds(), keep, 0); err != nil {
		godcgm.FieldGroupDestroy(fg)
		godcgm.DestroyGroup(g)
		return nil, err
	}
	return &goWatch{group: g, fields: fg, ids: ids}, nil
}

type goWatch struct {
	group  godcgm.GroupHandle
	fields godcgm.FieldHandle
	ids    []godcgm.Short
}

func (w *goWatch) Latest(gpu uint) ([]Value, error) {
	vals, err := godcgm.EntityGetLatestValues(godcgm.FE_GPU, gpu, w.ids)
	if err != nil {
		return nil, err
	}
	out := make([]Value, 0, len(vals))
	for _, v := range vals {
		out = append(out, convert(v))
	}
	return out, nil
}

// convert reads a field value, blank where DCGM has none: a non-zero
// status, or one of DCGM's blank sentinels (at or above *_BLANK).
func convert(v godcgm.FieldValue_v1) Value {
	out := Value{Field: uint16(v.FieldID), Blank: true}
	if v.Status != 0 {
		return out
	}
	switch v.FieldType {
	case godcgm.DCGM_FT_DOUBLE:
		f := v.Float64()
		if math.IsNaN(f) || f >= godcgm.DCGM_FT_FP64_BLANK {
			return out
		}
		out.Value, out.Blank = f, false
	case godcgm.DCGM_FT_INT64:
		i := v.Int64()
		if i >= godcgm.DCGM_FT_INT64_BLANK {
			return out
		}
		out.Value, out.Blank = float64(i), false
	}
	return out
}

// Close destroys the field group and the GPU group, which ends their
// watches: DCGM stops sampling the profiling counters for this agent.
func (w *goWatch) Close() error {
	return errors.Join(godcgm.FieldGroupDestroy(w.fields), godcgm.DestroyGroup(w.group))
}

// healthSystems are the watches turned on: every GPU system DCGM checks.
// PMU, MCU and SM have no GPU checks in DCGM; NVSwitch ones need switches.
const healthSystems = godcgm.DCGM_HEALTH_WATCH_PCIE | godcgm.DCGM_HEALTH_WATCH_NVLINK |
	godcgm.DCGM_HEALTH_WATCH_MEM | godcgm.DCGM_HEALTH_WATCH_INFOROM | godcgm.DCGM_HEALTH_WATCH_THERMAL |
	godcgm.DCGM_HEALTH_WATCH_POWER | godcgm.DCGM_HEALTH_WATCH_DRIVER

func (goDCGM) WatchHealth(gpus []uint) (HealthWatch, error) {
	g, err := gpuGroup("health", gpus)
	if err != nil {
		return nil, err
	}
	if err := godcgm.HealthSet(g, healthSystems); err != nil {
		godcgm.DestroyGroup(g)
		return nil, err
	}
	return goHealth{g}, nil
}

type goHealth struct{ group godcgm.GroupHandle }

func (h goHealth) Check() ([]Incident, error) {
	r, err := godcgm.HealthCheck(h.group)
	if err != nil {
		return nil, err
	}
	var out []Incident
	for _, in := range r.Incidents {
		if in.Health == godcgm.DCGM_HEALTH_RESULT_PASS || in.EntityInfo.EntityGroupId != godcgm.FE_GPU {
			continue
		}
		out = append(out, Incident{GPU: in.EntityInfo.EntityId, System: systemName(in.System),
			Fail: in.Health == godcgm.DCGM_HEALTH_RESULT_FAIL, Code: uint(in.Error.Code), Message: in.Error.Message})
	}
	return out, nil
}

func (h goHealth) Close() error { return godcgm.DestroyGroup(h.group) }

func systemName(s godcgm.HealthSystem) string {
	switch s {
	case godcgm.DCGM_HEALTH_WATCH_PCIE:
		return "PCIE"
	case godcgm.DCGM_HEALTH_WATCH_NVLINK:
		return "NVLINK"
	case godcgm.DCGM_HEALTH_WATCH_PMU:
		return "PMU"
	case godcgm.DCGM_HEALTH_WATCH_MCU:
		return "MCU"
	case godcgm.DCGM_HEALTH_WATCH_MEM:
		return "MEM"
	case godcgm.DCGM_HEALTH_WATCH_SM:
		return "SM"
	case godcgm.DCGM_HEALTH_WATCH_INFOROM:
		return "INFOROM"
	case godcgm.DCGM_HEALTH_WATCH_THERMAL:
		return "THERMAL"
	case godcgm.DCGM_HEALTH_WATCH_POWER:
		return "POWER"
	case godcgm.DCGM_HEALTH_WATCH_DRIVER:
		return "DRIVER"
	}
	return "system 0x" + strconv.FormatUint(uint64(s), 16)
}

// policyConditions are the policies listened for: those that fire on a
// counter that rose. The thermal, power and retired-page policies need
// thresholds (go-dcgm sets 100 C, 250 W and 10 pages, wrong for most GPUs),
// and the GPU sampler already exports what they watch.
var policyConditions = []godcgm.PolicyCondition{godcgm.DbePolicy, godcgm.PCIePolicy, godcgm.NvlinkPolicy, godcgm.XidPolicy}

// Policies listens on the group of every GPU (go-dcgm's policy API takes
// no GPU list, and its violations carry no GPU id). go-dcgm sets the
// policy before it registers for it: on a standalone hostengine that is the
// hostengine's policy for every GPU, which other clients see too.
func (goDCGM) Policies(ctx context.Context, _ []uint) (<-chan Violation, error) {
	in, err := godcgm.ListenForPolicyViolations(ctx, policyConditions...)
	if err != nil {
		return nil, err
	}
	out := make(chan Violation, 16)
	go func() {
		defer close(out)
		// Read until go-dcgm closes in: a goroutine of its blocked on a
		// send would never see ctx end, nor unregister the policy.
		for pv := range in {
			v := Violation{Condition: string(pv.Condition), Time: pv.Timestamp, Fields: map[string]string{}}
			switch d := pv.Data.(type) {
			case godcgm.XidPolicyCondition:
				v.Xid = int(d.ErrNum)
			case godcgm.DbePolicyCondition:
				v.Fields["location"], v.Fields["errors"] = d.Location, strconv.FormatUint(uint64(d.NumErrors), 10)
			case godcgm.PciPolicyCondition:
				v.Fields["replay_counter"] = strconv.FormatUint(uint64(d.ReplayCounter), 10)
			case godcgm.NvlinkPolicyCondition:
				v.Fields["field_id"], v.Fields["counter"] = strconv.Itoa(int(d.FieldId)), strconv.FormatUint(uint64(d.Counter), 10)
			}
			select {
			case out <- v:
			case <-ctx.Done(): // dropped: the source is stopping
			}
		}
	}()
	return out, nil
}
