#!/bin/sh
# Before removal or upgrade (deb prerm, rpm %preun). On upgrade nothing is
# done here: postinstall restarts the running agent on the new binary.
set -e

# deb: $1 is "remove" (or "upgrade", "deconfigure", "failed-upgrade").
# rpm: $1 counts the instances left after this transaction (0 on removal).
case "$1" in
remove | 0) ;;
*) exit 0 ;;
esac

command -v systemctl >/dev/null 2>&1 || exit 0
if [ -d /run/systemd/system ]; then
	if command -v deb-systemd-invoke >/dev/null 2>&1; then
		deb-systemd-invoke stop gpuwarden.service >/dev/null 2>&1 || true
	else
		systemctl stop gpuwarden.service >/dev/null 2>&1 || true
	fi
fi
# Offline-safe: removes the symlinks even in a chroot.
systemctl disable gpuwarden.service >/dev/null 2>&1 || true
exit 0
