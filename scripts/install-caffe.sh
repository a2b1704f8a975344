#!/usr/bin/env bash
# Install BVLC Caffe 1.0 (CPU_ONLY) from Debian bullseye's packages into a private root,
# and put wrappers for caffe, convert_imageset and compute_image_mean in PREFIX/bin.
# The wrappers run the root's binaries with the root's own loader on the host's paths
# (no chroot at run time). Idempotent: a second run only rewrites the wrappers.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"      # debootstrap and chroot live there

prefix="${XDG_CACHE_HOME:-$HOME/.cache}/transferfeat/caffe"
mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) prefix="$2"; shift 2 ;;
    --prefix=*) prefix="${1#*=}"; shift ;;
    --mirror) mirror="$2"; shift 2 ;;
    -h|--help) echo "usage: $0 [--prefix DIR] [--mirror URL]"; exit 0 ;;
    *) echo "install-caffe.sh: unknown argument: $1" >&2; exit 2 ;;
  esac
done
root="$prefix/root"
tools="caffe convert_imageset compute_image_mean extract_features"

if [ ! -x "$root/usr/bin/caffe" ]; then
  [ "$(id -u)" = 0 ] || { echo "install-caffe.sh: debootstrap needs root" >&2; exit 1; }
  command -v debootstrap >/dev/null || { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  tmp="$prefix/root.partial"
  rm -rf "$tmp"; mkdir -p "$prefix"
  echo "install-caffe.sh: debootstrap bullseye into $tmp" >&2
  debootstrap --variant=minbase bullseye "$tmp" "$mirror" >"$prefix/debootstrap.log" 2>&1 \
    || { tail -n 20 "$prefix/debootstrap.log" >&2; exit 1; }
  # Mount what apt inside the root needs, and always unmount it again.
  cleanup() { for m in proc dev; do umount "$tmp/$m" 2>/dev/null || true; done; }
  trap cleanup EXIT
  mount -t proc proc "$tmp/proc" 2>/dev/null || true
  mount --bind /dev "$tmp/dev" 2>/dev/null || true
  chroot "$tmp" /bin/sh -c 'DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends caffe libopenblas0-pthread' \
    >>"$prefix/debootstrap.log" 2>&1 || { tail -n 20 "$prefix/debootstrap.log" >&2; exit 1; }
  chroot "$tmp" apt-get clean >/dev/null 2>&1 || true
  cleanup; trap - EXIT
  mv "$tmp" "$root"
fi

mkdir -p "$prefix/bin"
libs="$root/usr/lib/x86_64-linux-gnu/openblas-pthread:$root/usr/lib/x86_64-linux-gnu:$root/lib/x86_64-linux-gnu:$root/usr/lib"
for t in $tools; do
  w="$prefix/bin/$t"
  cat >"$w.tmp" <<WRAP
#!/bin/sh
# transferfeat wrapper: Debian bullseye's $t (Caffe 1.0, CPU_ONLY) on the host's paths.
exec "$root/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" --library-path "$libs" "$root/usr/bin/$t" "\$@"
WRAP
  chmod +x "$w.tmp"; mv "$w.tmp" "$w"
done
"$prefix/bin/caffe" --version >/dev/null 2>&1 || "$prefix/bin/caffe" 2>&1 | grep -q "command line brew" \
  || { echo "install-caffe.sh: the installed caffe does not run" >&2; exit 1; }
echo "$prefix/bin"
