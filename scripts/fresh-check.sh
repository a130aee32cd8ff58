#!/usr/bin/env bash
# make fresh-check: the README's two commands on a fresh Debian 12 with nothing but git and make.
#
# Builds a minimal Debian 12 (bookworm) root with debootstrap from the mirror this machine's apt
# already uses, clones the committed repository into it, and runs `make test` and then `make demo`
# there. A green CI on a machine where packages were installed by hand proves nothing about a
# fresh one; this does. Run it after changing scripts/install-deps.sh, a CMakeLists.txt, the
# Makefile or the test set-up. Needs root (debootstrap, chroot, mounts) and ~6 GB of disk.
#
#   FRESH_ROOT=/var/tmp/lamina-fresh  where the root is built (removed first, and at the end
#                                     unless FRESH_KEEP=1)
#   FRESH_STEPS="test demo"           the make targets run inside, in order
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
root=${FRESH_ROOT:-/var/tmp/lamina-fresh}
steps=${FRESH_STEPS:-test demo}
log=${FRESH_LOG:-$repo/build/fresh-check.log}
[ "$(id -u)" -eq 0 ] || { echo "fresh-check: needs root (debootstrap, chroot)" >&2; exit 1; }
mkdir -p "$(dirname "$log")"

# The mirror apt is configured with here (deb822 .sources first, then sources.list); no host name
# is written into the repository.
mirror=""
for f in /etc/apt/sources.list.d/*.sources; do
  [ -f "$f" ] || continue
  mirror=$(awk '/^URIs:/ {u=$2} /^Suites:/ && u != "" && /bookworm( |$)/ {print u; exit}' "$f")
  [ -n "$mirror" ] && break
done
if [ -z "$mirror" ] && [ -f /etc/apt/sources.list ]; then
  mirror=$(awk '$1 == "deb" && $3 == "bookworm" {print $2; exit}' /etc/apt/sources.list)
fi
[ -n "$mirror" ] || { echo "fresh-check: no bookworm mirror in this machine's apt sources" >&2; exit 1; }

command -v debootstrap >/dev/null || {
  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends debootstrap
}

cleanup() {
  for m in dev/pts dev proc sys; do umount -l "$root/$m" 2>/dev/null || true; done
  [ "${FRESH_KEEP:-0}" = 1 ] || rm -rf "$root"
}
trap cleanup EXIT
cleanup
t0=$(date +%s)
echo "fresh-check: debootstrap bookworm (minbase + git, make) into $root; log in $log"
debootstrap --variant=minbase --include=git,make,ca-certificates bookworm "$root" "$mirror" >"$log" 2>&1 || {
  tail -20 "$log"; echo "fresh-check: debootstrap failed" >&2; exit 1; }
cp /etc/resolv.conf "$root/etc/resolv.conf"
# This machine's network settings, as resolv.conf: its CA bundle and pip configuration (the
# oracle environment comes from PyPI through whatever this network requires).
cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
mount -t proc proc "$root/proc"
mount -t sysfs sys "$root/sys"
mount --bind /dev "$root/dev"
mount --bind /dev/pts "$root/dev/pts"

# The committed tree only, as CI and a user's clone see it.
git clone -q "$repo" "$root/root/lamina"
status=0
for s in $steps; do
  echo "fresh-check: make $s"
  if chroot "$root" /usr/bin/env -i HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
      LANG=C.UTF-8 /bin/bash -c "cd /root/lamina && make $s" >>"$log" 2>&1; then
    echo "fresh-check: make $s passed"
  else
    status=1
    tail -40 "$log"
    echo "fresh-check: make $s FAILED (log: $log)"
    break
  fi
done
echo "fresh-check: $( [ $status -eq 0 ] && echo PASSED || echo FAILED ) in $(( $(date +%s) - t0 )) s"
exit $status
