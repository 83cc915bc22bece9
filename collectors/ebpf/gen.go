package ebpf

// The programs in bpf/ compiled for both byte orders, with their Go
// bindings. The objects are committed, so a plain `go build` needs no clang;
// `make generate` rebuilds them (Debian: clang, llvm, libbpf-dev).
//go:generate go tool bpf2go -tags linux -cc clang -cflags "-O2 -g -Wall" -type gw_record gpuwarden bpf/gpuwarden.bpf.c -- -I./bpf
