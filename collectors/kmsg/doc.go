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
//     nor repeats records. A cursor that cannot be right (past the newest
//     record of this boot) is moved aside and reported, and the ring is read
//     again from its start. On a file or pipe only whole lines become
//     records, and an over-long line is kept only up to a bound.
//   - ParseRecord: the /dev/kmsg record format "PRI,SEQ,TS_USEC,FLAGS;TEXT"
//     with its dictionary lines (" SUBSYSTEM=pci", " DEVICE=+pci:...") and
//     "\xNN" escapes. A message longer than MaxMessageBytes is truncated,
//     ending in TruncatedMarker, on every path (device, file, pipe, trace).
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
//     no usable address and gets none. An event's bus id is only ever the
//     address where the driver's grammar puts it (see Trust below); only
//     other_nvrm lines get the first full PCI address in the text.
//   - fallen_off_bus is one of the driver's exact sentences: "GPU at
//     DDDD:BB:DD.F has fallen off the bus." (3xx), "GPU DDDD:BB:DD.F: GPU
//     has fallen off the bus." (4xx-5xx), and the 570+ three-line "The
//     NVIDIA GPU DDDD:BB:DD.F / (PCI ID: 10de:XXXX) installed in this system
//     has / fallen off the bus and is not responding to commands." (also in
//     its one-line rendering). As one /dev/kmsg record that message is one
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
// # Trust
//
// The kernel log is not only written by the kernel and the NVIDIA driver.
// Any local user can put text into it without privilege: the kernel's
// reports about a user-space task begin with the task's name (comm, up to
// 15 bytes of anything, set with prctl(PR_SET_NAME)) and often go on with
// the name of its executable, which is any file name the user likes. A
// program named "NVRM: " run from a file named "GPU 0000:e7:00.0 has fallen
// off the bus" that segfaults makes the kernel itself (facility kernel, no
// way to tell by the record) print
//
//	NVRM: [8098]: segfault at 0 ip ... error 6 in GPU 0000:e7:00.0 has fallen off the bus[1180,...] likely on CPU 1 (core 1, socket 0)
//
// So the classifier trusts position, never words:
//
//   - Each event kind is a grammar anchored at the start of the message,
//     read part by part where the driver prints each part, never by
//     searching for a phrase or an address anywhere in the text. An Xid is
//     "NVRM: Xid (" + exactly an address ("PCI:DDDD:BB:DD" with optional
//     ".F" and " GPU-I:NN", the older "DDDD:BB:DD", the pre-2010
//     "DDDD:BB") + "): " + the decimal code + end of line or ','; an SXid
//     is "nvidia-nvswitchN: SXid (" the same way; fallen_off_bus is one of
//     the sentences above; rminit_failed is "NVRM: GPU DDDD:BB:DD.F:
//     RmInitAdapter failed! (codes)", "NVRM: GPU DDDD:BB:DD.F:
//     rm_init_adapter failed, device minor number N", "NVRM: RmInitAdapter
//     failed! (codes)", "NVRM: rm_init_adapter(N) failed" or "NVRM: The
//     NVIDIA probe routine failed for N device(s)."; gpu_identity is "NVRM:
//     GPU at PCI:DDDD:BB:DD: GPU-<uuid>"; aer is a dev_printk line whose
//     driver name is a plain word.
//   - A message that begins with a task name is refused, whatever follows:
//     a "[pid]" after at most 15 bytes followed by ": " or " " ("comm[pid]:
//     segfault at", "comm[pid]: bad frame", "comm[pid] general protection
//     fault", "comm[pid] trap"), the "traps: " prefix, or " (pid): " after
//     at most 15 bytes ("comm (pid): drop_caches: 3" and other notices).
//     No driver line has that shape.
//   - A refused line is unrelated and says why in Class.Rejected, which the
//     agent counts in gpuwarden_kmsg_rejected_records_total{reason}. The
//     reasons are fixed: RejectProcessName ("process_name_prefix") for a
//     line beginning with a task name that would otherwise have been an
//     event or other_nvrm, or that says what NVIDIA lines say ("NVRM",
//     "Xid", "fallen off the bus", "RmInit", "rm_init_adapter");
//     RejectMalformed ("malformed") for a line that starts like an NVIDIA
//     event ("NVRM: Xid (", "nvidia-nvswitchN: SXid (", "NVRM: GPU ...") or
//     says what one says ("fallen off the bus", "RmInitAdapter failed",
//     "rm_init_adapter", "probe routine failed") but does not follow its
//     grammar, such as a redacted "Xid (PCI:0000:xx:00)". Ordinary
//     segfaults of other programs (libnvidia-ml and libcuda crashes
//     included) are plain unrelated, with no reason, and are not counted.
//   - The process name in an Xid is the driver's "pid=N, name=X, ", set by
//     whoever ran the process; it is kept verbatim and never used as a
//     label (LabelValue bounds it where it is shown).
//
// The classifier is built for the common case: most kernel lines are none of
// the above and are rejected by looking at their first bytes, without
// regular expressions and without allocating.
package kmsg
