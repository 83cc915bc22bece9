#!/usr/bin/env bash
# Regenerates the fixture root trees used by dkms/ and `gpuwarden check`
# tests. Each directory is one situation; README.md says which. Files are
# tiny stand-ins: a .ko holds only a modinfo "version=" entry and, when
# signed, the signature magic the kernel looks for at the end.
set -euo pipefail
cd "$(dirname "$0")"

K1=6.1.0-18-amd64
K0=6.1.0-17-amd64
K2=6.1.0-20-amd64
OLD=535.104.05
NEW=550.54.15
SBVAR=sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c

ko() { # ko FILE VERSION [signed]
	mkdir -p "$(dirname "$1")"
	printf '\0license=NVIDIA\0version=%s\0srcversion=0123456789ABCDEF\0' "$2" >"$1"
	if [ "${3:-}" = signed ]; then printf 'SIG~Module signature appended~\n' >>"$1"; fi
}
file() { mkdir -p "$(dirname "$1")"; printf '%s' "$2" >"$1"; }

kernel() { # kernel ROOT RELEASE [noheaders]
	file "$1/boot/vmlinuz-$2" "kernel image stand-in"
	file "$1/lib/modules/$2/modules.dep" ""
	if [ "${3:-}" != noheaders ]; then
		file "$1/usr/src/linux-headers-$2/Makefile" "# headers stand-in"
		ln -sfn "/usr/src/linux-headers-$2" "$1/lib/modules/$2/build"
	fi
}

dkms_installed() { # dkms_installed ROOT MODULE VERSION KERNEL [signed]
	local base="$1/var/lib/dkms/$2/$3"
	file "$1/usr/src/$2-$3/dkms.conf" "PACKAGE_NAME=\"$2\"
PACKAGE_VERSION=\"$3\"
"
	mkdir -p "$base"
	ln -sfn "/usr/src/$2-$3" "$base/source"
	ko "$base/$4/x86_64/module/nvidia.ko" "$3" "${5:-}"
	file "$base/$4/x86_64/log/make.log" "DKMS make.log for $2-$3 for kernel $4 (x86_64)
"
	ln -sfn "$3/$4/x86_64" "$1/var/lib/dkms/$2/kernel-$4-x86_64"
	ko "$1/lib/modules/$4/updates/dkms/nvidia.ko" "$3" "${5:-}"
}

debian_base() { # debian_base ROOT LOADED_BANNER LIBVERSION
	rm -rf "$1"
	file "$1/etc/os-release" 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"
ID=debian
VERSION_ID="12"
'
	file "$1/etc/default/grub" 'GRUB_DEFAULT=0
GRUB_TIMEOUT=5
'
	file "$1/boot/grub/grubenv" '# GRUB Environment Block
#####################################################################
'
	file "$1/proc/sys/kernel/osrelease" "$K1
"
	file "$1/proc/sys/kernel/arch" "x86_64
"
	file "$1/proc/driver/nvidia/version" "$2
GCC version:  gcc version 12.2.0 (Debian 12.2.0-14)
"
	file "$1/sys/module/nvidia/version" "${2##*Module  }"
	sed -i 's/  .*//' "$1/sys/module/nvidia/version"
	local lib="$1/usr/lib/x86_64-linux-gnu"
	file "$lib/libnvidia-ml.so.$3" "library stand-in"
	ln -sfn "libnvidia-ml.so.$3" "$lib/libnvidia-ml.so.1"
	kernel "$1" "$K1"
	ln -sfn "vmlinuz-$K1" "$1/boot/vmlinuz"
}

PROP="NVRM version: NVIDIA UNIX x86_64 Kernel Module  $OLD  Sat Aug 19 01:15:15 UTC 2023"

# healthy: one kernel, DKMS-installed module matching the loaded driver and the library.
debian_base healthy "$PROP" "$OLD"
dkms_installed healthy nvidia "$OLD" "$K1"

# new-kernel-no-module: a newer kernel installed (headers too), /boot/vmlinuz
# points at it, DKMS never built for it (autoinstall did not run).
debian_base new-kernel-no-module "$PROP" "$OLD"
dkms_installed new-kernel-no-module nvidia "$OLD" "$K1"
kernel new-kernel-no-module "$K2"
ln -sfn "vmlinuz-$K2" new-kernel-no-module/boot/vmlinuz
file new-kernel-no-module/var/run/reboot-required "*** System restart required ***
"
file new-kernel-no-module/var/run/reboot-required.pkgs "linux-image-$K2
"

# dkms-build-failed: the same, but DKMS tried and failed (build/make.log
# left behind), and GRUB_DEFAULT=saved points at the new kernel while
# /boot/vmlinuz still points at the old one.
debian_base dkms-build-failed "$PROP" "$OLD"
dkms_installed dkms-build-failed nvidia "$OLD" "$K1"
kernel dkms-build-failed "$K2"
file dkms-build-failed/var/lib/dkms/nvidia/$OLD/build/make.log "DKMS make.log for nvidia-$OLD for kernel $K2 (x86_64)
Tue Mar  5 10:11:12 UTC 2024
make[1]: Entering directory '/usr/src/linux-headers-$K2'
/var/lib/dkms/nvidia/$OLD/build/nvidia/nv-mmap.c:432:5: error: implicit declaration of function 'vm_flags_set'
make[2]: *** [scripts/Makefile.build:250: nvidia/nv-mmap.o] Error 1
make: *** [Makefile:234: __sub-make] Error 2
"
file dkms-build-failed/etc/default/grub 'GRUB_DEFAULT=saved
GRUB_SAVEDEFAULT=false
'
file dkms-build-failed/boot/grub/grubenv "# GRUB Environment Block
saved_entry=gnulinux-advanced-0f3c5b2e>gnulinux-$K2-advanced-0f3c5b2e
#####################################################################
"

