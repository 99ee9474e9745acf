"""Fast batched log-density scoring on CPU or CUDA.

:func:`log_prob_batched` runs a :class:`~simcompare.density.DensityModel` over a
stack of images under ``torch.inference_mode`` (no autograd bookkeeping), in float32,
on CUDA when present (``device="auto"``). By default it scores with a frozen copy of
the model (:func:`compile_for_inference`, see :mod:`simcompare.density.frozen`): fixed
pre-folded weights, channels-last activations, fused convolution + ReLU and each batch
cut into one concurrently scored shard per thread on CPU; the trained model itself is
not modified. On an out-of-memory error the batch size is
halved and the batch retried.

On CUDA two more choices are made per scorer. The batch size can be measured
(:func:`auto_batch_size`: the peak memory of one small batch against the device's free
memory). Reduced precision (bfloat16 or float16 autocast) is used only where a
calibration batch scores within :data:`AMP_TOLERANCE` (1e-3) relative of float32
(:func:`calibrate_precision`); otherwise scoring stays in float32 and the reason is
logged. ``torch.compile`` stays opt-in (:func:`compile_for_inference`).

torch is imported inside the functions, so importing this module is cheap.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from ._progress import progress as _progress
from .errors import ConfigError, SimcompareError

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .density.frozen import FrozenDensity
    from .density.model import DensityModel

__all__ = ["AMP_TOLERANCE", "CPU_BATCH_LIMIT", "PRECISIONS", "auto_batch_size",
           "calibrate_precision", "compile_for_inference", "is_out_of_memory",
           "log_prob_batched", "prepare_for_scoring", "resolve_batch_size", "resolve_device"]

log = logging.getLogger(__name__)

#: Largest batch the frozen scorer uses on CPU. Measured on a 2-core AVX-512 machine with
#: the default 5x64x64 model (benchmarks/score.py --batch 64 --batches 32,16,8), batches
#: cut into two concurrently scored shards: 32 images per batch 39 images/s, 16 36, 8 30;
#: without the limit, a batch of 64 was no faster than 32 and needs twice the memory.
CPU_BATCH_LIMIT = 32

#: Scoring precisions: ``auto`` is float32 on CPU and, on CUDA, the first of bfloat16 and
#: float16 autocast that passes calibration (:func:`calibrate_precision`), else float32.
PRECISIONS = ("auto", "float32", "bfloat16", "float16")

#: Largest relative difference from float32 log_prob that reduced precision may make on
#: the calibration batch (max over its images of ``|lp - lp32| / |lp32|``).
AMP_TOLERANCE = 1e-3

#: Images in the calibration batch (the first ones scored).
CALIBRATION_IMAGES = 16

#: Largest batch :func:`auto_batch_size` picks, and the share of free GPU memory it fills.
AUTO_BATCH_MAX = 4096
AUTO_BATCH_MEMORY_FRACTION = 0.7


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
        Also run the flow through ``torch.compile``. Opt-in: the first call compiles
        for about a minute, and each new batch shape (every different last batch)
        compiles again, so it pays only for long runs of equal batches, in practice
        on a GPU with many thousands of images; on a CPU the frozen scorer's fused
        convolutions and threaded shards are already the fast path (compiled flows
        are scored unsharded).

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


def _check_precision(precision: str) -> str:
    name = str(precision).lower()
    if name not in PRECISIONS:
        msg = f"unknown precision {precision!r}; use {', '.join(PRECISIONS)}"
        raise ConfigError(msg)
    return name


def _precision_candidates(precision: str, device_type: str) -> tuple[str, ...]:
    """Reduced precisions to try, in order, for ``precision`` on a device of that type."""
    if precision == "float32" or (precision == "auto" and device_type != "cuda"):
        return ()
    return ("bfloat16", "float16") if precision == "auto" else (precision,)


def _relative_error(lp: np.ndarray, ref: np.ndarray) -> float:
    ok = np.isfinite(ref)
    if not ok.any():
        return float("nan")
    if not np.isfinite(lp[ok]).all():
        return float("inf")
    return float(np.max(np.abs(lp[ok] - ref[ok]) / np.maximum(np.abs(ref[ok]), 1e-30)))


def calibrate_precision(scorer: FrozenDensity, images: np.ndarray, precision: str = "auto",
                        *, tolerance: float = AMP_TOLERANCE) -> tuple[str, float]:
    """Choose the autocast precision of ``scorer`` on a calibration batch and set it.

    Reduced precision is kept only if its log_prob on ``images`` agrees with float32
    within ``tolerance`` relative (the largest ``|lp - lp32| / |lp32|`` over the
    batch); otherwise the scorer stays in float32 and the reason is logged.

    Parameters
    ----------
    scorer : FrozenDensity
        The scoring copy; its ``amp_dtype`` is set to the choice.
    images : ndarray, (n, B, H, W)
        The calibration batch (flux units, finite).
    precision : {"auto", "float32", "bfloat16", "float16"}
        ``auto``: float32 on CPU; on CUDA bfloat16, then float16, the first that
        passes. A named reduced precision is tried on any device (CPU autocast
        supports bfloat16).
    tolerance : float

    Returns
    -------
    (str, float)
        The precision used (``"float32"`` after a fall-back) and the relative error
        measured for the last precision tried (NaN when none was tried).
    """
    import torch

    name = _check_precision(precision)
    scorer.amp_dtype = None
    candidates = _precision_candidates(name, scorer.device.type)
    if not candidates:
        return "float32", float("nan")
    x = torch.from_numpy(np.ascontiguousarray(images, np.float32)).to(scorer.device)
    with torch.inference_mode():
        ref = scorer.log_prob(x).double().cpu().numpy()
    err = float("nan")
    for cand in candidates:
        scorer.amp_dtype = getattr(torch, cand)
        try:
            with torch.inference_mode():
                lp = scorer.log_prob(x).double().cpu().numpy()
        except RuntimeError as exc:
            log.warning("%s autocast failed on %s (%s); not used", cand, scorer.device, exc)
            scorer.amp_dtype = None
            continue
        err = _relative_error(lp, ref)
        if err <= tolerance:
            log.info("scoring in %s autocast: log_prob within %.2g relative of float32 "
                     "on %d calibration images", cand, err, len(x))
            return cand, err
        log.warning("%s autocast differs from float32 by %.2g relative (> %.2g) on %d "
                    "calibration images; not used", cand, err, tolerance, len(x))
    scorer.amp_dtype = None
    log.warning("scoring in float32 (reduced precision %s did not pass calibration)", name)
    return "float32", err


def auto_batch_size(scorer: FrozenDensity, images: np.ndarray, *, device: Any = None,
                    probe: int = 8, fraction: float = AUTO_BATCH_MEMORY_FRACTION,
                    limit: int = AUTO_BATCH_MAX) -> int:
    """Batch size that fills ``fraction`` of the free memory of a CUDA device.

    On CUDA, one batch of ``probe`` images is scored and its peak allocation
    (``torch.cuda.max_memory_allocated`` above what was allocated before) gives the
    memory per image; the batch is ``fraction`` of ``torch.cuda.mem_get_info()``'s free
    bytes over that, between 1 and ``limit``. On CPU it is :data:`CPU_BATCH_LIMIT`.

    Parameters
    ----------
    scorer : FrozenDensity
    images : ndarray, (N, B, H, W)
        The first ``probe`` images are scored.
    device : torch.device, optional
        Default: the scorer's device.
    probe, fraction, limit
        See above.

    Returns
    -------
    int
    """
    import torch

    dev = torch.device(device) if device is not None else scorer.device
    if dev.type != "cuda":
        return CPU_BATCH_LIMIT
    probe = max(1, min(int(probe), len(images)))
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(dev)
    before = torch.cuda.memory_allocated(dev)
    x = torch.from_numpy(np.ascontiguousarray(images[:probe], np.float32)).to(scorer.device)
    with torch.inference_mode():
        scorer.log_prob(x)
    per_image = max(1.0, (torch.cuda.max_memory_allocated(dev) - before) / probe)
    free, _total = torch.cuda.mem_get_info(dev)
    bs = int(max(1, min(int(limit), fraction * free // per_image)))
    log.info("automatic batch size %d (%.1f MiB per image, %.0f MiB free on %s)", bs,
             per_image / 2**20, free / 2**20, dev)
    return bs


def resolve_batch_size(batch_size: int | str, scorer: Any, images: np.ndarray,
                       device: Any) -> int:
    """An integer batch size: ``"auto"`` -> :func:`auto_batch_size` (frozen scorers) or 64.

    A frozen scorer on CPU uses at most :data:`CPU_BATCH_LIMIT` images per batch.

    Parameters
    ----------
    batch_size : int or "auto"
        A whole number of at least 1, or ``"auto"``.
    scorer : FrozenDensity or DensityModel
        What will score the images (only a frozen scorer is measured).
    images : ndarray, (N, B, H, W)
        The images to score; ``"auto"`` on CUDA scores a few of them.
    device : torch.device or str
        Where they are scored.

    Returns
    -------
    int
    """
    import torch

    from .density.frozen import FrozenDensity

    dev = torch.device(device)
    frozen = isinstance(scorer, FrozenDensity)
    if isinstance(batch_size, str):
        if batch_size.lower() != "auto":
            msg = f"batch_size must be a whole number or 'auto', got {batch_size!r}"
            raise ConfigError(msg)
        if not frozen:
            return 64
        bs = auto_batch_size(scorer, images, device=dev) if len(images) else CPU_BATCH_LIMIT
    else:
        if isinstance(batch_size, bool) or int(batch_size) < 1:
            msg = f"batch_size must be >= 1, got {batch_size}"
            raise ConfigError(msg)
        bs = int(batch_size)
    if frozen and dev.type == "cpu":
        bs = min(bs, CPU_BATCH_LIMIT)
    return bs


def log_prob_batched(
    model: DensityModel | FrozenDensity, images: np.ndarray, *, batch_size: int | str = 64,
    device: Any = "auto", progress: bool = False, desc: str = "scoring", frozen: bool = True,
    precision: str = "float32", use_torch_compile: bool = False,
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
    batch_size : int or "auto"
        Starting batch size; halved automatically on out-of-memory. The frozen scorer
        uses at most :data:`CPU_BATCH_LIMIT` images per batch on CPU (faster there).
        ``"auto"``: from the free GPU memory on CUDA (:func:`auto_batch_size`),
        :data:`CPU_BATCH_LIMIT` on CPU.
    device : {"auto", "cpu", "cuda"} or torch.device
    progress : bool
        Show a progress bar.
    frozen : bool
        Score with a frozen copy (default; 1.7-2.3x as fast as normflows on a
        2-core CPU, median 1.8, see ``benchmarks/score.py``).
    precision : {"float32", "auto", "bfloat16", "float16"}
        Autocast precision of a frozen scorer, kept only if the first
        :data:`CALIBRATION_IMAGES` images score within :data:`AMP_TOLERANCE` relative of
        float32 (:func:`calibrate_precision`); an unfrozen model scores in float32.
        A FrozenDensity passed in keeps its own setting unless this is not float32.
    use_torch_compile : bool
        Compile a newly frozen copy (see :func:`compile_for_inference` for when it pays).

    Returns
    -------
    ndarray of float64
        Log-density in nats; non-finite results are returned as NaN.
    """
    import torch

    from .density.frozen import FrozenDensity

    precision = _check_precision(precision)
    if not frozen and precision in ("bfloat16", "float16"):
        msg = f"precision {precision!r} needs the frozen scorer; use frozen=True or float32"
        raise ConfigError(msg)
    if isinstance(model, FrozenDensity):
        scorer, dev = model, model.device
    elif frozen:
        dev = resolve_device(device)
        scorer = compile_for_inference(model, device=dev, use_torch_compile=use_torch_compile)
    else:
        dev = resolve_device(device)
        scorer = prepare_for_scoring(model, dev)
    if isinstance(scorer, FrozenDensity) and len(images) and (
            precision != "float32" or scorer is not model):
        calibrate_precision(scorer, images[:CALIBRATION_IMAGES], precision)
    n = len(images)
    out = np.full(n, np.nan)
    start, bs = 0, resolve_batch_size(batch_size, scorer, images, dev)
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
