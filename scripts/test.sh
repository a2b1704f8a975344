#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine as root: set up, then pytest.
# Reference data (../shared beside the checkout) is used when present; CI always has it.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export PATH="$PATH:/usr/sbin:/sbin"
bash "$here/scripts/setup.sh" || exit 1
# The SLURM tests start a one-node cluster on localhost: Debian's slurm-wlm and munge.
if ! command -v slurmctld >/dev/null || ! command -v munged >/dev/null; then
  echo "test: apt-get install slurm-wlm munge (for the one-node SLURM cluster the tests start)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge >/dev/null || exit 1
fi
# The report test opens tf's HTML report in Debian's headless Chromium.
if ! command -v chromium >/dev/null; then
  echo "test: apt-get install chromium (for the HTML report test)" >&2
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null || exit 1
fi
if [ -z "${TF_SHARED:-}" ] && [ -d "$here/../shared/convnet_transfer" ]; then
  export TF_SHARED="$(cd "$here/../shared" && pwd)"
fi
cd "$here"
echo "test: pytest (reference data: ${TF_SHARED:-none})" >&2
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
[ $rc -eq 5 ] && echo "pytest collected no tests: failing" >&2
exit $rc
