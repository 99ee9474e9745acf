"""Invertible, Jacobian-carrying preprocessing between flux units and the flow's space.

The density model never sees raw pixels: every image ``x`` (flux units, shape
``(batch, B, H, W)``) is mapped to ``y = T(x)`` before the flow, and the model reports

.. math:: \\log p_X(x) = \\log p_Y(T(x)) + \\log\\left|\\det \\frac{\\partial T}{\\partial x}\\right|,

so scores are densities *in the ImageSet's flux units* and models with different
preprocessing are comparable. The default chain is

1. :class:`BandScale` -- per band ``u = (x - shift_b) / scale_b`` with ``scale_b`` the
   typical sky-noise sigma of band ``b`` (flux units), so that ``u`` is in noise sigmas;
2. :class:`AsinhStretch` -- ``y = a * asinh(u / a)`` with softening ``a`` (noise sigmas):
   linear for ``|u| << a`` (noise keeps unit variance), logarithmic for bright cores.

Both are element-wise, so ``log|det J|`` is a sum over pixels:
``-H W sum_b log(scale_b)`` and ``-sum log sqrt(1 + (u/a)^2)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from ..errors import ConfigError

__all__ = ["AsinhStretch", "BandScale", "Chain", "Transform", "build_transform"]


class Transform(nn.Module):
    """An invertible element-wise map with its log-abs-det-Jacobian.

    Subclasses implement :meth:`forward` (flux side -> flow side), :meth:`inverse`
    and :meth:`log_abs_det_jacobian` (``(batch,)``, natural log, of the forward map
    evaluated at ``x``).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Map ``x`` towards the flow's input space."""
        raise NotImplementedError

    def inverse(self, y: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        """Map ``y`` back towards flux units."""
        raise NotImplementedError

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        """``log|det dT/dx|`` at ``x``, shape ``(batch,)``, in nats."""
        raise NotImplementedError

    def forward_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(T(x), log|det dT/dx|)`` in one call."""
        return self.forward(x), self.log_abs_det_jacobian(x)

    def describe(self) -> dict[str, Any]:  # pragma: no cover - abstract
        """JSON-serialisable description (kind and parameters)."""
        raise NotImplementedError


class BandScale(Transform):
    """Per-band affine map ``u = (x - shift_b) / scale_b``.

    Parameters
    ----------
    scale : sequence of float
        Per-band scale in flux units (e.g. the sky-noise sigma); must be positive.
    shift : sequence of float, optional
        Per-band offset in flux units (default 0).
    """

    def __init__(self, scale: Sequence[float], shift: Sequence[float] | None = None) -> None:
        super().__init__()
        scale_t = torch.as_tensor(list(scale), dtype=torch.float64)
        if scale_t.ndim != 1 or not bool(torch.all(torch.isfinite(scale_t) & (scale_t > 0))):
            msg = f"BandScale needs positive finite per-band scales, got {list(scale)}"
            raise ConfigError(msg)
        shift_t = torch.zeros_like(scale_t) if shift is None else torch.as_tensor(
            list(shift), dtype=torch.float64)
        if shift_t.shape != scale_t.shape:
            msg = f"BandScale: shift has {shift_t.numel()} bands, scale {scale_t.numel()}"
            raise ConfigError(msg)
        self.register_buffer("scale", scale_t.float())
        self.register_buffer("shift", shift_t.float())

    def _view(self, t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        return t.to(dtype=like.dtype, device=like.device).view(1, -1, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - shift) / scale`` per band."""
        return (x - self._view(self.shift, x)) / self._view(self.scale, x)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``y * scale + shift`` per band."""
        return y * self._view(self.scale, y) + self._view(self.shift, y)

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """``-H W sum_b log(scale_b)`` for every image of the batch."""
        hw = x.shape[-1] * x.shape[-2]
        val = -hw * torch.log(self.scale.to(dtype=x.dtype, device=x.device)).sum()
        return val.expand(x.shape[0])

    def describe(self) -> dict[str, Any]:
        """Kind and per-band parameters (flux units)."""
        return {"kind": "band_scale", "scale": self.scale.tolist(), "shift": self.shift.tolist()}


class AsinhStretch(Transform):
    """``y = a * asinh(u / a)`` element-wise, with softening ``a`` in input units.

    Parameters
    ----------
    softening : float
        ``a`` > 0; the map is the identity to first order for ``|u| << a``.
    """

    def __init__(self, softening: float) -> None:
        super().__init__()
        if not (math.isfinite(softening) and softening > 0):
            msg = f"AsinhStretch softening must be positive, got {softening}"
            raise ConfigError(msg)
        self.softening = float(softening)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``a asinh(x / a)``."""
        a = self.softening
        return a * torch.asinh(x / a)

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """``a sinh(y / a)``."""
        a = self.softening
        return a * torch.sinh(y / a)

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """``-1/2 sum log(1 + (x/a)^2)`` over all pixels of each image."""
        r = x / self.softening
        return -0.5 * torch.log1p(r * r).flatten(1).sum(1)

    def describe(self) -> dict[str, Any]:
        """Kind and softening (in the units of its input, here noise sigmas)."""
        return {"kind": "asinh", "softening": self.softening}


class Chain(Transform):
    """Apply transforms in order; log-dets add up."""

    def __init__(self, transforms: Sequence[Transform]) -> None:
        super().__init__()
        self.transforms = nn.ModuleList(transforms)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Apply every transform in order."""
        for t in self.transforms:
            x = t(x)
        return x

    def inverse(self, y: torch.Tensor) -> torch.Tensor:
        """Invert every transform in reverse order."""
        for t in reversed(self.transforms):
            y = t.inverse(y)
        return y

    def forward_and_log_det(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Transformed tensor and the summed ``log|det J|`` (batch,)."""
        total = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for t in self.transforms:
            x, ld = t.forward_and_log_det(x)
            total = total + ld
        return x, total

    def log_abs_det_jacobian(self, x: torch.Tensor) -> torch.Tensor:
        """Summed ``log|det J|`` of the chain at ``x`` (batch,)."""
        return self.forward_and_log_det(x)[1]

    def describe(self) -> dict[str, Any]:
        """The list of steps."""
        return {"kind": "chain", "steps": [t.describe() for t in self.transforms]}


def build_transform(spec: dict[str, Any]) -> Transform:
    """Rebuild a transform from :meth:`Transform.describe` output.

    Raises
    ------
    ConfigError
        For an unknown ``kind``.
    """
    kind = spec.get("kind")
    if kind == "chain":
        return Chain([build_transform(s) for s in spec["steps"]])
    if kind == "band_scale":
        return BandScale(spec["scale"], spec.get("shift"))
    if kind == "asinh":
        return AsinhStretch(spec["softening"])
    msg = f"unknown preprocessing kind {kind!r}; expected chain, band_scale or asinh"
    raise ConfigError(msg)
