"""One device rule for every loader: what a device string means, normalised once.

``accelerate`` reports the CPU as ``cpu:0`` when several processes run with ``ACCELERATE_USE_CPU=1``
(or ``accelerate launch --cpu``), and the safetensors loader rejects that string (``device cpu:0 is
invalid``). Every model, scorer and checkpoint loader gets its device through :func:`normalise_device`.
"""

from __future__ import annotations

import torch

from cos.errors import ConfigError

__all__ = ["normalise_device"]


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
