"""What a loader's ``device_map``, ``torch_dtype`` and ``attn_implementation`` mean (every model package)."""

from __future__ import annotations

import torch

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}
ATTN_IMPLEMENTATIONS = ("sdpa", "eager", "flash_attention_2")


def resolve_device(device_map: str | torch.device | int | None) -> torch.device:
    """``None``/``"cpu"`` -> cpu; ``"auto"`` -> cuda if available else cpu; any other device as given.

    ``"cpu:0"`` (accelerate's CPU device with several processes) is the CPU: safetensors rejects the index.
    """
    if device_map is None:
        return torch.device("cpu")
    if isinstance(device_map, str) and device_map == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if isinstance(device_map, (str, torch.device, int)):
        device = torch.device(device_map)
        return torch.device("cpu") if device.type == "cpu" else device
    raise ValueError(f"device_map must be None, 'auto' or a device such as 'cuda:0', got {device_map!r}")


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``None``/``"auto"`` -> float32 on CPU, float16 elsewhere (the released models' GPU dtype)."""
    if dtype is None or dtype == "auto":
        return torch.float32 if device.type == "cpu" else torch.float16
    if isinstance(dtype, str):
        name = dtype.removeprefix("torch.")
        if name not in DTYPES:
            raise ValueError(f"dtype {dtype!r} is not one of {', '.join(DTYPES)}")
        return DTYPES[name]
    if dtype not in DTYPES.values():
        raise ValueError(f"dtype {dtype} is not one of {', '.join(DTYPES)}")
    return dtype


def check_attn_implementation(name: str) -> None:
    """Refuse an unknown kernel, and ``flash_attention_2`` without the flash-attn package."""
    if name not in ATTN_IMPLEMENTATIONS:
        raise ValueError(f"attn_implementation must be one of {ATTN_IMPLEMENTATIONS}, got {name!r}")
    if name == "flash_attention_2":
        from transformers.utils import is_flash_attn_2_available

        if not is_flash_attn_2_available():
            raise ValueError("attn_implementation='flash_attention_2' needs the flash-attn package; use 'sdpa'")


__all__ = ["ATTN_IMPLEMENTATIONS", "DTYPES", "check_attn_implementation", "resolve_device", "resolve_dtype"]
