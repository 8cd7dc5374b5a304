#!/usr/bin/env bash
# The README's test command on a fresh Debian: proves that it installs everything the suite needs.
#
#   sudo bash handyshop_migration_tests/fresh_machine.sh [ROOT_DIR]    # as root; about 15 minutes; ~3 GB in ROOT_DIR
#
# debootstrap makes a minimal Debian 12 in ROOT_DIR (default: a new temporary directory) with nothing but Python 3.11,
# venv, git and CA certificates: no Chromium, no Node.js, no npm, no PostgreSQL. This checkout's HEAD is cloned into
# it, and `.ci/run` (the README's second command) runs there as root with an empty environment (PATH=/usr/bin:/bin).
# Its exit status is this script's. ROOT_DIR is removed afterwards unless KEEP_ROOT=1.
set -euo pipefail
[ "$(id -u)" = 0 ] || { echo "fresh_machine.sh: run it as root (debootstrap, chroot and mounts need root)" >&2; exit 2; }
repo="$(cd "$(dirname "$0")/.." && pwd)"
root="${1:-$(mktemp -d /tmp/handyshop-fresh.XXXXXX)}"
chmod 755 "$root"  # it is the new machine's "/" (mktemp makes it 0700: only root could traverse it)
command -v debootstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null; }

cleanup() {
  for mount in dev/shm dev/pts dev sys proc; do umount -R "$root/$mount" 2>/dev/null || true; done
  if [ "${KEEP_ROOT:-0}" != 1 ]; then rm -rf --one-file-system "$root"; fi
}
trap cleanup EXIT

echo "fresh_machine: debootstrap bookworm into $root"
debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
# The same package sources as this machine (bookworm, bookworm-updates, bookworm-security), and its resolver.
[ -f /etc/apt/sources.list.d/debian.sources ] && cp /etc/apt/sources.list.d/debian.sources "$root/etc/apt/sources.list.d/" \
  && rm -f "$root/etc/apt/sources.list"
cp /etc/resolv.conf "$root/etc/resolv.conf"
# This machine's trust store and pip's pointer to it (a TLS-inspecting egress needs its CA): machine settings, not
# project installs; the environment variables naming the bundle are passed through below for the same reason.
if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
  mkdir -p "$root/usr/local/share/ca-certificates" && cp /usr/local/share/ca-certificates/*.crt "$root/usr/local/share/ca-certificates/"
fi
[ -f /etc/pip.conf ] && cp /etc/pip.conf "$root/etc/pip.conf"
mount -t proc proc "$root/proc"
mount --rbind /sys "$root/sys" && mount --make-rslave "$root/sys"
mount --bind /dev "$root/dev" && mount --bind /dev/pts "$root/dev/pts"
mount -t tmpfs -o size=4g shm "$root/dev/shm"
chroot "$root" env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive \
  sh -c 'apt-get update -qq && apt-get install -y -qq python3 python3-venv git ca-certificates >/dev/null && update-ca-certificates >/dev/null'
git clone -q "$repo" "$root/root/handyshop-migration"
git -C "$root/root/handyshop-migration" checkout -q "$(git -C "$repo" rev-parse HEAD)"

passed=()
for name in SSL_CERT_FILE SSL_CERT_DIR PIP_CERT REQUESTS_CA_BUNDLE CURL_CA_BUNDLE NODE_EXTRA_CA_CERTS GIT_SSL_CAINFO; do
  if [ -n "${!name:-}" ]; then passed+=("$name=${!name}"); fi
done
chroot "$root" env -i PATH=/usr/bin:/bin HOME=/root LANG=C.UTF-8 "${passed[@]}" bash -c '
  cd /root/handyshop-migration
  echo "fresh_machine: $(python3 --version); node: $(command -v node || echo none); npm: $(command -v npm || echo none);" \
       "chromium: $(command -v chromium || echo none)"
  bash .ci/run'
