package replay

import "github.com/gpuwarden/gpuwarden/collectors/gpu"

// The device methods answered by key are generated from the table in
// internal/nvmlcalls (see "Adding an NVML method" in the package doc).
//go:generate go run ./internal/gennvml

var (
	_ gpu.Device  = (*playerDevice)(nil)
	_ gpu.Device  = (*recDevice)(nil)
	_ gpu.Library = playerLibrary{}
	_ gpu.Library = recLibrary{}
)
