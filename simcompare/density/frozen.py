"""Inference-only ("frozen") copy of a trained :class:`~simcompare.density.DensityModel`.

normflows evaluates ``MultiscaleFlow.log_prob`` layer by layer exactly as it trains:
every call re-assembles each LU-parametrised 1x1 convolution ``W = P L (U + diag(s))``,
re-exponentiates the ActNorm scales, computes each constant log-determinant again, and
splits the coupling parameters with strided slices. At inference all of that is fixed,
so :class:`FrozenFlow` computes it once and keeps plain tensors:

* ActNorm ``(z - t) exp(-s)`` followed by the 1x1 convolution ``W`` become one 1x1
  convolution with weight ``W diag(exp(-s))`` and bias ``-W (exp(-s) t)``;
* the log|det| of every ActNorm, 1x1 convolution and base-distribution normalisation is
  a constant per image, summed once (float64) into a single number;
* the coupling network's last convolution has its output channels reordered to
  ``[shift..., scale...]`` and the ``+2`` of Glow's ``sigmoid(a + 2)`` folded into its
  bias; ``log sigmoid`` gives both the scale and its log-determinant;
* ``ConvNet2d``'s ``LeakyReLU(0)`` is a ReLU, and on CPU each convolution + ReLU runs as
  one oneDNN call (``mkldnn._convolution_pointwise``, checked against the separate
  operators once per process, see :func:`fused_conv_available`); a separate ReLU pass
  over the 128-channel activations costs about as much as a third of the convolutions;
* Squeeze is ``pixel_unshuffle``; channels-last tensors on CPU;
  ``torch.inference_mode`` in :meth:`FrozenDensity.log_prob`;
* on a CPU with several intra-op threads, a batch is cut into one shard per thread and
  the shards are scored concurrently, each with a single intra-op thread
  (:meth:`FrozenDensity.log_prob`, ``shards``). The convolutions of this flow are small
  (10-128 channels, 8x8 to 32x32 pixels), so splitting each of them over threads keeps
  the cores in step about 600 times per batch; separate images need no step at all.
  Measured on 2 cores with the default 5x64x64 model: 0.78-0.82 s per batch of 32
  sharded, 0.98 s with both threads inside each convolution.

``log sigmoid`` is evaluated directly (normflows takes ``log(sigmoid(.))``), so where
normflows underflows to ``-inf`` for extreme coupling outputs the frozen copy stays
finite; everywhere else the two agree to float32 rounding.

The map is the same function of the same weights: the result equals
``DensityModel.log_prob`` to float32 rounding. It carries no gradients (the training
model is left untouched and still gives differentiable log-densities).
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ConfigError, SimcompareError

if TYPE_CHECKING:  # pragma: no cover
    from .model import DensityModel

__all__ = ["FrozenDensity", "FrozenFlow", "freeze", "fused_conv_available"]

log = logging.getLogger(__name__)


_FUSED: dict[str, bool] = {}

_POOLS: dict[int, ThreadPoolExecutor] = {}
_POOL_LOCK = threading.Lock()
# Serialises sharded scoring calls: the intra-op thread count is process-wide.
_SHARD_LOCK = threading.Lock()


def _shard_pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n`` scoring threads (created once, reused)."""
    with _POOL_LOCK:
        pool = _POOLS.get(n)
        if pool is None:
            pool = _POOLS[n] = ThreadPoolExecutor(max_workers=n,
                                                  thread_name_prefix="simcompare-score")
        return pool


