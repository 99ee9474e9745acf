"""``DensityModel``: a normflows multiscale Glow behind a small, explicit interface.

Direction convention: normflows' ``forward`` maps latent -> data; this adapter only
exposes the data-side view. :meth:`DensityModel.log_prob` takes images in the
ImageSet's flux units, applies the invertible preprocessing of
:mod:`simcompare.density.transforms` (adding its log|det J|), then the flow's exact
change of variables, and returns nats per image, shape ``(batch,)``.

Bits per dimension are derived without any 8-bit assumption:
``bits_per_dim = -log_prob / (D ln 2)`` with ``D = B H W``.
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .._io import atomic_path, write_json_atomic
from .._version import __version__
from ..errors import ConfigError, DataFormatError, DataNotFoundError, SimcompareError
from .transforms import AsinhStretch, BandScale, Chain, Transform, build_transform

__all__ = ["FORMAT_VERSION", "DensityModel", "bits_per_dim", "build_glow"]

log = logging.getLogger(__name__)

FORMAT_VERSION = 1


def build_glow(
    channels: int, size: int, *, levels: int, blocks: int, hidden: int, relu: bool = True,
) -> nn.Module:
    """The normflows multiscale Glow (unconditional DiagGaussian bases).

    Parameters
    ----------
    channels : int
        Number of bands B (any value; coupling channels are always even).
    size : int
        Stamp side in pixels; must be divisible by ``2**levels``.
    levels, blocks, hidden : int
        Multiscale levels L, Glow blocks per level K, hidden conv channels.

    Notes
    -----
    ``ConvNet2d`` uses ``nn.LeakyReLU(0.0)``, which equals ``nn.ReLU``; the ReLU is
    swapped in because it is markedly faster on CPU. The map is unchanged.
    ``relu=False`` keeps normflows' modules exactly as shipped (benchmark baseline).
    """
    import normflows as nf

    if levels < 1 or blocks < 1 or hidden < 1:
        msg = f"levels, blocks and hidden must be >= 1, got {levels}, {blocks}, {hidden}"
        raise ConfigError(msg)
    if size % (2**levels):
        msg = (f"stamp size {size} is not divisible by 2**levels = {2**levels}; "
               f"use fewer levels or a stamp size that is a multiple of {2**levels}")
        raise ConfigError(msg)
    c, length = channels, levels
    q0, merges, flows = [], [], []
    for i in range(length):
        with warnings.catch_warnings():
            # normflows 1.7 initialises the LU 1x1 convolutions with the deprecated
            # Tensor.lu; the result is the same, the warning is of no use to a user
            warnings.filterwarnings("ignore", message=r"torch\.lu is deprecated",
                                    category=UserWarning)
            flows_ = [nf.flows.GlowBlock(c * 2 ** (length + 1 - i), hidden,
                                         split_mode="channel", scale=True)
                      for _ in range(blocks)]
        flows_.append(nf.flows.Squeeze())
        flows.append(flows_)
        if i > 0:
            merges.append(nf.flows.Merge())
            s = size // 2 ** (length - i)
            latent = (c * 2 ** (length - i), s, s)
        else:
            s = size // 2**length
            latent = (c * 2 ** (length + 1), s, s)
        q0.append(nf.distributions.DiagGaussian(latent))
    model = nf.MultiscaleFlow(q0, flows, merges, class_cond=False)
    if not relu:
        return model
    for mod in model.modules():
        if isinstance(mod, nn.Sequential):
            for j, sub in enumerate(mod):
                if isinstance(sub, nn.LeakyReLU) and sub.negative_slope == 0.0:
                    mod[j] = nn.ReLU()
    return model


def bits_per_dim(log_prob_nats: Any, n_dim: int) -> Any:
    """``-log_prob / (D ln 2)``: bits per dimension in the flux units of the data."""
    return -log_prob_nats / (n_dim * math.log(2.0))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """``torch.save`` through a temporary file in the same folder, renamed into place."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def versions() -> dict[str, str]:
    """Versions of the packages that define the model's numbers."""
    import normflows
    import numpy

    return {"simcompare": __version__, "torch": torch.__version__,
            "normflows": getattr(normflows, "__version__", "unknown"),
            "numpy": numpy.__version__, "python": platform.python_version()}


