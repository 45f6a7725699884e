"""One device and dtype rule for every loader: what a device string and ``auto`` dtype mean, decided once.

``accelerate`` reports the CPU as ``cpu:0`` when several processes run with ``ACCELERATE_USE_CPU=1``
(or ``accelerate launch --cpu``), and the safetensors loader rejects that string (``device cpu:0 is
invalid``). Every model, scorer and checkpoint loader gets its device through :func:`normalise_device`.
"""

from __future__ import annotations

import torch

from cos.errors import ConfigError

__all__ = ["DTYPES", "normalise_device", "resolve_dtype"]

#: dtype names accepted wherever a dtype is an option (``auto`` resolved by :func:`resolve_dtype`)
DTYPES = {"float32": torch.float32, "fp32": torch.float32, "float16": torch.float16, "fp16": torch.float16,
          "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}


def normalise_device(device: str | torch.device | int | None) -> str:
    """A device as loaders accept it.

    ``None``, ``""`` and ``"auto"`` mean ``"cuda"`` when a GPU is visible, else ``"cpu"``; any CPU
    (``"cpu:0"``, ``torch.device("cpu", 0)``) is ``"cpu"``; an int is a CUDA index; everything else is
    ``str(torch.device(device))``.

    >>> normalise_device("cpu:0"), normalise_device(torch.device("cpu", 1)), normalise_device("cuda:1")
    ('cpu', 'cpu', 'cuda:1')
    """
    if device is None or (isinstance(device, str) and device.strip().lower() in ("", "auto")):
        return "cuda" if torch.cuda.is_available() else "cpu"
    if isinstance(device, bool):
        raise ConfigError(f"not a device: {device!r}")
    if isinstance(device, int):
        device = f"cuda:{device}"
    try:
        parsed = torch.device(device.strip() if isinstance(device, str) else device)
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"not a device: {device!r} ({err})") from None
    return "cpu" if parsed.type == "cpu" else str(parsed)


def resolve_dtype(dtype: str | torch.dtype | None, device: str | torch.device, gpu_default: torch.dtype | None = None) -> torch.dtype:
    """``auto`` (or None): float32 on a CPU; on a GPU ``gpu_default`` when given (LLaVA-1.5 was released in
    float16), else bfloat16 where supported, else float16. A name from :data:`DTYPES` or a torch dtype as is.

    >>> resolve_dtype("auto", "cpu"), resolve_dtype("bf16", "cpu")
    (torch.float32, torch.bfloat16)
    """
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype in (None, "auto"):
        if torch.device(normalise_device(device)).type != "cuda":
            return torch.float32
        if gpu_default is not None:
            return gpu_default
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if dtype not in DTYPES:
        raise ConfigError(f"torch_dtype={dtype!r}: expected one of {['auto', *DTYPES]}")
    return DTYPES[dtype]
