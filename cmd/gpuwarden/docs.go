//go:build gendocs

// The man pages and completions are generated at packaging time by a build
// of this same command tree with the gendocs tag (`make package` does
// `go run -tags gendocs ./cmd/gpuwarden gen-docs`), so the shipped agent does
// not link cobra/doc and its markdown and roff renderers. gen-docs is hidden
// and so absent from what it writes: the pages match the shipped binary.

package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

func init() { extraCommands = append(extraCommands, newDocsCmd) }

// newDocsCmd writes man pages and shell completions from the command tree, so
// what the packages ship can never drift from the flags the binary has. It is
// hidden: users want the results, not the generator.
func newDocsCmd() *cobra.Command {
	var out string
	cmd := &cobra.Command{
		Use:    "gen-docs",
		Short:  "Write man pages and bash/zsh/fish completions",
		Hidden: true,
		Args:   cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return writeDocs(cmd.Root(), out)
		},
	}
	cmd.Flags().StringVar(&out, "out", "dist/docs", "directory to write man/ and completions/ into")
	return cmd
}

// writeDocs writes DIR/man/gpuwarden*.1 and DIR/completions/{gpuwarden.bash,
// _gpuwarden,gpuwarden.fish}. Dates come from SOURCE_DATE_EPOCH when set, so
// two builds of one commit give byte-identical packages.
func writeDocs(root *cobra.Command, dir string) error {
	// Cobra adds its completion and help commands lazily, on Execute; add them
	// now so a direct call documents the same tree a user sees.
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()

	man := filepath.Join(dir, "man")
	comp := filepath.Join(dir, "completions")
	for _, d := range []string{man, comp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	root.DisableAutoGenTag = true
	header := &doc.GenManHeader{Section: "1", Source: "gpuwarden", Manual: "gpuwarden manual"}
	if err := doc.GenManTree(root, header, man); err != nil {
		return fmt.Errorf("man pages in %s: %w", man, err)
	}
	shells := []struct {
		file string
		gen  func(f *os.File) error
	}{
		{"gpuwarden.bash", func(f *os.File) error { return root.GenBashCompletionV2(f, true) }},
		{"_gpuwarden", func(f *os.File) error { return root.GenZshCompletion(f) }},
		{"gpuwarden.fish", func(f *os.File) error { return root.GenFishCompletion(f, true) }},
	}
	for _, s := range shells {
		path := filepath.Join(comp, s.file)
		f, err := os.Create(path)
		if err != nil {
			return err
		}
		err = s.gen(f)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("completion %s: %w", path, err)
		}
	}
	return nil
}