def fused_conv_available() -> bool:
    """Whether oneDNN's fused convolution + ReLU (``mkldnn._convolution_pointwise``) works.

    Probed once per process on a small tensor against ``relu(conv2d(...))``; when it is
    missing or disagrees, the frozen flow uses the separate operators.
    """
    if "cpu" not in _FUSED:
        ok = False
        try:
            op = torch.ops.mkldnn._convolution_pointwise
            gen = torch.Generator().manual_seed(0)
            x = torch.randn(2, 3, 5, 5, generator=gen).contiguous(
                memory_format=torch.channels_last)
            w = torch.randn(4, 3, 3, 3, generator=gen).contiguous(
                memory_format=torch.channels_last)
            b = torch.randn(4, generator=gen)
            with torch.inference_mode():
                got = op(x, w, b, [1, 1], [1, 1], [1, 1], 1, "relu", [], "")
                want = F.relu(F.conv2d(x, w, b, padding=1))
            ok = bool(torch.allclose(got, want, rtol=1e-5, atol=1e-5))
        except (AttributeError, RuntimeError, NotImplementedError):
            ok = False
        _FUSED["cpu"] = ok
        log.debug("fused oneDNN conv+relu available: %s", ok)
    return _FUSED["cpu"]


def _conv(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor, pad: int, *, fused: bool,
          relu: bool) -> torch.Tensor:
    if fused:
        return torch.ops.mkldnn._convolution_pointwise(
            x, w, b, [pad, pad], [1, 1], [1, 1], 1, "relu" if relu else "none", [], "")
    y = F.conv2d(x, w, b, padding=pad)
    return F.relu(y) if relu else y


