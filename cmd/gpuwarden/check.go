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

On a fixture tree: gpuwarden check --path.rootfs testdata/rootfs/healthy
--path.procfs proc --path.sysfs sys (relative procfs/sysfs are taken under
the rootfs).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return runCheck(cmd.Context(), cmd.OutOrStdout(), o)
		},
	}
	// A usage error is "could not tell" (3, UNKNOWN), never 1, which NRPE
	// and Ansible read as a warning about the node.
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error {
		return &exitError{code: event.Unknown.ExitCode(), err: err}
	})
	cmd.Args = func(c *cobra.Command, args []string) error {
		if err := cobra.NoArgs(c, args); err != nil {
			return &exitError{code: event.Unknown.ExitCode(), err: err}
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
		return &exitError{code: event.Unknown.ExitCode(), err: fmt.Errorf("--output %q: want table or json", o.output)}
	}
	if fi, err := os.Stat(o.paths.RootFS); err != nil || !fi.IsDir() {
		return &exitError{code: event.Unknown.ExitCode(), err: fmt.Errorf("--path.rootfs %s: not a directory (%v)", o.paths.RootFS, err)}
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
				return &exitError{code: event.Unknown.ExitCode(), err: err}
			}
			lib, player, _ := backendLibrary("replay", tr, replay.PlayerOptions{}, newLogger(nopWriter{}, "error", "logfmt"))
			defer player.Close()
			probe.lib = lib
		} else {
			probe.lib = liveNVML()
		}
		cfg.NVML = probe.nvmlVersion
		cfg.Extra = append(cfg.Extra, probe.gpuChecks(o.gpu))
	default:
		cfg.Extra = append(cfg.Extra, gpuNotWired(o.gpu))
	}
	r := dkms.NewChecker(cfg).Check(ctx)

	var err error
	if o.output == "json" {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		err = enc.Encode(checkOutput{Level: r.Level, ExitCode: r.Level.ExitCode(), Health: r.Health(), Checks: r.Checks, Facts: r.Facts, Time: r.Time})
	} else {
		err = writeCheckTable(w, &r)
	}
	if err != nil {
		return &exitError{code: event.Unknown.ExitCode(), err: fmt.Errorf("writing the check output: %w", err)}
	}
	if code := r.Level.ExitCode(); code != 0 {
		return &exitError{code: code}
	}
	return nil
}

// gpuNotWired reports the GPU checks as not run; with --gpu that is
// Unknown, since the caller asked for them.
func gpuNotWired(required bool) dkms.ExtraCheck {
	return func(context.Context) []dkms.Finding {
		f := dkms.Finding{Check: checkGPUName, NotRun: "NVML is not wired into this build of gpuwarden check"}
		if required {
			f.Level = event.Unknown
			f.Summary = "could not run: " + f.NotRun
		} else {
			f.Summary = "not run: " + f.NotRun + " (--gpu makes this an error)"
		}
		return []dkms.Finding{f}
	}
}

func writeCheckTable(out io.Writer, r *dkms.Report) error {
	// File names, versions and evidence come from the host's files.
	w := explain.Terminal(out)
	f := &r.Facts
	var b strings.Builder
	fmt.Fprintf(&b, "gpuwarden check: %s\n", strings.ToUpper(r.Level.String()))
	fmt.Fprintf(&b, "kernel: running %s, next boot %s (%s)\n", checkOrDash(f.RunningKernel), checkOrDash(f.NextBoot.Kernel), checkOrDash(f.NextBoot.Source))
	loaded, lib := "not loaded", "not found"
	if f.Loaded != nil {
		loaded = f.Loaded.Version + " (" + checkOrDash(f.Loaded.Flavor) + ")"
	}
	if f.Library != nil {
		lib = f.Library.Version
	}
	fmt.Fprintf(&b, "driver: loaded %s, userspace library %s, Secure Boot %s\n", loaded, lib, f.SecureBoot)
	for _, p := range f.Problems {
		fmt.Fprintf(&b, "could not read: %s\n", p)
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "STATUS\tCHECK\tSUMMARY")
	for _, c := range r.Checks {
		status := c.Level.String()
		if c.NotRun != "" && c.Level == event.OK {
			status = "skipped"
		}
		// Evidence quotes make.log lines and file contents: escaped, they cannot
		// drive the reader's terminal.
		fmt.Fprintf(tw, "%s\t%s\t%s\n", status, c.Check, explain.Printable(c.Summary))
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
	_, err := io.WriteString(w, b.String())
	return err
}

func checkOrDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
