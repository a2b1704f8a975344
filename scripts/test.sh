#!/usr/bin/env bash
# The whole test suite, from a fresh Debian machine as root: set up, then pytest.
# Reference data (../shared beside the checkout) is used when present; CI always has it.
set -uo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$here/scripts/setup.sh" || exit 1
if [ -z "${TF_SHARED:-}" ] && [ -d "$here/../shared/convnet_transfer" ]; then
  export TF_SHARED="$(cd "$here/../shared" && pwd)"
fi
cd "$here"
.venv/bin/python -m pytest -q -ra "$@"
rc=$?
[ $rc -eq 5 ] && echo "pytest collected no tests: failing" >&2
exit $rc
