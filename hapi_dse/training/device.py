"""Where ``hapi train`` computes: ``--accelerator auto|cpu|cuda`` and ``--amp/--no-amp``.

Mixed precision is bfloat16 autocast where the GPU supports it (Ampere and newer): bf16 has
float32's exponent range, so gradients cannot underflow and no loss scaling is needed, and
those GPUs run it as fast as float16. Older GPUs get float16 with a ``GradScaler``. Only the
training steps run under autocast; validation, calibration and the cached exit statistics
are computed in float32, and everything written (weights, statistics) is on the CPU.
On the CPU nothing changes: same operations, bit-identical results for a seed.

It is off unless asked for (``--amp``): on an H200 it made the bundled example's ResNet-32
slower, not faster (an IC-only epoch of its 75 heads 26 s with bf16 against 21-22 s in
float32; backbone epochs 5.7-6.5 s against 5.2-5.9 s), as networks this small are bound by
the per-step launch overhead, not by arithmetic. Larger networks are where it helps.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from hapi_dse.errors import SettingError

ACCELERATORS = ("auto", "cpu", "cuda")


@dataclass(frozen=True)
class Accelerator:
    """The resolved device, its name, and the autocast dtype (``None``: float32 only)."""

    device: str  # "cpu" or "cuda"
    name: str
    amp_dtype: str | None = None  # "bfloat16" or "float16"

    def to_dict(self) -> dict[str, Any]:
        return {"device": self.device, "name": self.name, "amp": self.amp_dtype}


def select_accelerator(
    accelerator: str,
    amp: bool | None,
    *,
    cuda: bool | None = None,
    cuda_name: str = "",
    bf16: bool | None = None,
) -> Accelerator:
    """Resolve ``--accelerator`` and ``--amp`` (``None``: off).

    ``cuda``, ``cuda_name`` and ``bf16`` describe the machine; left out, torch is asked.
    """
    if accelerator not in ACCELERATORS:
        raise SettingError(
            "accelerator", f"{accelerator!r}: expected one of {', '.join(ACCELERATORS)}"
        )
    if cuda is None:
        import torch

        cuda = torch.cuda.is_available()
        if cuda:
            cuda_name = torch.cuda.get_device_name()
            bf16 = torch.cuda.is_bf16_supported()
    if accelerator == "cuda" and not cuda:
        import torch

        build = f"CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
        raise SettingError(
            "accelerator",
            f"cuda: torch {torch.__version__} ({build}) sees no CUDA device; "
            "use {accelerator} cpu (or auto)",
            ("accelerator",),
        )
    device = "cuda" if accelerator == "cuda" or (accelerator == "auto" and cuda) else "cpu"
    if device == "cpu":
        if amp:
            raise SettingError("amp", ": mixed precision is for CUDA only; this run is on the CPU")
        return Accelerator("cpu", "cpu")
    dtype = ("bfloat16" if bf16 else "float16") if amp else None
    return Accelerator("cuda", cuda_name or "cuda", dtype)
