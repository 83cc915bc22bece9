package dkms

import (
	"context"
	"errors"
)

// errNoRecordedFacts is why every area is unreadable while a trace has not
// said anything about its host.
var errNoRecordedFacts = errors.New("the replayed trace holds no host facts (yet)")

// recordedFacts are the facts Config.Recorded gives, completed as a pass on
// the host itself would complete them: NVML asked now, and the pending
// reboot judged from the recorded kernels and driver.
func (c *Checker) recordedFacts(ctx context.Context) Facts {
	f, ok := c.cfg.Recorded()
	if !ok {
		f = Facts{Kernels: []Kernel{}, Family: "unknown", SecureBoot: SecureBootUnknown}
		for _, area := range []string{AreaRunningKernel, AreaKernels, AreaDKMS} {
			f.unreadable(area, errNoRecordedFacts)
		}
	}
	if f.Kernels == nil {
		f.Kernels = []Kernel{}
	}
	f.NVML = NVMLState{}
	c.g.readNVML(ctx, &f)
	f.judgeReboot()
	return f
}
