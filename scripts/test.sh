#!/usr/bin/env bash
# README command 2: environment step, then the test suite and the docstring examples of the packages.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO"
exec python -m pytest -ra --doctest-modules tests cos vlm_common longva llava_video videoxl runtime/cos_runtime lmms-eval/cos_lmms_eval "$@"
