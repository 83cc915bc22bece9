package replay

import "strconv"

// The keys under which a trace stores NVML answers are the call and its
// arguments, so a trace reads like the calls that produced it. The table
// methods' keys are written into player_gen.go and recorder_gen.go from one
// row each; these are the keys of the hand-written ones, which the recorder
// and the player both use, so they cannot drift apart.

func keyFieldValue(id, scope uint32) string {
	return "FieldValue(" + strconv.FormatUint(uint64(id), 10) + "/" + strconv.FormatUint(uint64(scope), 10) + ")"
}

// JSON shapes of the answers that are not a single number, named by the
// table rows in internal/nvmlcalls.
type utilJSON struct {
	GPU    uint32 `json:"gpu"`
	Memory uint32 `json:"memory"`
}

type memoryJSON struct {
	Total    uint64 `json:"total"`
	Reserved uint64 `json:"reserved"`
	Free     uint64 `json:"free"`
	Used     uint64 `json:"used"`
}

// remappedJSON is [correctable, uncorrectable, pending, failed].
type remappedJSON struct {
	Correctable   int  `json:"correctable"`
	Uncorrectable int  `json:"uncorrectable"`
	Pending       bool `json:"pending"`
	Failed        bool `json:"failed"`
}

type codecJSON struct {
	Util     uint32 `json:"util"`
	PeriodUs uint32 `json:"period_us"`
}

type violationJSON struct {
	Reference uint64 `json:"reference"`
	Violation uint64 `json:"violation"`
}

type gpmSupportJSON struct {
	Supported uint32 `json:"supported"`
}

type migModeJSON struct {
	Current int `json:"current"`
	Pending int `json:"pending"`
}
