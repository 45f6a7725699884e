#!/usr/bin/env bash
# `cos bench` in the project's environment; arguments pass through, e.g.
#   bash scripts/bench.sh --frames 32,128 --repeats 3 --out .cache/bench/report.json --plot
#   bash scripts/bench.sh --smoke
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
cd "$REPO"
exec cos bench "$@"
