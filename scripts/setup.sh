#!/usr/bin/env bash
# Set up everything transferfeat needs on a Debian machine (run as root): system packages,
# a virtual environment with transferfeat (this checkout, editable) in .venv, and Caffe 1.0 (CPU)
# via install-caffe.sh. Idempotent; says each step on stderr.
#   TF_TORCH=torch==2.X.Y   the PyTorch release for the torch engine (default torch==2.13.0)
#   TF_TORCH=none           no PyTorch: a Caffe-only set-up (tf doctor says how to add it later)
# PyPI's Linux x86_64 wheels of torch carry the CUDA libraries (about 4.5 GB installed), with or
# without a GPU in the machine; so on a machine without an NVIDIA driver (no nvidia-smi) PyTorch's
# CPU build comes from download.pytorch.org/whl/cpu instead (about 0.7 GB installed), where that
# index answers. TF_TORCH_INDEX=URL names another index for torch (empty: PyPI's wheel).
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
torch_spec="${TF_TORCH:-torch==2.13.0}"
if [ "$torch_spec" = none ]; then
  step "pip install -e transferfeat[test] into .venv (TF_TORCH=none: no PyTorch, so no torch engine)"
  "$here/.venv/bin/pip" install -q --disable-pip-version-check -e "$here[test]"
else
  index="${TF_TORCH_INDEX-}"
  if [ -z "${TF_TORCH_INDEX+set}" ] && ! command -v nvidia-smi >/dev/null \
     && "$py" -c 'import urllib.request as u; u.urlopen("https://download.pytorch.org/whl/cpu/", timeout=10)' 2>/dev/null; then
    index=https://download.pytorch.org/whl/cpu                # no GPU: the CPU build, not 4.5 GB of CUDA
  fi
  step "pip install $torch_spec${index:+ from $index} into .venv (a few minutes the first time)"
  "$here/.venv/bin/pip" install -q --disable-pip-version-check "$torch_spec" ${index:+--extra-index-url "$index"}
  step "pip install -e transferfeat[test,torch] into .venv"
  "$here/.venv/bin/pip" install -q --disable-pip-version-check -e "$here[test,torch]" "$torch_spec"
fi
step "Caffe 1.0 (CPU) via scripts/install-caffe.sh: a Debian bullseye root under ~/.cache/transferfeat/caffe (debootstrap, as root; about 2 minutes the first time, then nothing)"
bash "$here/scripts/install-caffe.sh" >/dev/null
step "ready: . $here/.venv/bin/activate; tf doctor"
