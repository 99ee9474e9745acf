"""Fast batched log-density scoring on CPU or CUDA.

:func:`log_prob_batched` runs a :class:`~simcompare.density.DensityModel` over a
stack of images under ``torch.inference_mode`` (no autograd bookkeeping), in float32,
on CUDA when present (``device="auto"``). By default it scores with a frozen copy of
the model (:func:`compile_for_inference`, see :mod:`simcompare.density.frozen`): fixed
pre-folded weights, channels-last activations, fused convolution + ReLU and each batch
cut into one concurrently scored shard per thread on CPU; the trained model itself is
not modified. On an out-of-memory error the batch size is
halved and the batch retried.

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ._optional import progress as _progress
from .errors import ConfigError, SimcompareError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .density.frozen import FrozenDensity
    from .density.model import DensityModel

__all__ = ["CPU_BATCH_LIMIT", "compile_for_inference", "is_out_of_memory", "log_prob_batched",
           "prepare_for_scoring", "resolve_device"]

log = logging.getLogger(__name__)

#: Largest batch the frozen scorer uses on CPU. Measured on a 2-core AVX-512 machine with
#: the default 5x64x64 model (benchmarks/score.py --batch 64 --batches 32,16,8), batches
#: cut into two concurrently scored shards: 32 images per batch 39 images/s, 16 36, 8 30;
#: without the limit, a batch of 64 was no faster than 32 and needs twice the memory.
CPU_BATCH_LIMIT = 32


def resolve_device(device: str | Any = "auto") -> torch.device:
    """``"auto"`` -> CUDA when available, else CPU; ``"cpu"``/``"cuda"``/``"cuda:N"`` as given.

    Raises
    ------
    ConfigError
        For an unknown name, or ``cuda`` on a machine without a usable GPU.
    """
    import torch

    if isinstance(device, torch.device):
        return device
    name = str(device).lower()
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            msg = f"device {device!r} requested but no CUDA GPU is available; use --device cpu or auto"
            raise ConfigError(msg)
        return torch.device(name)
    msg = f"unknown device {device!r}; use auto, cpu or cuda"
    raise ConfigError(msg)


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether ``exc`` is a (CUDA or allocator) out-of-memory error."""
    import torch

    if isinstance(exc, torch.cuda.OutOfMemoryError):
        return True
    text = str(exc).lower()
    return isinstance(exc, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def prepare_for_scoring(model: DensityModel, device: torch.device) -> DensityModel:
    """Move ``model`` to ``device`` in eval mode, float32, channels-last on CPU."""
    import torch

    model.to(device=device, dtype=torch.float32)
    model.eval()
    model.set_channels_last(device.type == "cpu")
    return model


def compile_for_inference(model: DensityModel, *, device: Any = "auto",
                          use_torch_compile: bool = False) -> FrozenDensity:
    """Frozen scoring copy of ``model`` on ``device`` (the model itself is unchanged).

    Parameters
    ----------
    model : DensityModel
        An initialised model.
    device : {"auto", "cpu", "cuda"} or torch.device
    use_torch_compile : bool
        Also run the flow through ``torch.compile`` (opt-in: the first call compiles
        for about a minute, and each new batch shape compiles again).

    Returns
    -------
    FrozenDensity
        ``log_prob(x)`` in nats per image, equal to ``model.log_prob(x)`` to float32
        rounding, without gradients.
    """
    from .density.frozen import FrozenDensity

    frozen = FrozenDensity(model, device=resolve_device(device))
    if use_torch_compile:
        frozen.enable_compile()
    return frozen


def log_prob_batched(
    model: DensityModel | FrozenDensity, images: np.ndarray, *, batch_size: int = 64,
    device: Any = "auto", progress: bool = False, desc: str = "scoring", frozen: bool = True,
) -> np.ndarray:
    """``model.log_prob`` over ``images`` in batches; returns float64 nats, shape ``(N,)``.

    Parameters
    ----------
    model : DensityModel or FrozenDensity
        An initialised model. A DensityModel is frozen for scoring
        (:func:`compile_for_inference`) unless ``frozen=False``, in which case it is
        moved to ``device``, put in eval mode and scored directly (channels-last on
        CPU). A FrozenDensity is used as it is (``device`` is then its device).
    images : ndarray, (N, B, H, W)
        Flux units, all pixels finite (fill masked pixels first).
    batch_size : int
        Starting batch size; halved automatically on out-of-memory. The frozen scorer
        uses at most :data:`CPU_BATCH_LIMIT` images per batch on CPU (faster there).
    device : {"auto", "cpu", "cuda"} or torch.device
    progress : bool
        Show a progress bar.
    frozen : bool
        Score with a frozen copy (default; 1.7-2.3x as fast as normflows on a
        2-core CPU, median 1.8, see ``benchmarks/score.py``).

    Returns
    -------
    ndarray of float64
        Log-density in nats; non-finite results are returned as NaN.
    """
    import torch

    if batch_size < 1:
        msg = f"batch_size must be >= 1, got {batch_size}"
        raise ConfigError(msg)
    from .density.frozen import FrozenDensity

    if isinstance(model, FrozenDensity):
        scorer, dev = model, model.device
    elif frozen:
        dev = resolve_device(device)
        scorer = compile_for_inference(model, device=dev)
    else:
        dev = resolve_device(device)
        scorer = prepare_for_scoring(model, dev)
    n = len(images)
    out = np.full(n, np.nan)
    start, bs = 0, int(batch_size)
    if isinstance(scorer, FrozenDensity) and dev.type == "cpu":
        bs = min(bs, CPU_BATCH_LIMIT)
    n_batches = -(-n // bs)
    with torch.inference_mode():
        bar = iter(_progress(range(n_batches), desc=desc, total=n_batches, enable=progress,
                             unit="batch"))
        while start < n:
            stop = min(n, start + bs)
            try:
                x = torch.from_numpy(np.ascontiguousarray(images[start:stop], np.float32)).to(dev)
                lp = scorer.log_prob(x)
            except (RuntimeError, torch.cuda.OutOfMemoryError) as exc:
                if not is_out_of_memory(exc):
                    raise
                if dev.type == "cuda":
                    torch.cuda.empty_cache()
                if bs == 1:
                    msg = "out of memory scoring a single image; use a smaller model or the CPU"
                    raise SimcompareError(msg) from None
                bs = max(1, bs // 2)
                log.warning("out of memory at batch size %d; retrying with %d", bs * 2, bs)
                continue
            out[start:stop] = lp.double().cpu().numpy()
            start = stop
            next(bar, None)
        for _ in bar:  # close the bar
            pass
    out[~np.isfinite(out)] = np.nan
    return out
