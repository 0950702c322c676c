#!/usr/bin/env bash
# Runs pytest inside an already-created tox env, with the env's variables, for quick
# iteration: tools/pytest-on.sh tf221-legacy tests/test_wing_loss.py -x
# Use `tox -e ENV` for the real thing; it creates the env and writes observations.
set -euo pipefail
env_name=$1; shift
cd "$(dirname "$0")/.."
legacy=()
[[ $env_name == *legacy* ]] && legacy=(TF_USE_LEGACY_KERAS=1)
exec env TOX_ENV_NAME="$env_name" TF_CPP_MIN_LOG_LEVEL=2 PYTHONHASHSEED=0 CUDA_VISIBLE_DEVICES=-1 \
    "${legacy[@]}" ".tox/$env_name/bin/python" -m pytest -p no:cacheprovider "$@"