class DensityModel(nn.Module):
    """Density of images in flux units: preprocessing + normflows multiscale Glow.

    Parameters
    ----------
    bands : int
        Number of bands B (flow channels).
    size : int
        Stamp side H = W in pixels (divisible by ``2**levels``).
    levels, blocks, hidden : int
        Glow architecture: levels (default 3), blocks per level (16), hidden channels (128).
    noise_sigma : sequence of float
        Per-band sky-noise sigma in flux units, used by the first preprocessing step.
    asinh_softening : float
        Softening of the asinh stretch in noise sigmas (default 10).
    preprocess : dict, optional
        A full :meth:`Transform.describe` record; overrides ``noise_sigma``/``asinh_softening``.
    metadata : dict, optional
        Free-form JSON (bands names, flux unit, seeds) stored in ``config.json``.

    Notes
    -----
    Glow's ActNorm layers initialise themselves from the first batch they see. A new
    model must be shown a representative *training* batch with :meth:`initialize`
    before it is scored; :meth:`log_prob` refuses to run otherwise. Saved models keep
    the initialised state.
    """

    def __init__(
        self, *, bands: int, size: int, levels: int = 3, blocks: int = 16, hidden: int = 128,
        noise_sigma: Any = None, asinh_softening: float = 10.0,
        preprocess: dict[str, Any] | None = None, metadata: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if preprocess is None:
            sigma = [1.0] * bands if noise_sigma is None else [float(s) for s in noise_sigma]
            if len(sigma) != bands:
                msg = f"noise_sigma has {len(sigma)} entries for {bands} bands"
                raise ConfigError(msg)
            transform: Transform = Chain([BandScale(sigma), AsinhStretch(asinh_softening)])
        else:
            transform = build_transform(preprocess)
        self.transform = transform
        self.flow = build_glow(bands, size, levels=levels, blocks=blocks, hidden=hidden)
        self.bands, self.size = int(bands), int(size)
        self.levels, self.blocks, self.hidden = int(levels), int(blocks), int(hidden)
        self.metadata = dict(metadata or {})
        self._initialized = False
        self._channels_last = False

    # ------------------------------------------------------------------ properties
    @property
    def n_dim(self) -> int:
        """D = B H W, the dimension of one image."""
        return self.bands * self.size * self.size

    @property
    def device(self) -> torch.device:
        """Device of the parameters."""
        return next(self.parameters()).device

    @property
    def config(self) -> dict[str, Any]:
        """Everything needed to rebuild the model (written to ``config.json``)."""
        return {"format_version": FORMAT_VERSION, "bands": self.bands, "size": self.size,
                "levels": self.levels, "blocks": self.blocks, "hidden": self.hidden,
                "preprocess": self.transform.describe(), "metadata": self.metadata,
                "architecture": "normflows.MultiscaleFlow of GlowBlock (split_mode=channel, "
                                "affine, LU 1x1 conv, ActNorm), DiagGaussian bases"}

    def __repr__(self) -> str:
        return (f"DensityModel(bands={self.bands}, size={self.size}, levels={self.levels}, "
                f"blocks={self.blocks}, hidden={self.hidden})")

    # ------------------------------------------------------------------ set-up
    def set_channels_last(self, enable: bool = True) -> DensityModel:
        """Use channels-last memory format for the convolutions (faster on CPU)."""
        fmt = torch.channels_last if enable else torch.contiguous_format
        self.flow.to(memory_format=fmt)
        self._channels_last = bool(enable)
        return self

    def _actnorms(self) -> list[nn.Module]:
        import normflows as nf

        return [m for m in self.flow.modules() if isinstance(m, nf.flows.ActNorm)]

    @property
    def initialized(self) -> bool:
        """Whether the ActNorm layers have been initialised from data."""
        if not self._initialized:
            self._initialized = all(bool(m.data_dep_init_done > 0) for m in self._actnorms())
        return self._initialized

    def initialize(self, x: torch.Tensor) -> None:
        """Initialise ActNorm layers from a batch of training images (flux units)."""
        if self.initialized:
            return
        with torch.no_grad():
            y = self._to_flow_input(x)[0]
            self.flow.log_prob(y, None)
        dev = self.device
        for m in self._actnorms():  # normflows stores the flag as a CPU tensor
            m.data_dep_init_done = torch.ones((), device=dev)
        self._initialized = True

    def _to_flow_input(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if x.ndim != 4 or x.shape[1] != self.bands or x.shape[2] != self.size \
                or x.shape[3] != self.size:
            msg = (f"expected images of shape (batch, {self.bands}, {self.size}, {self.size}), "
                   f"got {tuple(x.shape)}")
            raise ConfigError(msg)
        y, ld = self.transform.forward_and_log_det(x)
        if self._channels_last:
            y = y.contiguous(memory_format=torch.channels_last)
        return y, ld

    # ------------------------------------------------------------------ density
    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of images in flux units.

        Parameters
        ----------
        x : Tensor, shape (batch, B, H, W)
            Images in the ImageSet's flux units, on the model's device and dtype.

        Returns
        -------
        Tensor, shape (batch,)
            ``log p(x)`` in nats per image (flow log-density plus the preprocessing
            log|det J|). Differentiable unless called under ``torch.inference_mode``.
        """
        if not self.initialized:
            msg = ("the model's ActNorm layers are not initialised; call "
                   "model.initialize(training_batch) once (train() does this) before scoring")
            raise SimcompareError(msg)
        y, ld = self._to_flow_input(x)
        return self.flow.log_prob(y, None) + ld

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def freeze(self, *, device: str | torch.device | None = None,
               channels_last: bool | None = None, shards: int | None = None) -> Any:
        """Scoring-only copy with pre-folded weights (:class:`~simcompare.density.frozen.FrozenDensity`).

        The copy computes the same log-densities (to float32 rounding) 1.7-2.3x as
        fast as normflows on a 2-core CPU (median 1.8, ``benchmarks/score.py``),
        without gradients; this model is left unchanged.

        Parameters
        ----------
        device : str or torch.device, optional
            Device of the copy (default: this model's device).
        channels_last : bool, optional
            Channels-last activations (default: on CPU).
        shards : int, optional
            CPU only: parts of a batch scored concurrently, one thread each (default:
            torch's intra-op thread count); see :class:`~simcompare.density.frozen.FrozenDensity`.
        """
        from .frozen import FrozenDensity

        return FrozenDensity(self, device=self.device if device is None else device,
                             channels_last=channels_last, shards=shards)

    def bits_per_dim(self, x: torch.Tensor) -> torch.Tensor:
        """``-log_prob(x) / (D ln 2)`` per image."""
        return bits_per_dim(self.log_prob(x), self.n_dim)

    def sample(self, n: int, *, seed: int | None = None, temperature: float | None = None,
               ) -> torch.Tensor:
        """Draw ``n`` images (flux units), shape ``(n, B, H, W)``.

        Parameters
        ----------
        n : int
            Number of images.
        seed : int, optional
            Seeds a forked torch RNG (global RNG state is left untouched).
        temperature : float, optional
            Scales the base distributions' sigma (normflows' annealed sampling).
        """
        if not self.initialized:
            msg = "initialise the model (model.initialize(training_batch)) before sampling"
            raise SimcompareError(msg)
        devices = [self.device] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.no_grad():
            if seed is not None:
                torch.manual_seed(seed)
            y, _ = self.flow.sample(int(n), temperature=temperature)
            return self.transform.inverse(y.contiguous())

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | os.PathLike) -> Path:
        """Write ``weights.pt``, ``config.json`` and ``versions.json`` into ``directory``.

        Each file is written atomically (temporary file + rename).
        """
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        atomic_torch_save(state, d / "weights.pt")
        write_json_atomic(d / "versions.json", versions(), indent=2)
        write_json_atomic(d / "config.json", self.config, indent=2)
        return d

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> DensityModel:
        """Build an (uninitialised) model from a ``config.json`` record."""
        if int(config.get("format_version", -1)) != FORMAT_VERSION:
            msg = (f"model format version {config.get('format_version')} is not "
                   f"{FORMAT_VERSION}; retrain the model with this simcompare")
            raise DataFormatError(msg)
        return cls(bands=config["bands"], size=config["size"], levels=config["levels"],
                   blocks=config["blocks"], hidden=config["hidden"],
                   preprocess=config["preprocess"], metadata=config.get("metadata"))

    @classmethod
    def load(cls, directory: str | os.PathLike, device: str | torch.device = "cpu",
             ) -> DensityModel:
        """Load a model written by :meth:`save`; returns it in ``eval()`` mode on ``device``."""
        d = Path(directory)
        cfg_path, w_path = d / "config.json", d / "weights.pt"
        if not cfg_path.exists() or not w_path.exists():
            msg = f"{d}: no saved density model (config.json + weights.pt); train one first"
            raise DataNotFoundError(msg)
        try:
            config = json.loads(cfg_path.read_text())
            model = cls.from_config(config)
        except (json.JSONDecodeError, KeyError, TypeError, ValueError, OSError) as exc:
            msg = f"{cfg_path}: damaged density model configuration ({exc}); train the model again"
            raise DataFormatError(msg) from None
        try:
            state = torch.load(w_path, map_location="cpu", weights_only=True)
            model.load_state_dict(state)
        except Exception as exc:  # torch raises many types for a damaged or foreign file
            first = str(exc).strip().splitlines()[0][:120] if str(exc).strip() else type(exc).__name__
            msg = (f"{w_path}: damaged density model weights ({first}); train the model again "
                   "or restore the file")
            raise DataFormatError(msg) from None
        if not model.initialized:
            msg = f"{d}: saved model has uninitialised ActNorm layers; retrain it"
            raise DataFormatError(msg)
        model.to(device)
        model.eval()
        return model