# headers-missing: an older kernel still installed, its module built long
# ago, but its headers were removed: DKMS cannot rebuild for it.
debian_base headers-missing "$PROP" "$OLD"
dkms_installed headers-missing nvidia "$OLD" "$K1"
kernel headers-missing "$K0" noheaders
ko headers-missing/lib/modules/$K0/updates/dkms/nvidia.ko "$OLD"

# driver-not-reloaded: the 550 packages replaced the module on disk and the
# library, the 535 module is still loaded (open flavor), reboot requested.
debian_base driver-not-reloaded "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  $OLD  Release Build  (dvs-builder@U16-I3-B03-4-3)  Tue Aug 15 11:50:42 UTC 2023" "$NEW"
dkms_installed driver-not-reloaded nvidia "$NEW" "$K1"
file driver-not-reloaded/var/run/reboot-required "*** System restart required ***
"
file driver-not-reloaded/var/run/reboot-required.pkgs "nvidia-open-kernel-dkms
libnvidia-ml1
"

# secure-boot-unsigned: Secure Boot on; the running kernel's module is
# signed, the one DKMS built for the next boot kernel is not.
debian_base secure-boot-unsigned "$PROP" "$OLD"
rm -rf secure-boot-unsigned/var/lib/dkms
dkms_installed secure-boot-unsigned nvidia "$OLD" "$K1" signed
kernel secure-boot-unsigned "$K2"
ko secure-boot-unsigned/var/lib/dkms/nvidia/$OLD/$K2/x86_64/module/nvidia.ko "$OLD"
ln -sfn "$OLD/$K2/x86_64" "secure-boot-unsigned/var/lib/dkms/nvidia/kernel-$K2-x86_64"
ko secure-boot-unsigned/lib/modules/$K2/updates/dkms/nvidia.ko "$OLD"
ln -sfn "vmlinuz-$K2" secure-boot-unsigned/boot/vmlinuz
mkdir -p "$(dirname "secure-boot-unsigned/$SBVAR")"
printf '\x06\x00\x00\x00\x01' >"secure-boot-unsigned/$SBVAR"

# rpm-bls: Rocky 9 layout. Kernel images in /lib/modules/K/vmlinuz, BLS
# entries, grub2's saved_entry naming a BLS id, open DKMS module installed
# to /extra, no reboot-required file, a newer kernel installed but not running.
R=rpm-bls
RK1=5.14.0-427.13.1.el9_4.x86_64
RK2=5.14.0-503.29.1.el9_5.x86_64
RV=570.86.15
MID=8f2e6a0b4c1d4e2f9a7b3c5d6e8f0a1b
rm -rf "$R"
file $R/etc/os-release 'NAME="Rocky Linux"
ID="rocky"
ID_LIKE="rhel centos fedora"
VERSION_ID="9.5"
'
file $R/proc/sys/kernel/osrelease "$RK1
"
file $R/proc/driver/nvidia/version "NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  $RV  Release Build  (dvs-builder@U16-I3-A16-1-1)  Thu Jan 23 01:21:09 UTC 2025
GCC version:  gcc version 11.5.0 20240719 (Red Hat 11.5.0-2) (GCC)
"
file $R/usr/lib64/libnvidia-ml.so.$RV "library stand-in"
ln -sfn "libnvidia-ml.so.$RV" $R/usr/lib64/libnvidia-ml.so.1
file $R/boot/grub2/grubenv "# GRUB Environment Block
saved_entry=$MID-$RK2
boot_success=1
###########################################################
"
for k in $RK1 $RK2; do
	file $R/lib/modules/$k/vmlinuz "kernel image stand-in"
	file $R/usr/src/kernels/$k/Makefile "# headers stand-in"
	ln -sfn "/usr/src/kernels/$k" $R/lib/modules/$k/build
	file $R/boot/loader/entries/$MID-$k.conf "title Rocky Linux ($k) 9.5 (Blue Onyx)
version $k
linux /vmlinuz-$k
initrd /initramfs-$k.img \$tuned_initrd
options root=/dev/mapper/rl-root ro
"
	base=$R/var/lib/dkms/nvidia-open/$RV
	ko $base/$k/x86_64/module/nvidia.ko "$RV"
	ln -sfn "$RV/$k/x86_64" $R/var/lib/dkms/nvidia-open/kernel-$k-x86_64
	ko $R/lib/modules/$k/extra/nvidia.ko "$RV"
done
file $R/usr/src/nvidia-open-$RV/dkms.conf 'PACKAGE_NAME="nvidia-open"
'
ln -sfn "/usr/src/nvidia-open-$RV" $R/var/lib/dkms/nvidia-open/$RV/source
