#!/usr/bin/env bash
# The README's two commands on a brand-new Debian 12, for real: debootstrap
# a plain bookworm into a directory, clone this checkout's HEAD into it, and
# inside it, as root and with nothing of this machine but its kernel:
#   bash ci/setup-and-run.sh     (install, build, the main job)
#   bash ci/test.sh              (the whole suite)
# CI cannot prove this: its machine keeps whatever was installed by hand.
#
#   bash ci/fresh-machine.sh [DIR]     (default /var/tmp/kindling-fresh; reused when present)
#
# Needs root, network access to deb.debian.org and PyPI, about 8 GiB of disk
# and an hour on 2 cores. Logs: DIR/root/setup.log and DIR/root/test.log.
# FRESH_STEPS="setup test" (default) picks the commands to run.
set -euo pipefail
REPO=$(cd "$(dirname "$0")/.." && pwd)
ROOT=${1:-/var/tmp/kindling-fresh}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
STEPS=${FRESH_STEPS:-setup test}
[ "$(id -u)" = 0 ] || { echo "ci/fresh-machine: run as root (debootstrap and chroot)" >&2; exit 2; }

if ! command -v debootstrap >/dev/null; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null
fi
if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
  echo "ci/fresh-machine: debootstrap bookworm into $ROOT"
  debootstrap bookworm "$ROOT" "$MIRROR" >"$ROOT.debootstrap.log" 2>&1 ||
    { tail -20 "$ROOT.debootstrap.log"; exit 1; }
  cat >"$ROOT/etc/apt/sources.list" <<LIST
deb $MIRROR bookworm main
deb $MIRROR bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
LIST
fi
cp /etc/resolv.conf "$ROOT/etc/resolv.conf"
# The host name resolves, as the Debian installer's /etc/hosts makes it do.
grep -qw "$(hostname)" "$ROOT/etc/hosts" || echo "127.0.1.1	$(hostname)" >>"$ROOT/etc/hosts"
# The network, not a dependency: where this machine reaches PyPI through a
# proxy with its own certificate authority, the new machine trusts it too.
net_env=()
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$ROOT/usr/local/share/ca-certificates"
  cp /usr/local/share/ca-certificates/*.crt "$ROOT/usr/local/share/ca-certificates/"
  bundle=/etc/ssl/certs/ca-certificates.crt
  net_env=(PIP_CERT=$bundle SSL_CERT_FILE=$bundle REQUESTS_CA_BUNDLE=$bundle)
fi

mounts=()
bind() { mkdir -p "$ROOT$1"; mount --rbind "$1" "$ROOT$1"; mount --make-rslave "$ROOT$1"; mounts+=("$ROOT$1"); }
cleanup() {
  for ((i = ${#mounts[@]} - 1; i >= 0; i--)); do umount -R "${mounts[i]}" 2>/dev/null || umount -lR "${mounts[i]}" || true; done
}
trap cleanup EXIT
# The new root is a mount point, as / is on a real machine (ip netns add
# makes / a slave mount and fails on a plain directory).
mount --bind "$ROOT" "$ROOT" && mounts+=("$ROOT")
bind /sys
bind /dev
mkdir -p "$ROOT/run" && mount -t tmpfs tmpfs "$ROOT/run" && mounts+=("$ROOT/run")

rm -rf "$ROOT/root/kindling"
git clone -q --no-hardlinks "$REPO" "$ROOT/root/kindling"
echo "ci/fresh-machine: $(git -C "$ROOT/root/kindling" log -1 --format='%h %s')"

mkdir -p "$ROOT/proc"
if [ ${#net_env[@]} -gt 0 ]; then
  chroot "$ROOT" /bin/sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq ca-certificates >/dev/null && update-ca-certificates >/dev/null'
fi

rc=0
for step in $STEPS; do
  case $step in
    setup) cmd="bash ci/setup-and-run.sh" ;;
    test) cmd="bash ci/test.sh" ;;
    *) echo "ci/fresh-machine: unknown step $step" >&2; exit 2 ;;
  esac
  echo "ci/fresh-machine: $cmd (log $ROOT/root/$step.log)"
  t0=$SECONDS
  # Its own process tree too (a PID namespace with its own /proc): tests that
  # look for stray processes see the new machine's, not this one's.
  if unshare --pid --fork --mount chroot "$ROOT" /bin/sh -c 'mount -t proc proc /proc && exec "$@"' sh /usr/bin/env -i HOME=/root TERM=dumb LANG=C.UTF-8 \
       PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin "${net_env[@]}" \
       bash -c "cd /root/kindling && $cmd" >"$ROOT/root/$step.log" 2>&1; then
    echo "ci/fresh-machine: $step passed in $((SECONDS - t0)) s"
  else
    rc=1
    echo "ci/fresh-machine: $step FAILED after $((SECONDS - t0)) s; its last lines:"
    tail -40 "$ROOT/root/$step.log"
  fi
done
exit $rc
