#!/usr/bin/env bash
# Shared set-up of the device checks (scripts/gpu_check.sh, scripts/gpu_full_bench.sh); source it, don't run it.
# On a bare GPU machine without network: installs the carried wheels in .whl/ (if any) into a temporary folder,
# puts this checkout's packages on PYTHONPATH, keeps everything offline, and prints the card and library versions
# (also to $1 when given).
if ls .whl/*.whl >/dev/null 2>&1; then
  SITE="$(mktemp -d)"
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl || exit 1
  export PYTHONPATH="$SITE:${PYTHONPATH:-}"
fi
export PYTHONPATH="$PWD:$PWD/runtime:$PWD/lmms-eval:${PYTHONPATH:-}" PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c "import torch, transformers; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)"
} | tee "${1:-/dev/null}"
