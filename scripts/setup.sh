#!/usr/bin/env bash
# Set up everything transferfeat needs on a Debian machine (run as root): system packages,
# a virtual environment with transferfeat in .venv, and Caffe 1.0 (CPU) via install-caffe.sh.
# Idempotent; source it or run it.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
need=()
for pkg in python3 python3-venv debootstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
py="${PYTHON:-python3}"
[ -x "$here/.venv/bin/python" ] || "$py" -m venv "$here/.venv"
"$here/.venv/bin/pip" install -q --disable-pip-version-check "$here[test]"
bash "$here/scripts/install-caffe.sh" >/dev/null
