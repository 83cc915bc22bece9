package dkms

import (
	"bytes"
	"compress/gzip"
	"debug/elf"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/gpuwarden/gpuwarden/collectors/hostfs"
)

// Signature says whether a module file carries an appended signature.
type Signature string

const (
	SignatureSigned   Signature = "signed"
	SignatureUnsigned Signature = "unsigned"
	// SignatureUnknown: the file is xz or zstd compressed (the standard
	// library reads neither, and the signature sits inside the compressed
	// stream), or it could not be read.
	SignatureUnknown Signature = "unknown"
)

// moduleSigMagic ends every module signed by the kernel's sign-file tool.
const moduleSigMagic = "~Module signature appended~\n"

// ModuleFile is one nvidia.ko* found for a kernel.
type ModuleFile struct {
	Path      string    `json:"path"`              // inside the root, e.g. /lib/modules/K/updates/dkms/nvidia.ko
	Origin    string    `json:"origin"`            // dkms, prebuilt, extra, updates, kernel
	Version   string    `json:"version,omitempty"` // the module's modinfo version, when readable
	Signature Signature `json:"signature"`
	Note      string    `json:"note,omitempty"` // why version or signature is unknown
}

// moduleInfo is what a module file says about itself.
type moduleInfo struct {
	version   string
	signature Signature
	note      string
}

// moduleCache remembers what module files said, by path, size and mtime: a
// proprietary nvidia.ko is tens of megabytes and the watcher looks often.
type moduleCache struct {
	mu sync.Mutex
	m  map[string]cachedModule
}

type cachedModule struct {
	size  int64
	mtime time.Time
	info  moduleInfo
}

func (c *moduleCache) inspect(host string) moduleInfo {
	fi, err := os.Stat(host)
	if err != nil {
		return moduleInfo{signature: SignatureUnknown, note: err.Error()}
	}
	c.mu.Lock()
	if e, ok := c.m[host]; ok && e.size == fi.Size() && e.mtime.Equal(fi.ModTime()) {
		c.mu.Unlock()
		return e.info
	}
	c.mu.Unlock()
	info := inspectModule(host)
	c.mu.Lock()
	if c.m == nil {
		c.m = map[string]cachedModule{}
	}
	c.m[host] = cachedModule{size: fi.Size(), mtime: fi.ModTime(), info: info}
	c.mu.Unlock()
	return info
}

// maxRawScan bounds reading a module that is not ELF (fixtures, truncated
// files) into memory in one piece.
const maxRawScan = 1 << 20

func inspectModule(host string) moduleInfo {
	switch {
	case strings.HasSuffix(host, ".xz"), strings.HasSuffix(host, ".zst"):
		return moduleInfo{signature: SignatureUnknown, note: "compressed with xz/zstd: not decompressed, signature and version not read"}
	case strings.HasSuffix(host, ".gz"):
		return inspectGzipModule(host)
	}
	f, err := hostfs.Open(host)
	if err != nil {
		return moduleInfo{signature: SignatureUnknown, note: err.Error()}
	}
	defer f.Close()
	info := moduleInfo{signature: signatureAtEnd(f)}
	if ef, err := elf.NewFile(f); err == nil {
		if sec := ef.Section(".modinfo"); sec != nil {
			if data, err := sec.Data(); err == nil {
				info.version = modinfoVersion(data)
			}
		}
		return info
	}
	// Not ELF: read it whole if small (test fixtures carry "version=..." as text).
	var data []byte
	_, err = f.Seek(0, io.SeekStart)
	if err == nil {
		data, err = io.ReadAll(io.LimitReader(f, maxRawScan))
	}
	if err != nil {
		info.note = err.Error()
		return info
	}
	info.version = modinfoVersion(data)
	return info
}

func inspectGzipModule(host string) moduleInfo {
	f, err := hostfs.Open(host)
	if err != nil {
		return moduleInfo{signature: SignatureUnknown, note: err.Error()}
	}
	defer f.Close()
	zr, err := gzip.NewReader(f)
	if err != nil {
		return moduleInfo{signature: SignatureUnknown, note: fmt.Sprintf("%s: %v", host, err)}
	}
	// The module must be held whole to find both .modinfo and the tail; the
	// kernel refuses modules above a few hundred MB, so bound it there.
	data, err := io.ReadAll(io.LimitReader(zr, 512<<20))
	if err != nil {
		return moduleInfo{signature: SignatureUnknown, note: fmt.Sprintf("%s: %v", host, err)}
	}
	info := moduleInfo{signature: SignatureUnsigned, version: modinfoVersion(data)}
	if bytes.HasSuffix(data, []byte(moduleSigMagic)) {
		info.signature = SignatureSigned
	}
	if ef, err := elf.NewFile(bytes.NewReader(data)); err == nil {
		if sec := ef.Section(".modinfo"); sec != nil {
			if d, err := sec.Data(); err == nil {
				info.version = modinfoVersion(d)
			}
		}
	}
	return info
}

// signatureAtEnd reads the last bytes of the file for the signature magic.
func signatureAtEnd(f *os.File) Signature {
	fi, err := f.Stat()
	if err != nil {
		return SignatureUnknown
	}
	n := int64(len(moduleSigMagic))
	if fi.Size() < n {
		return SignatureUnsigned
	}
	buf := make([]byte, n)
	if _, err := f.ReadAt(buf, fi.Size()-n); err != nil && !errors.Is(err, io.EOF) {
		return SignatureUnknown
	}
	if string(buf) == moduleSigMagic {
		return SignatureSigned
	}
	return SignatureUnsigned
}

// modinfoVersion finds "version=" as a whole NUL-separated entry, as modinfo
// does (so "srcversion=" does not match).
func modinfoVersion(data []byte) string {
	for entry := range bytes.SplitSeq(data, []byte{0}) {
		if v, ok := bytes.CutPrefix(entry, []byte("version=")); ok {
			return strings.TrimSpace(string(v))
		}
	}
	return ""
}
