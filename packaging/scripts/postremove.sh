#!/bin/sh
# After removal (deb postrm, rpm %postun).
set -e

case "$1" in
purge)
	# Purge removes what the agent wrote: kernel-log cursor, ledger, audit log.
	# A plain remove keeps them, so reinstalling does not replay old events.
	rm -rf /var/lib/gpuwarden
	;;
esac

case "$1" in
remove | purge | 0)
	if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
		systemctl daemon-reload >/dev/null 2>&1 || true
	fi
	;;
esac
exit 0
