#!/usr/bin/env bash
# The main job, from a fresh Debian machine as root: set up (venv, Caffe 1.0 CPU), then run the
# miniature study end to end into ./demo (data, 30 nets trained by real Caffe, results, figures,
# report). The demo trains with Caffe, so PyTorch is installed only when it is asked to train with
# the torch engine (--engine torch or TF_ENGINE=torch), unless TF_TORCH says otherwise.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
engine="${TF_ENGINE:-caffe}"
prev=""
for a in "$@"; do
  case "$a" in --engine=*) engine="${a#--engine=}" ;; esac
  [ "$prev" = "--engine" ] && engine="$a"
  prev="$a"
done
if [ "$engine" = torch ]; then export TF_TORCH="${TF_TORCH:-torch==2.13.0}"; else export TF_TORCH="${TF_TORCH:-none}"; fi
bash "$here/scripts/setup.sh"
cd "$here"
exec .venv/bin/tf demo --out "${DEMO_OUT:-demo}" "$@"
