// Package kmsg reads the kernel log and turns NVIDIA-related lines into
// events.
//
// It has three parts, each usable alone:
//
//   - Reader: the one reader of /dev/kmsg in the process. It reads and parses
//     records inline, hands them over in batches on a bounded channel (a full
//     channel drops the batch and counts it; the reader never waits for its
//     consumer), counts records lost to ring-buffer overruns from SEQ gaps,
//     and persists the last SEQ with the boot id so a restart neither loses
//     nor repeats records.
//   - ParseRecord: the /dev/kmsg record format "PRI,SEQ,TS_USEC,FLAGS;TEXT"
//     with its dictionary lines (" SUBSYSTEM=pci", " DEVICE=+pci:...") and
//     "\xNN" escapes.
//   - Classify and ClassifyLine: one kernel message (or one line of dmesg,
//     kern.log, journalctl output) to a Class: its kind and the fields an
//     operator needs (PCI bus id, Xid, pid, process name, NVSwitch link ...).
//
// # Classification policy
//
// Each line is classified on its own, the way it reads without context. The
// kinds are event.Kind values: xid, sxid, gpu_identity, fallen_off_bus,
// rminit_failed, api_mismatch, driver_loaded, aer, mce, other_nvrm and
// unrelated. Decisions an operator would want written down:
//
//   - A line is NVIDIA's when it starts (after its log wrapper and leading
//     blanks) with "NVRM" or with the name of an NVIDIA kernel module
//     followed by ':' or ' ': nvidia, nvidia-uvm, nvidia-modeset, nvidia-drm,
//     nvidia-nvlink, nvidia-nvswitchN, nvidia-peermem, nvidia-vgpu-vfio,
//     nvidia_fs (either '-' or '_'), or it is a DRM line naming nvidia-drm.
//     Everything else that merely mentions NVIDIA is unrelated: the HDMI audio
//     function ("HDA NVidia"), the in-kernel nvidia-gpu i2c/UCSI driver,
//     stack frames ending in "[nvidia]", user-space daemons that log through
//     syslog (nv-fabricmanager, nvidia-persistenced, nvidia-powerd), command
//     lines, audit records.
//   - Syslog and journal lines whose tag is not "kernel" are user space and
//     always unrelated, whatever they say.
//   - The Xid number is the one right after "): " and never a number from the
//     free text; pid and process name only come from the driver's own
//     "pid=N, name=X," prefix; '<unknown>' gives none.
//   - Bus ids are lower case DDDD:BB:DD.F. Xid and "GPU at PCI:" lines print
//     no function, so ".0" is added; the pre-2010 "Xid (0009:00)" form has
//     no usable address and gets none. Other NVIDIA lines get the first
//     full PCI address in the text.
//   - fallen_off_bus is any NVIDIA line that says "fallen off the bus" and is
//     not itself an Xid line, in every driver's wording: "GPU at 0000:..
//     has fallen off the bus", "GPU 0000:..: GPU has fallen off the bus.",
//     and the 570+ three-line "The NVIDIA GPU 0000:.. / (PCI ID: ..)
//     installed in this system has / fallen off the bus and is not
//     responding to commands." As one /dev/kmsg record that message is one
//     fallen_off_bus event with its bus id. Read line by line, its first line
//     cannot be told apart from the start of the "not supported" message, so
//     it stays other_nvrm with its bus id, and the line saying "fallen off
//     the bus" is fallen_off_bus; explain joins them back.
//   - Continuation lines of other multi-line messages (API mismatch, not
//     supported, 64-bit BAR) are other_nvrm; only the first line of the API
//     mismatch is api_mismatch. "message repeated N times: [ NVRM: ...]"
//     from rsyslog is other_nvrm: it repeats a line already counted.
//   - aer is a PCIe Advanced Error Reporting line from any device (pcieport,
//     nvidia, a NIC): "AER:", "PCIe Bus Error:", the "device [vvvv:dddd]
//     error status/mask=" and "[ n] ErrorName" detail lines, TLP headers, and
//     DPC containment lines (a port containing an uncorrected error is what
//     often precedes a GPU falling off the bus). Its bus id is the device
//     after "received:"/"received from" when printed, else the reporting
//     device. "_OSC ... [AER]" capability lines are unrelated.
//   - mce is the kernel's machine-check decoder: "mce: [Hardware Error]:",
//     the bare "[Hardware Error]:" lines of the AMD decoder and "mce:
//     Uncorrected hardware memory error". APEI GHES "{1}[Hardware Error]"
//     records, EDAC lines and "mce: CPU supports N MCE banks" are unrelated.
//   - Records written to /dev/kmsg from user space (facility other than
//     kernel) are classified like any other; Record.FromKernel lets a caller
//     distrust them.
//
// The classifier is built for the common case: most kernel lines are none of
// the above and are rejected by looking at their first bytes, without
// regular expressions and without allocating.
package kmsg
