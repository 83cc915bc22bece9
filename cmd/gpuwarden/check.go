package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/gpuwarden/gpuwarden/collectors/event"
	"github.com/gpuwarden/gpuwarden/collectors/kmsg/explain"
	"github.com/gpuwarden/gpuwarden/collectors/replay"
	"github.com/gpuwarden/gpuwarden/dkms"
)

// checkGPUName is the check reported when the GPU checks cannot run.
const checkGPUName = "gpu_visible"

type checkOptions struct {
	paths   dkms.Paths
	output  string
	gpu     bool
	modules []string
	timeout time.Duration
	// GPU checks: expected count, and a trace to stand in for NVML.
	expected int
	backend  string
	replay   string
	colour   string
	colours  explain.Colours
	// rootSet: --path.rootfs was given, so a replay's checks read that
	// tree rather than the trace's recorded host facts.
	rootSet bool
}

func newCheckCmd() *cobra.Command {
	o := checkOptions{paths: dkms.DefaultPaths()}
	cmd := &cobra.Command{
		Use:   "check",
		Short: "Run every kernel, driver and DKMS check once and exit with a Nagios code",
		Long: `Run every consistency check once, without the agent: the NVIDIA module
for the kernel the next boot starts, DKMS builds, kernel headers, the loaded
driver against the userspace library, a pending reboot, Secure Boot
signatures, and, where NVML is wired in, the GPU checks.

Exit codes (Nagios): 0 all good, 1 warning, 2 critical, 3 could not tell.
The output is printed before exiting, so an Ansible task or a person sees why.

With --backend replay the kernel, driver and DKMS facts are the trace's own,
those of the host it was recorded on (unless --path.rootfs names a tree).

On a fixture tree: gpuwarden check --path.rootfs testdata/rootfs/healthy
--path.procfs proc --path.sysfs sys (relative procfs/sysfs are taken under
the rootfs).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			paint, err := colours(o.colour, cmd.OutOrStdout())
			if err != nil {
				return err
			}
			o.colours = paint
			o.rootSet = cmd.Flags().Changed("path.rootfs")
			return runCheck(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	// A usage error is "could not tell" (3, UNKNOWN), never 1, which NRPE
	// and Ansible read as a warning about the node.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return unknown(err)
	})
	cmd.Args = func(c *cobra.Command, args []string) error {
		if err := cobra.NoArgs(c, args); err != nil {
			return unknown(err)
		}
		return nil
	}
	f := cmd.Flags()
	f.StringVar(&o.paths.RootFS, "path.rootfs", o.paths.RootFS, "root of the host's file system")
	f.StringVar(&o.paths.ProcFS, "path.procfs", o.paths.ProcFS, "procfs mount point (relative: under --path.rootfs)")
	f.StringVar(&o.paths.SysFS, "path.sysfs", o.paths.SysFS, "sysfs mount point (relative: under --path.rootfs)")
	f.StringVarP(&o.output, "output", "o", "table", "output format: table or json")
	f.BoolVar(&o.gpu, "gpu", false, "require the GPU checks: report unknown (exit 3) when they cannot run")
	f.StringSliceVar(&o.modules, "collector.dkms.modules", nil, "DKMS module names that carry the NVIDIA driver (default: every module named nvidia*)")
	f.DurationVar(&o.timeout, "timeout", 30*time.Second, "deadline for the whole check, NVML included")
	f.IntVar(&o.expected, "gpu.expected", 0, "GPUs this host must have; fewer visible is critical (0: any number but none)")
	f.StringVar(&o.backend, "backend", "nvml", "where the GPU checks read GPUs from: nvml, or replay (a trace standing in for the driver)")
	f.StringVar(&o.replay, "replay", "", "trace for --backend replay (default: the embedded demo)")
	addColourFlag(cmd, &o.colour)
	return cmd
}

// checkOutput is the --output json document.
type checkOutput struct {
	Level    event.Level    `json:"level"`
	ExitCode int            `json:"exit_code"`
	Health   dkms.Health    `json:"health"`
	Checks   []dkms.Finding `json:"checks"`
	Facts    dkms.Facts     `json:"facts"`
	Time     time.Time      `json:"time"`
}

func runCheck(ctx context.Context, w io.Writer, o checkOptions) error {
	if o.output != "table" && o.output != "json" {
		return unknown(fmt.Errorf("--output %q: want table or json", o.output))
	}
	if fi, err := os.Stat(o.paths.RootFS); err != nil || !fi.IsDir() {
		return unknown(fmt.Errorf("--path.rootfs %s: not a directory (%v)", o.paths.RootFS, err))
	}
	if ctx == nil {
		ctx = context.Background()
	}
	ctx, cancel := context.WithTimeout(ctx, o.timeout)
	defer cancel()

	cfg := dkms.Config{Paths: o.paths, Modules: o.modules}
	switch {
	case filepath.Clean(o.paths.RootFS) == "/" || o.backend == "replay":
		// NVML describes this host, not a fixture tree: ask it only when
		// the root is the real one (or a trace stands in for it).
		probe := &gpuProbe{expected: o.expected}
		if o.backend == "replay" {
			tr, err := openReplay(o.replay)
			if err != nil {
				return unknown(err)
			}
			lib, player, _ := backendLibrary("replay", tr, replay.PlayerOptions{}, newLogger(nopWriter{}, "error", "logfmt"))
			defer player.Close()
			probe.lib = lib
			if tr.HasHost() && !o.rootSet {
				// The trace's node, not this host: its recorded facts.
				cfg.Recorded = player.HostFacts
			}
		} else {
			probe.lib = liveNVML()
		}
		cfg.NVML = probe.nvmlVersion
		cfg.Extra = append(cfg.Extra, probe.gpuChecks(o.gpu))
	default:
		cfg.NVMLNotAsked = notThisRoot(o.paths.RootFS)
		cfg.Extra = append(cfg.Extra, gpuNotAsked(o.paths.RootFS, o.gpu))
	}
	r := dkms.NewChecker(cfg).Check(ctx)

	var err error
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(checkOutput{Level: r.Level, ExitCode: r.Level.ExitCode(), Health: r.Health(), Checks: r.Checks, Facts: r.Facts, Time: r.Time})
	} else {
		err = writeCheckTable(w, &r, o.colours)
	}
	if err != nil {
		return unknown(fmt.Errorf("writing the check output: %w", err))
	}
	if code := r.Level.ExitCode(); code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// notThisRoot is why NVML is not asked on a --path.rootfs other than /.
func notThisRoot(rootfs string) string {
	return "--path.rootfs is " + rootfs + ", not /, and NVML answers for this host, not for that tree"
}

// gpuNotAsked reports the GPU checks as not run on a fixture tree; with
// --gpu that is Unknown, since the caller asked for them.
func gpuNotAsked(rootfs string, required bool) dkms.ExtraCheck {
	return func(context.Context) []dkms.Finding {
		f := dkms.Finding{Check: checkGPUName, NotRun: notThisRoot(rootfs)}
		if required {
			f.Level = event.Unknown
			f.Summary = "could not run: " + f.NotRun
		} else {
			f.Summary = "not run: " + f.NotRun + " (--gpu makes this an error)"
		}
		return []dkms.Finding{f}
	}
}

func writeCheckTable(out io.Writer, r *dkms.Report, paint explain.Colours) error {
	// File names, versions and evidence come from the host's files: the
	// text is escaped as a whole (explain.Terminal) before the levels are
	// painted, so the only escape sequences that reach the terminal are
	// ours.
	f := &r.Facts
	var b strings.Builder
	fmt.Fprintf(&b, "gpuwarden check: %s\n", strings.ToUpper(r.Level.String()))
	fmt.Fprintf(&b, "kernel: running %s; %s\n", orUnknown(f.RunningKernel), nextBootLine(f.NextBoot))
	fmt.Fprintf(&b, "driver: %s; %s; Secure Boot %s\n", loadedLine(f.Loaded), libraryLine(f.Library), f.SecureBoot)
	for _, p := range f.Problems {
		fmt.Fprintf(&b, "could not read: %s\n", p)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tSUMMARY")
	for _, c := range r.Checks {
		// Evidence quotes make.log lines and file contents: escaped
		// cell by cell, a tab or newline in them cannot break the table.
		fmt.Fprintf(tw, "%s\t%s\t%s\n", c.Status(), c.Check, explain.Printable(c.Summary))
		if c.Level == event.OK {
			continue
		}
		for _, e := range c.Evidence {
			fmt.Fprintf(tw, "\t\t  evidence: %s\n", explain.Printable(e))
		}
		if c.Fix != "" {
			fmt.Fprintf(tw, "\t\t  fix: %s\n", explain.Printable(c.Fix))
		}
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	var safe strings.Builder
	if _, err := io.WriteString(explain.Terminal(&safe), b.String()); err != nil {
		return err
	}
	_, err := io.WriteString(out, paintCheckTable(safe.String(), r, paint))
	return err
}

// paintCheckTable colours the verdict in the first line and the STATUS word
// that starts each check's row (rows are in r.Checks' order; evidence and
// fix lines start with blanks and are left alone).
func paintCheckTable(text string, r *dkms.Report, paint explain.Colours) string {
	if !paint {
		return text
	}
	lines := strings.SplitAfter(text, "\n")
	verdict := strings.ToUpper(r.Level.String())
	lines[0] = strings.Replace(lines[0], verdict, paint.Level(r.Level, verdict), 1)
	row := -1
	for i, l := range lines {
		if row < 0 {
			if strings.HasPrefix(l, "STATUS") {
				row = 0
			}
			continue
		}
		if row >= len(r.Checks) || !strings.HasPrefix(l, r.Checks[row].Status()) {
			continue
		}
		c := r.Checks[row]
		word := c.Status()
		painted := paint.Level(c.Level, word)
		if c.Skipped() {
			painted = paint.Skipped(word)
		}
		lines[i] = painted + l[len(word):]
		row++
	}
	return strings.Join(lines, "")
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func nextBootLine(nb dkms.NextBoot) string {
	if nb.Kernel == "" {
		return "next boot kernel unknown (no boot loader entry or /boot/vmlinuz link read)"
	}
	if nb.Source == "" {
		return "next boot " + nb.Kernel
	}
	return "next boot " + nb.Kernel + " (from " + nb.Source + ")"
}

func loadedLine(l *dkms.LoadedDriver) string {
	if l == nil {
		return "no NVIDIA module loaded"
	}
	s := "module " + orUnknown(l.Version) + " loaded"
	if l.Flavor != "" {
		s += " (" + l.Flavor + ")"
	}
	return s
}

func libraryLine(l *dkms.Library) string {
	if l == nil {
		return "no userspace library (libnvidia-ml) found"
	}
	return "userspace library " + orUnknown(l.Version)
}
