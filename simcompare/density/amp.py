"""Mixed-precision training: the autocast context, the float16 GradScaler, the calibration.

Training uses the same rule as scoring (:func:`simcompare.inference.calibrate_precision`):
reduced precision is kept for a model only where its log_prob on a calibration batch
agrees with float32 within :data:`simcompare.inference.AMP_TOLERANCE` (1e-3) relative;
``auto`` is float32 on CPU and, on CUDA, bfloat16 then float16. torch is imported inside
the functions.
"""

from __future__ import annotations

import contextlib
import logging
import math
from typing import Any

import numpy as np

__all__ = ["autocast", "choose_precision", "grad_scaler"]

log = logging.getLogger(__name__)


def autocast(device_type: str, dtype: Any) -> Any:
    """``torch.autocast`` for ``dtype`` on ``device_type``; no-op for None (float32)."""
    import torch

    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device_type, dtype=dtype)


def grad_scaler(precision: str, device: Any) -> Any:
    """A GradScaler for float16 training (None for float32 and bfloat16, which need none)."""
    import torch

    if precision != "float16":
        return None
    amp = getattr(torch, "amp", None)
    if amp is not None and hasattr(amp, "GradScaler"):
        return amp.GradScaler(device.type)
    return torch.cuda.amp.GradScaler()  # pragma: no cover - torch < 2.3


def choose_precision(model: Any, calib: np.ndarray, precision: str, device_type: str,
                     label: str, tolerance: float | None = None) -> tuple[str, float]:
    """The autocast precision to train ``model`` in, decided on a calibration batch.

    As in scoring (:func:`simcompare.inference.calibrate_precision`): ``auto`` is float32
    on CPU and on CUDA the first of bfloat16 and float16 whose log_prob on ``calib``
    agrees with float32 within ``tolerance`` relative (default
    :data:`simcompare.inference.AMP_TOLERANCE`); a named reduced precision is tried on any
    device. A precision that fails the check is not used (logged); float32 then.

    Parameters
    ----------
    model : DensityModel
        The initialised model (its weights are not changed).
    calib : ndarray, (n, B, H, W)
        The calibration batch (prepared images).
    precision : {"auto", "float32", "bfloat16", "float16"}
    device_type : str
        ``model``'s device type (``"cuda"`` or ``"cpu"``).
    label : str
        Name of the model in the log lines.
    tolerance : float, optional

    Returns
    -------
    (str, float)
        The precision used and the relative error measured for the last precision
        tried (NaN when none was tried).
    """
    import torch

    from ..inference import AMP_TOLERANCE, _precision_candidates, _relative_error

    tolerance = AMP_TOLERANCE if tolerance is None else tolerance
    candidates = _precision_candidates(precision, device_type)
    if not candidates or not len(calib):
        return "float32", math.nan
    x = torch.from_numpy(np.ascontiguousarray(calib, np.float32)).to(model.device)
    err = math.nan
    with torch.no_grad():
        ref = model.log_prob(x).double().cpu().numpy()
        for cand in candidates:
            try:
                with autocast(device_type, getattr(torch, cand)):
                    lp = model.log_prob(x).double().cpu().numpy()
            except RuntimeError as exc:
                log.warning("%s: %s autocast failed on %s (%s); not used", label, cand,
                            device_type, exc)
                continue
            err = _relative_error(lp, ref)
            if err <= tolerance:
                log.info("%s: training in %s autocast: log_prob within %.2g relative of "
                         "float32 on %d calibration images", label, cand, err, len(x))
                return cand, err
            log.warning("%s: %s autocast differs from float32 by %.2g relative (> %.2g) on "
                        "%d calibration images; not used", label, cand, err, tolerance, len(x))
    log.warning("%s: training in float32 (reduced precision %s did not pass calibration)",
                label, precision)
    return "float32", err
