#!/usr/bin/env bash
# The main job, from a fresh Debian machine as root: set up (venv, Caffe 1.0 CPU), then run the
# miniature study end to end into ./demo (data, 30 nets trained by real Caffe, results, figures).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh"
cd "$here"
exec .venv/bin/tf demo --out "${DEMO_OUT:-demo}" "$@"
