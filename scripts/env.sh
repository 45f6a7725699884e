#!/usr/bin/env bash
# Shared environment step of scripts/demo.sh and scripts/test.sh (source it, don't run it).
# Creates or reuses .venv in the repo: CPU torch first, then lmms-eval without its declared deps
# (they include torchvision and timm, whose resolution would replace CPU torch by a CUDA build),
# then this project. A second run only checks a stamp and is fast.
set -euo pipefail
REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${COS_VENV:-$REPO/.venv}"
TORCH_SPEC="${COS_TORCH_SPEC:-torch==2.13.0}"
LMMS_EVAL_SPEC="${COS_LMMS_EVAL_SPEC:-lmms-eval==0.7.3}"
PY="${PYTHON:-python3}"
DEV_TOOLS="pytest ruff"  # the test command's runner and the linter .ci/run calls

stamp_inputs() { cat "$REPO/setup.py" "$REPO/requirements.txt" "$REPO/scripts/env.sh"; echo "$TORCH_SPEC $LMMS_EVAL_SPEC $DEV_TOOLS"; }
STAMP="$VENV/.cos-install-stamp"
want="$(stamp_inputs | sha256sum | cut -d' ' -f1)"

if [ ! -x "$VENV/bin/python" ]; then
  echo "[env] creating virtual environment $VENV"
  "$PY" -m venv "$VENV"
fi
if [ "$(cat "$STAMP" 2>/dev/null)" != "$want" ]; then
  t0=$(date +%s)
  # pip's resolver complains about lmms-eval's declared-but-unused requirements (torchvision, timm,
  # wandb, ...): expected, since lmms-eval is installed with --no-deps; those lines are summarised.
  pip_() {
    local out rc=0
    out=$("$VENV/bin/python" -m pip --disable-pip-version-check -q "$@" 2>&1) || rc=$?
    printf '%s\n' "$out" | grep -vE "is ignored: it is neither|^lmms-eval [0-9.]+ requires |dependency resolver does not currently take|^$" || true
    [ "$rc" -eq 0 ] || { echo "[env] error: pip $* failed (exit $rc)" >&2; return "$rc"; }
  }
  echo "[env] installing $TORCH_SPEC (CPU build first, so nothing later pulls a CUDA torch)"
  pip_ install "$TORCH_SPEC"
  echo "[env] installing $LMMS_EVAL_SPEC without its declared deps (torchvision/timm)"
  pip_ install --no-deps "$LMMS_EVAL_SPEC"
  echo "[env] installing this project (pip install -e .) and $DEV_TOOLS; lmms-eval's unused declared requirements stay out"
  # shellcheck disable=SC2086
  pip_ install -e "$REPO" $DEV_TOOLS
  # Guard: these must never be present beside CPU torch (see ../shared notes / README).
  "$VENV/bin/python" -m pip uninstall -y -q torchvision timm >/dev/null 2>&1 || true
  "$VENV/bin/python" - <<'PY'
import importlib.util, sys
import torch
bad = [m for m in ("torchvision", "timm") if importlib.util.find_spec(m)]
if bad:
    sys.exit(f"[env] error: {bad} installed; they break the CPU stack")
print(f"[env] torch {torch.__version__} (cuda build: {torch.version.cuda is not None})")
PY
  echo "$want" > "$STAMP"
  echo "[env] ready in $(( $(date +%s) - t0 )) s"
else
  echo "[env] reusing $VENV"
fi
export PATH="$VENV/bin:$PATH"
