"""The PyTorch set-up every torch-based codec shares: importing torch with a clear error, the
device choice, seeding and the thread count. torch is imported only when a function needs it."""

from __future__ import annotations

import sys

import numpy as np

from .errors import CodecUnavailable, VolbenchError


def import_torch(codec: str):
    """Import torch, or raise CodecUnavailable naming what to install."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise CodecUnavailable(
            f"codec {codec}: PyTorch is not importable ({exc}); install torch (see requirements.txt)"
        ) from None
    return torch


def resolve_device(device: str | None):
    """'auto' -> CUDA when available, else CPU; an explicit 'cuda' without a GPU is a clear error."""
    import torch

    dev = (device or "auto").strip().lower()
    if dev == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if dev.startswith("cuda") and not torch.cuda.is_available():
        raise VolbenchError(f"device {device!r} requested but CUDA is not available; use device: auto or cpu")
    try:
        return torch.device(dev)
    except RuntimeError:
        raise VolbenchError(f"unknown device {device!r}; use auto, cpu, cuda or cuda:N") from None


def seed_everything(seed: int) -> None:
    """Seed numpy's global generator and, when torch is already imported (importing it costs
    seconds), torch's CPU and CUDA generators (torch.manual_seed seeds every device)."""
    np.random.seed(int(seed) % (2**32))
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.manual_seed(int(seed))


def set_threads(threads: int) -> None:
    """torch's intra-op thread count (left alone for threads <= 0)."""
    import torch

    if threads and threads > 0:
        torch.set_num_threads(int(threads))
