#!/usr/bin/env bash
# Set up everything transferfeat needs on a Debian machine (run as root): system packages,
# a virtual environment with transferfeat in .venv, and Caffe 1.0 (CPU) via install-caffe.sh.
# Idempotent; says each step on stderr.
set -euo pipefail
export PATH="$PATH:/usr/sbin:/sbin"
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
step() { echo "setup: $*" >&2; }
need=()
for pkg in python3 python3-venv debootstrap; do
  dpkg -s "$pkg" >/dev/null 2>&1 || need+=("$pkg")
done
if [ ${#need[@]} -gt 0 ]; then
  step "apt-get install ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
py="${PYTHON:-python3}"
if [ ! -x "$here/.venv/bin/python" ]; then
  step "creating the virtual environment $here/.venv"
  "$py" -m venv "$here/.venv"
fi
# The torch engine's PyTorch: a pinned release by default (TF_TORCH="torch==2.X.Y" for another; on a
# GPU box PyPI's Linux wheels of torch carry CUDA).
torch_spec="${TF_TORCH:-torch==2.13.0}"
step "pip install transferfeat[test,torch] ($torch_spec) into .venv (a few minutes the first time)"
"$here/.venv/bin/pip" install -q --disable-pip-version-check "$here[test,torch]" "$torch_spec"
step "Caffe 1.0 (CPU) via scripts/install-caffe.sh (about 2 minutes the first time, then nothing)"
bash "$here/scripts/install-caffe.sh" >/dev/null
step "ready: . $here/.venv/bin/activate; tf doctor"
