#!/usr/bin/env bash
# README command 2: environment step, then the test suite.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO"
exec python -m pytest -ra tests "$@"
