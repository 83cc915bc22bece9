// Command binsize says what a Go binary's size is made of: the bytes of its
// symbols in the file (code, read-only data, data; not bss, which takes no
// room in the file), summed by module and by package, and the sections the
// symbols do not cover (the pc-value tables, type data). The binary must
// keep its symbol table: build it without -ldflags -s.
//
//	go build -trimpath -o /tmp/gpuwarden-syms ./cmd/gpuwarden
//	go run ./internal/binsize /tmp/gpuwarden-syms
//
// (make binary-size does both.)
package main

import (
	"cmp"
	"debug/buildinfo"
	"debug/elf"
	"flag"
	"fmt"
	"os"
	"slices"
	"strings"
)

func main() {
	top := flag.Int("top", 40, "packages to list")
	flag.Parse()
	if flag.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "usage: binsize [-top N] BINARY")
		os.Exit(2)
	}
	if err := run(flag.Arg(0), *top); err != nil {
		fmt.Fprintln(os.Stderr, "binsize:", err)
		os.Exit(1)
	}
}

func run(path string, top int) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	f, err := elf.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	syms, err := f.Symbols()
	if err != nil {
		return fmt.Errorf("%s: %w (built with -ldflags -s?)", path, err)
	}
	var modules []string
	if bi, err := buildinfo.ReadFile(path); err == nil {
		modules = append(modules, bi.Main.Path)
		for _, d := range bi.Deps {
			modules = append(modules, d.Path)
		}
	}
	// The longest module path first, so a package goes to its own module,
	// not to one whose path is a prefix of it.
	slices.SortFunc(modules, func(a, b string) int { return cmp.Compare(len(b), len(a)) })

	byPkg, byMod, bySec := map[string]uint64{}, map[string]uint64{}, map[string]uint64{}
	var inSyms uint64
	for _, s := range syms {
		if int(s.Section) <= 0 || int(s.Section) >= len(f.Sections) {
			continue
		}
		sec := f.Sections[s.Section]
		if sec.Type == elf.SHT_NOBITS || sec.Flags&elf.SHF_ALLOC == 0 {
			continue // bss, or not loaded
		}
		p := pkg(s.Name)
		byPkg[p] += s.Size
		byMod[module(p, modules)] += s.Size
		bySec[sec.Name] += s.Size
		inSyms += s.Size
	}
	fmt.Printf("%s: %d bytes; symbols account for %d of them\n\n", path, st.Size(), inSyms)
	fmt.Println("section          size    in symbols")
	for _, sec := range f.Sections {
		if sec.Type == elf.SHT_NOBITS || sec.Flags&elf.SHF_ALLOC == 0 || sec.Size < 4096 {
			continue
		}
		fmt.Printf("%-14s %9d %9d\n", sec.Name, sec.Size, bySec[sec.Name])
	}
	fmt.Println("\nby module (bytes of symbols)")
	list(byMod, len(byMod))
	fmt.Printf("\nby package, the largest %d\n", top)
	list(byPkg, top)
	return nil
}

func list(m map[string]uint64, n int) {
	type row struct {
		name string
		size uint64
	}
	var rows []row
	for k, v := range m {
		rows = append(rows, row{k, v})
	}
	slices.SortFunc(rows, func(a, b row) int {
		return cmp.Or(cmp.Compare(b.size, a.size), cmp.Compare(a.name, b.name))
	})
	for i, r := range rows {
		if i == n {
			break
		}
		fmt.Printf("%10d  %s\n", r.size, r.name)
	}
}

// pkg is the package a symbol belongs to: "net/http" for
// "net/http.(*conn).serve", "type:*net/http.conn" and the like; symbols of
// no package (go:func.*, runtime tables) are named by their prefix, and
// types with no name are "(unnamed types)".
func pkg(name string) string {
	for _, p := range []string{"type:", "go:itab.", "go:info.", ".eq.", ".hash.", ".gcmask."} {
		name = strings.TrimPrefix(name, p)
	}
	name = strings.TrimLeft(name, "*")
	for _, p := range []string{"struct {", "interface {", "func(", "map[", "[", "chan ", "go.shape."} {
		if strings.HasPrefix(name, p) {
			return "(unnamed types)"
		}
	}
	// An itab, "T,I": the type's.
	if i := strings.Index(name, ","); i >= 0 && !strings.ContainsAny(name[:i], "([") {
		name = name[:i]
	}
	head := name
	if i := strings.IndexAny(head, "(["); i >= 0 {
		head = head[:i]
	}
	slash := strings.LastIndex(head, "/")
	if dot := strings.Index(name[slash+1:], "."); dot >= 0 {
		return name[:slash+1+dot]
	}
	return name
}

// module is the module of package p, "std" for the standard library's.
func module(p string, modules []string) string {
	for _, m := range modules {
		if p == m || strings.HasPrefix(p, m+"/") {
			return m
		}
	}
	if first, _, _ := strings.Cut(p, "/"); !strings.Contains(first, ".") || first == "vendor" {
		return "std"
	}
	return p
}