class _FrozenBlock(nn.Module):
    """One Glow block, inverse direction: ActNorm^-1, 1x1 conv^-1, affine coupling^-1."""

    def __init__(self, block: nn.Module, *, n_pixels: int, dtype: torch.dtype) -> None:
        import normflows as nf

        super().__init__()
        coupling_block, *rest = list(block.flows)
        mixing = [f for f in rest if isinstance(f, nf.flows.Invertible1x1Conv)]
        actnorm = [f for f in rest if isinstance(f, nf.flows.ActNorm)]
        if len(actnorm) != 1 or len(rest) != len(mixing) + 1 or len(mixing) > 1:
            msg = "unsupported GlowBlock layout (expected coupling, [1x1 conv], ActNorm)"
            raise ConfigError(msg)
        an = actnorm[0]
        split, coupling, merge = list(coupling_block.flows)
        if split.mode != "channel" or merge.mode != "channel" or not coupling.scale \
                or coupling.scale_map != "sigmoid":
            msg = "only channel-split Glow blocks with sigmoid affine couplings can be frozen"
            raise ConfigError(msg)
        with torch.no_grad():
            s = an.s.detach().double().reshape(-1)
            t = an.t.detach().double().reshape(-1)
            channels = s.numel()
            inv_scale = torch.exp(-s)
            log_det = -float(s.sum()) * n_pixels
            if mixing:
                m = mixing[0]
                if m.use_lu:
                    eye = torch.eye(channels, dtype=torch.float64, device=s.device)
                    lower = torch.tril(m.L.detach().double(), diagonal=-1) + eye
                    upper = torch.triu(m.U.detach().double(), diagonal=1) + torch.diag(
                        m.sign_S.double() * torch.exp(m.log_S.detach().double()))
                    w = m.P.double() @ lower @ upper
                    log_det += float(m.log_S.detach().double().sum()) * n_pixels
                else:
                    w = m.W.detach().double()
                    log_det += float(torch.linalg.slogdet(w)[1]) * n_pixels
            else:
                w = torch.eye(channels, dtype=torch.float64, device=s.device)
            weight = w * inv_scale[None, :]
            bias = -(w @ (inv_scale * t))
            self.register_buffer("mix_w", weight.reshape(channels, channels, 1, 1).to(dtype))
            self.register_buffer("mix_b", bias.to(dtype))
            convs = [mod for mod in coupling.param_map.net if isinstance(mod, nn.Conv2d)]
            acts = [mod for mod in coupling.param_map.net if not isinstance(mod, nn.Conv2d)]
            for act in acts:
                if not (isinstance(act, nn.ReLU) or (isinstance(act, nn.LeakyReLU)
                                                     and act.negative_slope == 0.0)):
                    msg = f"coupling network layer {act} is not a ReLU; cannot freeze it"
                    raise ConfigError(msg)
            if len(convs) != 3 or len(acts) != 2:
                msg = "unsupported coupling network (expected conv-ReLU-conv-ReLU-conv)"
                raise ConfigError(msg)
            self.paddings = [int(c.padding[0]) for c in convs]
            for k, conv in enumerate(convs[:2]):
                self.register_buffer(f"w{k}", conv.weight.detach().to(dtype).clone())
                self.register_buffer(f"b{k}", conv.bias.detach().to(dtype).clone())
            last = convs[2]
            order = torch.cat([torch.arange(0, last.out_channels, 2),
                               torch.arange(1, last.out_channels, 2)]).to(last.weight.device)
            b2 = last.bias.detach().double()[order].clone()
            b2[last.out_channels // 2:] += 2.0  # Glow's sigmoid(a + 2)
            self.register_buffer("w2", last.weight.detach()[order].to(dtype).clone())
            self.register_buffer("b2", b2.to(dtype))
        self.fused = False  # set by FrozenDensity for CPU copies
        self.c1 = (channels + 1) // 2
        self.c2 = channels // 2
        self.log_det = log_det

    def forward(self, z: torch.Tensor, per_pixel: bool = False,
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Inverse pass: ``(z_out, log|det| of the coupling per image)``.

        With ``per_pixel`` the log|det| is returned per pixel, shape (batch, h, w).
        """
        fused = self.fused and z.device.type == "cpu" and not z.requires_grad
        z = _conv(z, self.mix_w, self.mix_b, 0, fused=fused, relu=False)
        z1, z2 = z[:, :self.c1], z[:, self.c1:]
        h = _conv(z1, self.w0, self.b0, self.paddings[0], fused=fused, relu=True)
        h = _conv(h, self.w1, self.b1, self.paddings[1], fused=fused, relu=True)
        p = _conv(h, self.w2, self.b2, self.paddings[2], fused=fused, relu=False)
        shift, a = p[:, :self.c2], p[:, self.c2:]
        log_scale = F.logsigmoid(a)
        ld = log_scale.sum(dim=1) if per_pixel else log_scale.sum(dim=(1, 2, 3))
        if z.requires_grad:
            z2 = (z2 - shift) * torch.exp(log_scale)
            return torch.cat([z1, z2], 1), ld
        # z is this block's own fresh output: update its second half in place (no cat)
        z2.sub_(shift).mul_(torch.exp(log_scale))
        return z, ld


class FrozenFlow(nn.Module):
    """normflows ``MultiscaleFlow.log_prob`` of a Glow with fixed, pre-folded weights.

    Parameters
    ----------
    flow : normflows.MultiscaleFlow
        An initialised multiscale Glow as built by :func:`~simcompare.density.build_glow`
        (channel-split GlowBlocks, Squeeze, Merge, DiagGaussian bases).
    size : int
        Stamp side H = W in pixels (the constant log-determinants depend on it).
    dtype : torch.dtype
        Compute dtype (default float32).
    """

    def __init__(self, flow: nn.Module, *, size: int, dtype: torch.dtype = torch.float32,
                 ) -> None:
        import normflows as nf

        super().__init__()
        if getattr(flow, "transform", None) is not None or getattr(flow, "class_cond", False):
            msg = "only unconditional MultiscaleFlows without a transform can be frozen"
            raise ConfigError(msg)
        n_levels = len(flow.q0)
        self.levels = nn.ModuleList()
        self.n_squeeze: list[int] = []
        self.sides: list[int] = []
        # constant log|det| (ActNorm, 1x1 convolutions) of each level, per latent pixel
        self.block_const: list[float] = []
        const = 0.0
        side = size
        for i in range(n_levels - 1, -1, -1):
            squeezes, blocks = 0, []
            level_const = 0.0
            for layer in reversed(list(flow.flows[i])):
                if isinstance(layer, nf.flows.Squeeze):
                    if blocks:
                        msg = "Squeeze between Glow blocks is not supported by the frozen flow"
                        raise ConfigError(msg)
                    squeezes += 1
                    side //= 2
                elif isinstance(layer, nf.flows.GlowBlock):
                    fb = _FrozenBlock(layer, n_pixels=side * side, dtype=dtype)
                    const += fb.log_det
                    level_const += fb.log_det
                    blocks.append(fb)
                else:
                    msg = f"layer {type(layer).__name__} is not supported by the frozen flow"
                    raise ConfigError(msg)
            self.levels.append(nn.ModuleList(blocks))
            self.n_squeeze.append(squeezes)
            self.sides.append(side)
            self.block_const.append(level_const / (side * side))
            if i > 0 and getattr(flow.merges[i - 1], "mode", "channel") != "channel":
                msg = "only channel merges are supported by the frozen flow"
                raise ConfigError(msg)
        self.bases = nn.ModuleList()
        for i in range(n_levels - 1, -1, -1):
            q = flow.q0[i]
            if type(q) is not nf.distributions.DiagGaussian:
                msg = f"base distribution {type(q).__name__} is not supported (DiagGaussian only)"
                raise ConfigError(msg)
            with torch.no_grad():
                log_scale = q.log_scale.detach().double()
                if q.temperature is not None:
                    log_scale = log_scale + math.log(q.temperature)
                const += -0.5 * float(q.d) * math.log(2 * math.pi) - float(log_scale.sum())
                base = nn.Module()
                base.register_buffer("loc", q.loc.detach().to(dtype).clone())
                base.register_buffer("inv_scale", torch.exp(-log_scale).to(dtype))
                # normalisation of the base density per latent pixel, (1, 1, h, w)
                base.register_buffer("norm_map", (
                    -0.5 * math.log(2 * math.pi) * log_scale.shape[-3]
                    - log_scale.reshape(-1, *log_scale.shape[-3:]).sum(-3, keepdim=True)
                ).to(dtype))
            self.bases.append(base)
        self.const = const
        self.dtype = dtype

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """``log p(y)`` in nats per image for flow-space input ``y`` (batch, C, H, W)."""
        ld = torch.zeros(y.shape[0], dtype=y.dtype, device=y.device)
        z = y
        last = len(self.levels) - 1
        for k, (blocks, base) in enumerate(zip(self.levels, self.bases, strict=True)):
            for _ in range(self.n_squeeze[k]):
                z = F.pixel_unshuffle(z, 2)
            for block in blocks:
                z, ld_ = block(z)
                ld = ld + ld_
            if k < last:
                half = z.shape[1] // 2
                z, z_out = z[:, :half], z[:, half:]
            else:
                z_out = z
            u = (z_out - base.loc) * base.inv_scale
            ld = ld - 0.5 * u.square().sum(dim=(1, 2, 3))
        return ld + self.const

    def level_maps(self, y: torch.Tensor) -> list[torch.Tensor]:
        """``log p(y)`` decomposed over levels and latent pixels (flow part only).

        Returns one map per level, finest first, of shape (batch, s_k, s_k) where
        ``s_k = size / 2**(k+1)`` is the side of that level's latent grid. Each map holds,
        per latent pixel, the log|det| of the level's affine couplings at that position
        (the sum of ``log sigmoid`` over channels), its constant ActNorm and 1x1-convolution
        log|det| per pixel, and the log-density of the latents the level factors out there
        (the base's normalisation included). The maps summed over all pixels and levels
        equal :meth:`forward` (to float32 rounding): Glow's log-likelihood is a sum of such
        local terms, which lets a score sum them over part of the stamp or per scale.
        """
        maps: list[torch.Tensor] = []
        z = y
        last = len(self.levels) - 1
        for k, (blocks, base) in enumerate(zip(self.levels, self.bases, strict=True)):
            for _ in range(self.n_squeeze[k]):
                z = F.pixel_unshuffle(z, 2)
            m = torch.full((z.shape[0], z.shape[2], z.shape[3]), self.block_const[k],
                           dtype=z.dtype, device=z.device)
            for block in blocks:
                z, ls = block(z, per_pixel=True)
                m = m + ls
            if k < last:
                half = z.shape[1] // 2
                z, z_out = z[:, :half], z[:, half:]
            else:
                z_out = z
            u = (z_out - base.loc) * base.inv_scale
            m = m + base.norm_map[:, 0] - 0.5 * u.square().sum(dim=1)
            maps.append(m)
        return maps


class FrozenDensity(nn.Module):
    """Scoring-only copy of a :class:`DensityModel`: preprocessing + :class:`FrozenFlow`.

    Build it with :func:`freeze` (or :meth:`DensityModel.freeze`). Its :meth:`log_prob`
    takes images in flux units and returns nats per image, like
    :meth:`DensityModel.log_prob`, but without gradients.

    Parameters
    ----------
    model : DensityModel
        An initialised model; it is not modified.
    device : torch.device or str
        Where the frozen copy lives.
    channels_last : bool, optional
        Channels-last activations (default: on CPU).
    shards : int, optional
        CPU only: how many parts of a batch are scored concurrently, each part in its
        own thread with one intra-op thread. Default (``None``): torch's intra-op
        thread count at the time of each call (``torch.get_num_threads()``); ``1``
        scores the whole batch with torch's intra-op threads. While a sharded batch
        is scored the process-wide intra-op thread count is 1; it is restored after.
    """

    def __init__(self, model: DensityModel, *, device: Any = "cpu",
                 channels_last: bool | None = None, shards: int | None = None) -> None:
        import copy

        super().__init__()
        if not model.initialized:
            msg = ("the model's ActNorm layers are not initialised; call "
                   "model.initialize(training_batch) before freezing it for scoring")
            raise SimcompareError(msg)
        dev = torch.device(device)
        self.bands, self.size, self.n_dim = model.bands, model.size, model.n_dim
        self.transform = copy.deepcopy(model.transform).to(device=dev, dtype=torch.float32)
        self.flow = FrozenFlow(model.flow, size=model.size).to(dev)
        self.channels_last = dev.type == "cpu" if channels_last is None else bool(channels_last)
        if self.channels_last:
            for mod in self.flow.modules():
                for name, buf in list(mod.named_buffers(recurse=False)):
                    if buf.ndim == 4:
                        setattr(mod, name, buf.contiguous(memory_format=torch.channels_last))
        use_fused = dev.type == "cpu" and self.channels_last and fused_conv_available()
        for mod in self.flow.modules():
            if isinstance(mod, _FrozenBlock):
                mod.fused = use_fused
        self.fused = use_fused
        if shards is not None and int(shards) < 1:
            msg = f"shards must be >= 1, got {shards}"
            raise ConfigError(msg)
        self.shards = None if shards is None else int(shards)
        self._compiled: Any = None
        self._amp_dtype: torch.dtype | None = None
        self.eval()

    @property
    def device(self) -> torch.device:
        """Device of the frozen weights."""
        return self.flow.bases[0].loc.device

    @property
    def amp_dtype(self) -> torch.dtype | None:
        """Autocast dtype of the flow (None: float32); outputs are float32 either way.

        Set by :func:`simcompare.inference.calibrate_precision`. While set, the fused
        float32-only CPU convolutions are replaced by plain ones so that autocast
        applies to them.
        """
        return self._amp_dtype

    @amp_dtype.setter
    def amp_dtype(self, dtype: torch.dtype | None) -> None:
        self._amp_dtype = dtype
        for mod in self.flow.modules():
            if isinstance(mod, _FrozenBlock):
                mod.fused = self.fused and dtype is None

    def enable_compile(self) -> FrozenDensity:
        """Run the flow through ``torch.compile`` (opt-in).

        The first call compiles (about a minute on a small CPU) and every new batch
        shape compiles again; worth it only for large scoring runs.
        """
        self._compiled = torch.compile(self.flow, dynamic=False)
        return self

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Log-density of images in flux units, nats per image, shape ``(batch,)``.

        Parameters
        ----------
        x : Tensor, shape (batch, B, H, W)
            Images in flux units (converted to float32 on the frozen copy's device).
        """
        x = self._checked(x)
        results = self._sharded(self._log_prob_single_thread, x)
        if results is None:
            return self._log_prob(x)
        with torch.inference_mode():
            return torch.cat(results)

    def _checked(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` as float32 on the copy's device, after checking its shape."""
        if x.ndim != 4 or tuple(x.shape[1:]) != (self.bands, self.size, self.size):
            msg = (f"expected images of shape (batch, {self.bands}, {self.size}, {self.size}), "
                   f"got {tuple(x.shape)}")
            raise ConfigError(msg)
        return x.to(device=self.device, dtype=torch.float32)

    def _sharded(self, single_thread: Any, x: torch.Tensor) -> list[Any] | None:
        """``single_thread`` on concurrent parts of ``x`` (None when one part is best).

        Each part runs in a pool thread with torch limited to one thread (process-wide);
        the thread count is restored afterwards.
        """
        n_shards = self._n_shards(x.shape[0])
        if n_shards <= 1:
            return None
        parts = torch.tensor_split(x, n_shards)
        with _SHARD_LOCK:
            threads = torch.get_num_threads()
            try:
                return list(_shard_pool(n_shards).map(single_thread, parts))
            finally:
                torch.set_num_threads(threads)

    def _n_shards(self, batch: int) -> int:
        if self.device.type != "cpu" or self._compiled is not None:
            return 1
        wanted = torch.get_num_threads() if self.shards is None else self.shards
        return max(1, min(wanted, batch))

    def _log_prob_single_thread(self, x: torch.Tensor) -> torch.Tensor:
        torch.set_num_threads(1)  # process-wide; log_prob restores it
        return self._log_prob(x)

    def _autocast(self) -> Any:
        import contextlib

        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def _log_prob(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():  # thread-local: entered in every scoring thread
            y, ld = self.transform.forward_and_log_det(x)
            if self.channels_last:
                y = y.contiguous(memory_format=torch.channels_last)
            flow = self._compiled if self._compiled is not None else self.flow
            with self._autocast():  # thread-local too
                lp = flow(y)
            return lp.float() + ld

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Same as :meth:`log_prob`."""
        return self.log_prob(x)

    def level_maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Local log-likelihood terms of images in flux units (see :meth:`FrozenFlow.level_maps`).

        Returns
        -------
        maps : list of Tensor
            One (batch, s_k, s_k) map per flow level, finest first (nats).
        preprocess : Tensor, shape (batch,)
            The preprocessing log|det J| per image. ``preprocess`` plus the sum of all
            maps equals :meth:`log_prob` to float32 rounding.
        """
        x = self._checked(x)
        results = self._sharded(self._level_maps_single_thread, x)
        if results is None:
            return self._level_maps(x)
        with torch.inference_mode():
            maps = [torch.cat([r[0][k] for r in results]) for k in range(len(results[0][0]))]
            return maps, torch.cat([r[1] for r in results])

    def _level_maps_single_thread(self, x: torch.Tensor,
                                  ) -> tuple[list[torch.Tensor], torch.Tensor]:
        torch.set_num_threads(1)  # process-wide; level_maps restores it
        return self._level_maps(x)

    def _level_maps(self, x: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
        with torch.inference_mode():
            y, ld = self.transform.forward_and_log_det(x)
            if self.channels_last:
                y = y.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                maps = self.flow.level_maps(y)
            return [m.float().contiguous() for m in maps], ld


def freeze(model: DensityModel, *, device: Any = "cpu", channels_last: bool | None = None,
           shards: int | None = None) -> FrozenDensity:
    """Scoring-only frozen copy of ``model`` (see :class:`FrozenDensity`).

    Parameters
    ----------
    model : DensityModel
        An initialised model; left unchanged.
    device : str or torch.device, optional
        Where the copy runs (default ``"cpu"``).
    channels_last : bool, optional
        Channels-last activations (default: on CPU).
    shards : int, optional
        CPU only: parts of a batch scored concurrently (default torch's thread count).

    Returns
    -------
    FrozenDensity
        The scoring copy.
    """
    return FrozenDensity(model, device=device, channels_last=channels_last, shards=shards)
