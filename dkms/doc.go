// Package dkms reads kernel, NVIDIA driver and DKMS facts from files under one
// root directory, turns them into findings (each a stable check name, a
// level, the evidence and the fix) and keeps them current with a Watcher that
// reacts to inotify events, a trigger file touched by package-manager hooks
// and a timer.
//
// It never runs dkms or modprobe: it only reads what those tools leave on
// disk, so the same code runs on a host, in a container with the host's root
// mounted, and on the fixture trees under testdata/rootfs.
package dkms
