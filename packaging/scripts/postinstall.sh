#!/bin/sh
# After install or upgrade (deb postinst, rpm %post).
# Nothing here may fail the transaction: images are built in chroots and
# containers where systemd is not running and policy-rc.d forbids starts.
set -e

# deb: $1 is "configure" and $2 the previously configured version (empty on a
# first install). rpm: $1 counts the installed instances (1 first, 2 upgrade).
first_install=no
case "$1" in
configure) [ -z "$2" ] && first_install=yes ;;
abort-*) exit 0 ;;
1) first_install=yes ;;
esac

# The unit creates it too (StateDirectory=); this covers running by hand.
mkdir -p /var/lib/gpuwarden
chmod 0750 /var/lib/gpuwarden

if ! command -v systemctl >/dev/null 2>&1; then
	exit 0
fi

# Enabling only writes symlinks, which works without a running systemd, so an
# image built in a chroot boots with the agent enabled. On upgrade the
# administrator's choice (enabled or not) is kept.
if [ "$first_install" = yes ]; then
	systemctl enable gpuwarden.service >/dev/null 2>&1 || true
fi

# Reload, start and restart need a running systemd.
[ -d /run/systemd/system ] || exit 0
systemctl daemon-reload >/dev/null 2>&1 || true

# deb-systemd-invoke honours policy-rc.d; plain systemctl does not.
if command -v deb-systemd-invoke >/dev/null 2>&1; then
	invoke=deb-systemd-invoke
else
	invoke=systemctl
fi
if [ "$first_install" = yes ]; then
	$invoke start gpuwarden.service >/dev/null 2>&1 ||
		echo "gpuwarden: not started now; see: systemctl status gpuwarden" >&2
else
	# try-restart: restart only if it is running, so a stopped agent stays stopped.
	$invoke try-restart gpuwarden.service >/dev/null 2>&1 ||
		echo "gpuwarden: restart failed; see: systemctl status gpuwarden" >&2
fi
exit 0
