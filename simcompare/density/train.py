"""Training the density model (and its background model) on an observed ImageSet.

Output folder (``out``)::

    split.json                train / validation / test object ids, fixed by ``seed``
    model/                    the main model (weights.pt, config.json, versions.json,
                              checkpoint.pt while training)
    background/               the background model (when ``background != "none"``)
    member_<k>/model, member_<k>/background   extra ensemble members (k >= 1)
    training.json             per-epoch train/validation bits/dim, timings, seeds,
                              NaN-guard events, options
    reference_scores.parquet  scores of the held-out observed test split (percentiles)

Training loop: Adam with linear warm-up and cosine decay, gradient-norm clipping,
random rotation by multiples of 90 degrees and flips, early stopping on validation NLL
(the best epoch's weights are kept), a checkpoint written atomically after every
epoch, ``resume=True`` to continue an interrupted run, and a NaN/inf guard that
restores the last good state (logged as a warning and recorded in training.json).

Precision: ``precision="auto"`` trains in float32 on CPU and, on CUDA, under bfloat16
(else float16, with a GradScaler) autocast when the model's log_prob on the first
training images agrees with float32 within 1e-3 relative, as scoring decides
(:func:`simcompare.inference.calibrate_precision`); otherwise float32, with a log line.
Each model's choice is in training.json (``precision``, and per model).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .. import imageset as _imageset
from .._io import check_output_dir, write_json_atomic
from ..errors import ConfigError, DataFormatError, SimcompareError
from .amp import autocast, choose_precision, grad_scaler
from .data import make_split, prepared_images, sky_sigma

__all__ = ["BACKGROUNDS", "TrainOptions", "train"]

log = logging.getLogger(__name__)

BACKGROUNDS = ("sersic", "none")


@dataclass(frozen=True)
class TrainOptions:
    """Less common training knobs (defaults suit 32-64 pixel stamps).

    Parameters
    ----------
    val_fraction, test_fraction : float
        Fractions of the image set held out for validation (early stopping) and test
        (reference scores); defaults 0.1 and 0.2.
    patience : int
        Epochs without validation improvement before stopping (default 5).
    warmup_fraction : float
        Fraction of all steps with a linear learning-rate warm-up (default 0.05).
    min_lr_fraction : float
        Floor of the cosine decay as a fraction of ``lr`` (default 0.02).
    clip_norm : float
        Gradient-norm clipping threshold, loss in nats per dimension (default 5).
    asinh_softening : float
        Softening of the asinh stretch in sky-noise sigmas (default 10).
    augment : bool
        Random 90-degree rotations and flips (default True).
    max_nan_events : int
        Give up after this many NaN/inf recoveries in one model (default 20).
    snapshot_every : int
        Steps between in-memory "last good state" snapshots (default 50).
    score_orientations : {1, 4, 8}
        Orientations every image is scored in, averaged (default 4, the quarter turns;
        :func:`simcompare.density.scores.orient`): the held-out reference scores and
        every later :func:`~simcompare.density.evaluate` unless told otherwise.
        Averaging over the turns cut the seed spread of the closure benchmark's
        fine-structure AUROC from 0.034 to 0.010 (docs/statistics.md).
    """

    val_fraction: float = 0.1
    test_fraction: float = 0.2
    patience: int = 5
    warmup_fraction: float = 0.05
    min_lr_fraction: float = 0.02
    clip_norm: float = 5.0
    asinh_softening: float = 10.0
    augment: bool = True
    max_nan_events: int = 20
    snapshot_every: int = 50
    score_orientations: int = 4


def _augment(x: Any, gen: Any) -> Any:
    import torch

    n = x.shape[0]
    flip = torch.randint(0, 2, (n,), generator=gen).bool().to(x.device)
    rot = torch.randint(0, 4, (n,), generator=gen).to(x.device)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    out = x.clone()
    for k in (1, 2, 3):
        sel = rot == k
        if bool(sel.any()):
            out[sel] = torch.rot90(x[sel], k, (-2, -1))
    return out


def _lr_factor(step: int, total: int, warmup: int, floor: float) -> float:
    if step < warmup:
        return (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))


def _mean_bpd(model: Any, x: np.ndarray, device: Any, batch: int) -> float:
    import torch

    total = 0.0
    with torch.inference_mode():
        for i in range(0, len(x), batch):
            xb = torch.from_numpy(x[i:i + batch]).to(device)
            total += float(model.log_prob(xb).double().sum())
    return -total / (len(x) * model.n_dim * math.log(2))


@dataclass
class _Run:
    """The mutable state of one model's training run (what its checkpoint holds)."""

    model: Any
    optim: Any
    sched: Any
    gen: Any
    rng: np.random.Generator
    label: str
    precision: str = "float32"
    precision_error: float = math.nan
    scaler: Any = None
    history: list[dict[str, Any]] = field(default_factory=list)
    nan_events: list[dict[str, Any]] = field(default_factory=list)
    best_val: float = math.inf
    best_state: dict[str, Any] | None = None
    bad_epochs: int = 0
    start_epoch: int = 0
    stopped_early: bool = False
    amp_skipped_steps: int = 0
    good: dict[str, Any] = field(default_factory=dict)

    def snapshot(self) -> None:
        """Keep the current weights and optimiser state as the last good state."""
        self.good = {"model": copy.deepcopy(self.model.state_dict()),
                     "optim": copy.deepcopy(self.optim.state_dict())}

    def restore(self) -> None:
        """Go back to the last good state (after a non-finite loss or gradient)."""
        self.model.load_state_dict(self.good["model"])
        self.optim.load_state_dict(self.good["optim"])

    def autocast(self) -> Any:
        """The autocast context of the training forward pass (none in float32)."""
        import torch

        dtype = None if self.precision == "float32" else getattr(torch, self.precision)
        return autocast(self.model.device.type, dtype)

    def checkpoint(self, epoch: int) -> dict[str, Any]:
        """The checkpoint written after ``epoch`` (1-based)."""
        return {"done": False, "epoch": epoch, "model": self.model.state_dict(),
                "optim": self.optim.state_dict(), "sched": self.sched.state_dict(),
                "torch_gen": self.gen.get_state(), "np_rng": self.rng.bit_generator.state,
                "history": self.history, "nan_events": self.nan_events,
                "best_val": self.best_val, "best_state": self.best_state,
                "bad_epochs": self.bad_epochs, "precision": self.precision,
                "precision_error": self.precision_error,
                "scaler": None if self.scaler is None else self.scaler.state_dict(),
                "amp_skipped_steps": self.amp_skipped_steps}

    def load(self, ckpt: dict[str, Any]) -> None:
        """Continue from ``ckpt`` (written by :meth:`checkpoint`)."""
        self.model.load_state_dict(ckpt["model"])
        self.optim.load_state_dict(ckpt["optim"])
        self.sched.load_state_dict(ckpt["sched"])
        self.gen.set_state(ckpt["torch_gen"])
        self.rng.bit_generator.state = ckpt["np_rng"]
        self.history, self.nan_events = ckpt["history"], ckpt["nan_events"]
        self.best_val, self.best_state = ckpt["best_val"], ckpt["best_state"]
        self.bad_epochs, self.start_epoch = ckpt["bad_epochs"], ckpt["epoch"]
        self.amp_skipped_steps = ckpt.get("amp_skipped_steps", 0)


def _previous_checkpoint(ckpt_path: Path, resume: bool) -> dict[str, Any] | None:
    """The checkpoint to resume from (``resume``), else None after removing a stale one."""
    import torch

    if resume and ckpt_path.exists():
        return torch.load(ckpt_path, map_location="cpu", weights_only=False)
    if ckpt_path.exists():
        ckpt_path.unlink()
    return None


def _new_model(train_x: np.ndarray, *, sigma: np.ndarray, levels: int, blocks: int,
               hidden: int, seed: int, opts: TrainOptions, metadata: dict[str, Any],
               device: Any) -> Any:
    """A fresh DensityModel on ``device`` whose initial weights depend on ``seed`` alone."""
    import torch

    from .model import DensityModel

    # Weight initialisation draws from torch's global generator: seed it inside a fork so
    # the model depends on ``seed`` alone and the caller's random state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DensityModel(bands=train_x.shape[1], size=train_x.shape[-1], levels=levels,
                             blocks=blocks, hidden=hidden, noise_sigma=sigma.tolist(),
                             asinh_softening=opts.asinh_softening, metadata=metadata)
    model.to(device)
    model.set_channels_last(device.type == "cpu")
    return model


def _start_run(model: Any, train_x: np.ndarray, ckpt: dict[str, Any] | None, *, lr: float,
               seed: int, epochs: int, batch_size: int, opts: TrainOptions,
               label: str) -> _Run:
    """ActNorm initialisation, Adam with its warm-up/cosine schedule, seeded generators.

    With a checkpoint, all of it continues from there.
    """
    import torch

    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    total = epochs * max(1, len(train_x) // batch_size)
    warmup = max(1, round(opts.warmup_fraction * total))
    device = model.device
    if ckpt is None:
        init_idx = rng.permutation(len(train_x))[: max(batch_size, min(256, len(train_x)))]
        model.initialize(torch.from_numpy(train_x[init_idx]).to(device))
    else:
        model.initialize(torch.from_numpy(train_x[:2]).to(device))  # overwritten below
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: _lr_factor(s, total, warmup, opts.min_lr_fraction))
    run = _Run(model=model, optim=optim, sched=sched, gen=gen, rng=rng, label=label)
    if ckpt is not None:
        run.load(ckpt)
        log.info("%s: resuming after epoch %d", label, run.start_epoch)
    return run


def _set_precision(run: _Run, train_x: np.ndarray, precision: str,
                   ckpt: dict[str, Any] | None) -> None:
    """Choose the training precision (a resumed run keeps its checkpoint's) and its scaler."""
    from ..inference import CALIBRATION_IMAGES

    device = run.model.device
    if ckpt is not None:
        run.precision = ckpt.get("precision", "float32")
        run.precision_error = ckpt.get("precision_error", math.nan)
    else:
        run.precision, run.precision_error = choose_precision(
            run.model, train_x[:CALIBRATION_IMAGES], precision, device.type, run.label)
    run.scaler = grad_scaler(run.precision, device)
    if run.scaler is not None and ckpt is not None and ckpt.get("scaler"):
        run.scaler.load_state_dict(ckpt["scaler"])


def _non_finite_step(run: _Run, loss: Any, epoch: int, step: int, opts: TrainOptions) -> None:
    """NaN guard: record the step, restore the last good state, give up after too many."""
    run.nan_events.append({"epoch": epoch + 1, "step": step, "loss": float(loss.detach())})
    log.warning("%s: non-finite loss or gradient at epoch %d step %d; restored "
                "the last good state and skipped the batch", run.label, epoch + 1, step)
    run.restore()
    run.optim.zero_grad(set_to_none=True)
    if len(run.nan_events) > opts.max_nan_events:
        msg = (f"{run.label}: {len(run.nan_events)} non-finite training steps; lower --lr "
               "or check the images for extreme values")
        raise SimcompareError(msg)


def _train_step(run: _Run, xb: Any, epoch: int, step: int, opts: TrainOptions) -> float | None:
    """One optimiser step on the batch ``xb``: its loss in bits/dim, None when skipped.

    A step is skipped by the NaN guard (non-finite loss, or non-finite gradient in float32
    and bfloat16) or, in float16, by the GradScaler when the scaled gradients overflow
    (the scale is lowered; not a NaN-guard event).
    """
    import torch

    model, optim, scaler = run.model, run.optim, run.scaler
    with run.autocast():
        lp = model.log_prob(xb)
    loss = -lp.float().mean() / model.n_dim
    bad = not bool(torch.isfinite(loss))
    if not bad:
        optim.zero_grad(set_to_none=True)
        if scaler is None:
            loss.backward()
        else:
            scaler.scale(loss).backward()
            scaler.unscale_(optim)
        gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip_norm)
        bad = not bool(torch.isfinite(gnorm))
        if bad and scaler is not None:
            scaler.step(optim)  # skipped: the unscaled gradients hold inf/NaN
            scaler.update()     # lowers the loss scale
            run.amp_skipped_steps += 1
            log.debug("%s: float16 gradient overflow at epoch %d step %d; loss scale "
                      "lowered to %g", run.label, epoch + 1, step, scaler.get_scale())
            return None
    if bad:
        _non_finite_step(run, loss, epoch, step, opts)
        return None
    if scaler is None:
        optim.step()
    else:
        scaler.step(optim)
        scaler.update()
    run.sched.step()
    return float(loss.detach()) / math.log(2)


def _train_epoch(run: _Run, train_x: np.ndarray, epoch: int, batch_size: int,
                 opts: TrainOptions) -> list[float]:
    """One pass over the shuffled, augmented training images; the steps' losses."""
    import torch

    run.model.train()
    perm = run.rng.permutation(len(train_x))
    losses = []
    for step in range(max(1, len(train_x) // batch_size)):
        idx = np.sort(perm[step * batch_size:(step + 1) * batch_size])
        xb = torch.from_numpy(train_x[idx]).to(run.model.device)
        if opts.augment:
            xb = _augment(xb, run.gen)
        loss = _train_step(run, xb, epoch, step, opts)
        if loss is None:
            continue
        losses.append(loss)
        if (step + 1) % opts.snapshot_every == 0:
            run.snapshot()
    return losses


def _validate(run: _Run, val_x: np.ndarray, epoch: int, batch_size: int) -> float:
    """Validation bits/dim (float32); a non-finite one restores the last good state."""
    run.model.eval()
    val_bpd = _mean_bpd(run.model, val_x, run.model.device, max(batch_size, 64))
    if not math.isfinite(val_bpd):
        run.nan_events.append({"epoch": epoch + 1, "step": "validation", "loss": val_bpd})
        log.warning("%s: non-finite validation NLL at epoch %d; restored the last good "
                    "state", run.label, epoch + 1)
        run.restore()
    else:
        run.snapshot()
    return val_bpd


def _end_epoch(run: _Run, epoch: int, epochs: int, losses: list[float], val_bpd: float,
               seconds: float, opts: TrainOptions, bar: Any) -> None:
    """Record the epoch, keep the best weights, decide on early stopping, report."""
    train_bpd = float(np.mean(losses)) if losses else math.nan
    run.history.append({"epoch": epoch + 1, "train_bits_per_dim": train_bpd,
                        "val_bits_per_dim": val_bpd, "lr": run.optim.param_groups[0]["lr"],
                        "seconds": seconds})
    if math.isfinite(val_bpd) and val_bpd < run.best_val - 1e-5:
        run.best_val, run.bad_epochs = val_bpd, 0
        run.best_state = {k: v.detach().cpu().clone() for k, v in run.model.state_dict().items()}
    else:
        run.bad_epochs += 1
    run.stopped_early = run.bad_epochs >= opts.patience and epoch + 1 < epochs
    if bar is not None:
        bar.update(1)
        bar.set_postfix(train_bpd=f"{train_bpd:.4f}", val_bpd=f"{val_bpd:.4f}")  # redraws
    log.info("%s epoch %d: train %.4f, validation %.4f bits/dim", run.label, epoch + 1,
             train_bpd, val_bpd)


def _epoch_bar(progress: bool, label: str, start: int, epochs: int) -> Any:
    """The epoch progress bar (None without ``progress``)."""
    if not progress:
        return None
    from tqdm.auto import tqdm

    # updated by hand after each epoch, so the count and the figures shown are always
    # those of the epoch just finished (an iterating bar redraws only on a timer)
    return tqdm(desc=label, initial=start, total=epochs, unit="epoch", leave=False,
                dynamic_ncols=True)


def _finish(run: _Run, model_dir: Path, *, seed: int, epochs: int, n_train: int,
            n_validation: int) -> dict[str, Any]:
    """Save the best epoch's weights into ``model_dir``; the model's training record."""
    history = run.history
    if run.best_state is not None:
        run.model.load_state_dict(run.best_state)
    run.model.set_channels_last(False)
    run.model.save(model_dir)
    best_epoch = (min(history, key=lambda h: h["val_bits_per_dim"]
                      if math.isfinite(h["val_bits_per_dim"]) else math.inf)["epoch"]
                  if history else None)
    err = run.precision_error
    return {"label": run.label, "seed": seed, "epochs_run": len(history),
            "stopped_early": run.stopped_early or len(history) < epochs,
            "best_epoch": best_epoch, "best_val_bits_per_dim": run.best_val,
            "history": history, "nan_events": run.nan_events,
            "seconds": float(sum(h["seconds"] for h in history)),
            "n_train": n_train, "n_validation": n_validation,
            "precision": run.precision,
            "precision_error": None if not math.isfinite(err) else err,
            "amp_skipped_steps": run.amp_skipped_steps}


def _train_one(
    model_dir: Path, *, train_x: np.ndarray, val_x: np.ndarray, sigma: np.ndarray,
    levels: int, blocks: int, hidden: int, epochs: int, batch_size: int, lr: float, seed: int,
    device: Any, resume: bool, progress: bool, opts: TrainOptions, label: str,
    metadata: dict[str, Any], precision: str = "auto",
) -> dict[str, Any]:
    """Train one DensityModel into ``model_dir``; returns its training record."""
    from .model import atomic_torch_save

    ckpt_path = model_dir / "checkpoint.pt"
    ckpt = _previous_checkpoint(ckpt_path, resume)
    if ckpt is not None and ckpt.get("done") and (model_dir / "weights.pt").exists():
        log.info("%s: already trained (%d epochs); reusing it", label, len(ckpt["history"]))
        return ckpt["record"]
    model_dir.mkdir(parents=True, exist_ok=True)
    model = _new_model(train_x, sigma=sigma, levels=levels, blocks=blocks, hidden=hidden,
                       seed=seed, opts=opts, metadata=metadata, device=device)
    run = _start_run(model, train_x, ckpt, lr=lr, seed=seed, epochs=epochs,
                     batch_size=batch_size, opts=opts, label=label)
    _set_precision(run, train_x, precision, ckpt)
    run.snapshot()
    bar = _epoch_bar(progress, label, run.start_epoch, epochs)
    for epoch in range(run.start_epoch, epochs):
        if run.stopped_early:
            break
        t0 = time.perf_counter()
        losses = _train_epoch(run, train_x, epoch, batch_size, opts)
        val_bpd = _validate(run, val_x, epoch, batch_size)
        _end_epoch(run, epoch, epochs, losses, val_bpd, time.perf_counter() - t0, opts, bar)
        atomic_torch_save(run.checkpoint(epoch + 1), ckpt_path)
        if run.stopped_early:
            log.info("%s: early stop after epoch %d (no validation gain for %d epochs)",
                     label, epoch + 1, opts.patience)
    if bar is not None:
        bar.close()
    record = _finish(run, model_dir, seed=seed, epochs=epochs, n_train=len(train_x),
                     n_validation=len(val_x))
    atomic_torch_save({"done": True, "history": run.history, "record": record}, ckpt_path)
    return record


def _check_arguments(*, background: str, background_conditions: str, epochs: int,
                     batch_size: int, ensemble: int, lr: float, precision: str) -> str:
    """Reject bad :func:`train` arguments before any work; returns the precision name."""
    from ..inference import _check_precision
    from .background import CONDITIONS

    if background not in BACKGROUNDS:
        msg = f"background must be one of {BACKGROUNDS}, got {background!r}"
        raise ConfigError(msg)
    if background_conditions not in CONDITIONS:
        msg = (f"background_conditions must be one of {tuple(CONDITIONS)}, "
               f"got {background_conditions!r}")
        raise ConfigError(msg)
    for name, val in (("epochs", epochs), ("batch_size", batch_size), ("ensemble", ensemble)):
        if int(val) < 1:
            msg = f"{name} must be >= 1, got {val}"
            raise ConfigError(msg)
    if not (lr > 0 and math.isfinite(lr)):
        msg = f"lr must be positive, got {lr}"
        raise ConfigError(msg)
    return _check_precision(precision)


def _read_square(images: str | os.PathLike) -> Any:
    """The ImageSet ``images``; its stamps must be square for the flow."""
    s = _imageset.read(images)
    _n, _nb, h, w = s.images.shape
    if h != w:
        msg = f"stamps must be square for the flow, got {h}x{w}; re-render with a square stamp size"
        raise DataFormatError(msg)
    return s


def _load_or_make_split(out: Path, images: str | os.PathLike, ids: np.ndarray, *, seed: int,
                        opts: TrainOptions, resume: bool) -> dict[str, Any]:
    """split.json of ``out``: the resumed run's (checked against ``ids``), else a new one."""
    split_path = out / "split.json"
    if resume and split_path.exists():
        split = json.loads(split_path.read_text())
        if set(split["train"] + split["validation"] + split["test"]) != set(ids.tolist()):
            msg = f"{split_path} does not match the image set's object ids; train without resume"
            raise ConfigError(msg)
        return split
    try:
        split = make_split(ids, seed=seed, val_fraction=opts.val_fraction,
                           test_fraction=opts.test_fraction)
    except ConfigError as exc:
        msg = f"{images}: {exc}"
        raise ConfigError(msg) from None
    check_output_dir(out)
    split.update({"seed": seed, "val_fraction": opts.val_fraction,
                  "test_fraction": opts.test_fraction, "images": str(images)})
    write_json_atomic(split_path, split, indent=2)
    return split


def _prepare(s: Any, split: dict[str, Any], seed: int,
             ) -> tuple[dict[str, np.ndarray], np.ndarray, np.ndarray, dict[str, Any]]:
    """Row indices per split part, band sky sigmas, the filled images, the model metadata."""
    ids = s.object_id.astype(np.int64)
    pos = {int(i): k for k, i in enumerate(ids)}
    index = {part: np.array([pos[i] for i in split[part]], np.int64)
             for part in ("train", "validation", "test")}
    tr = index["train"]
    sigma = sky_sigma(s.images[tr], variance=None if s.variance is None else s.variance[tr],
                      mask=None if s.mask is None else s.mask[tr])
    filled = prepared_images(s, sigma=sigma, seed=seed)
    metadata = {"bands": list(s.bands), "flux_unit": s.flux_unit, "survey": s.survey,
                "zero_point": s.zero_point, "pixel_scale_arcsec": s.pixel_scale_arcsec,
                "fill_seed": seed, "noise_sigma": sigma.tolist()}
    return index, sigma, filled, metadata


def _background_images(s: Any, filled: np.ndarray, background: str, conditions_name: str,
                       seed: int) -> tuple[np.ndarray | None, dict[str, Any]]:
    """The background model's training images (Sersic re-renderings) and their summary."""
    if background != "sersic":
        return None, {}
    from .background import CONDITIONS, sersic_background_images

    t0 = time.perf_counter()
    conditions = CONDITIONS[conditions_name]
    bg_images, fits = sersic_background_images(s, filled, rng=np.random.default_rng(seed + 1),
                                               conditions=conditions)
    info = {"kind": "sersic", "fit_seconds": time.perf_counter() - t0,
            "conditions": conditions_name, **conditions.describe(),
            "fraction_at_survey_conditions": float(np.mean(
                (fits["noise_scale"] == 1.0) & (fits["psf_scale"] == 1.0))),
            "fit_seed": seed + 1, "n_fits": len(fits),
            "median_sersic_n": float(np.nanmedian(fits["sersic_n"])),
            "median_r_e_pixels": float(np.nanmedian(fits["r_e_pixels"]))}
    return bg_images, info


def _train_members(out: Path, *, filled: np.ndarray, bg_images: np.ndarray | None,
                   index: dict[str, np.ndarray], seed: int, ensemble: int,
                   metadata: dict[str, Any], common: dict[str, Any],
                   ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Train every ensemble member (model, then background); their entries and records."""
    tr, va = index["train"], index["validation"]
    members, records = [], []
    for k in range(int(ensemble)):
        prefix = out if k == 0 else out / f"member_{k}"
        mseed = seed + 1000 * k
        rec = _train_one(prefix / "model", train_x=filled[tr], val_x=filled[va],
                         seed=mseed, label="model" if k == 0 else f"member_{k}/model",
                         metadata={**metadata, "role": "observed", "seed": mseed}, **common)
        records.append(rec)
        member = {"model": str((prefix / "model").relative_to(out)), "seed": mseed}
        if bg_images is not None:
            rec = _train_one(prefix / "background", train_x=bg_images[tr],
                             val_x=bg_images[va], seed=mseed + 1,
                             label="background" if k == 0 else f"member_{k}/background",
                             metadata={**metadata, "role": "background", "seed": mseed + 1},
                             **common)
            records.append(rec)
            member["background"] = str((prefix / "background").relative_to(out))
        members.append(member)
    return members, records


def train(
    images: str | os.PathLike, *, out: str | os.PathLike, levels: int = 3, blocks: int = 16,
    hidden: int = 128, epochs: int = 20, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
    device: str = "auto", background: str = "sersic", resume: bool = False,
    progress: bool = False, ensemble: int = 1, options: TrainOptions | None = None,
    background_conditions: str = "broad", precision: str = "auto",
) -> Path:
    """Train the density model (and background model) on an observed ImageSet.

    Parameters
    ----------
    images : path
        The observed ImageSet (HDF5). Only the ImageSet is needed, no descriptor.
    out : path
        Output folder (layout in the module docstring).
    levels, blocks, hidden : int
        Glow architecture (real defaults 3, 16, 128 for 64x64x5 stamps; tests use
        e.g. 2, 2, 16). The stamp size must be divisible by ``2**levels``.
    epochs, batch_size : int
        Maximum epochs (early stopping may end sooner) and images per step.
    lr : float
        Peak Adam learning rate (after warm-up).
    seed : int
        Fixes the split, initialisation, data order, augmentation and masked-pixel
        fill; member ``k`` of an ensemble uses ``seed + 1000 k``.
    device : {"auto", "cpu", "cuda"}
    background : {"sersic", "none"}
        ``"sersic"`` also trains a model of smooth Sersic re-renderings of the
        observed galaxies (with noise and PSF set by ``background_conditions``) for
        the likelihood ratio.
    resume : bool
        Continue an interrupted run in ``out`` from its last checkpoint.
    progress : bool
        Show progress bars (bits/dim in the postfix).
    ensemble : int
        Number of independently seeded members (>= 1).
    options : TrainOptions, optional
        Less common knobs.
    background_conditions : {"broad", "survey"}
        ``"survey"``: every Sersic re-rendering has the survey's PSF and noise (the
        ratio then cancels errors in noise and PSF). ``"broad"`` (default): a third of
        them have their noise scaled by 0.5-2.5 and a third their PSF width by 0.7-1.5,
        so images whose noise or PSF departs from the survey's get a lower ratio (see
        :mod:`simcompare.density.background`).
    precision : {"auto", "float32", "bfloat16", "float16"}
        Autocast precision of the training forward pass (float16 with a GradScaler),
        chosen per model after its initialisation and kept only if log_prob on the
        first training images agrees with float32 within 1e-3 relative (as in
        scoring: :func:`simcompare.inference.calibrate_precision`), else float32 (logged).
        ``auto``: float32 on CPU; bfloat16, then float16, on CUDA. Validation and the
        saved weights are float32 either way; training.json records the choice.

    Returns
    -------
    Path
        ``out``.
    """
    from ..inference import resolve_device
    from .scores import _check_orientations

    opts = options or TrainOptions()
    _check_orientations(opts.score_orientations)  # before any training
    precision = _check_arguments(background=background,
                                 background_conditions=background_conditions, epochs=epochs,
                                 batch_size=batch_size, ensemble=ensemble, lr=lr,
                                 precision=precision)
    t_start = time.perf_counter()
    out = Path(out)
    dev = resolve_device(device)
    s = _read_square(images)
    split = _load_or_make_split(out, images, s.object_id.astype(np.int64), seed=seed,
                                opts=opts, resume=resume)
    index, sigma, filled, metadata = _prepare(s, split, seed)
    common = {"sigma": sigma, "levels": levels, "blocks": blocks, "hidden": hidden,
              "epochs": epochs, "batch_size": min(batch_size, len(index["train"])), "lr": lr,
              "device": dev, "resume": resume, "progress": progress, "opts": opts,
              "precision": precision}
    bg_images, bg_info = _background_images(s, filled, background, background_conditions, seed)
    members, records = _train_members(out, filled=filled, bg_images=bg_images, index=index,
                                      seed=seed, ensemble=ensemble, metadata=metadata,
                                      common=common)
    n, _nb, h, _w = s.images.shape
    info = {"schema": "simcompare.training", "schema_version": 1, "images": str(images),
            "n_images": int(n), "bands": list(s.bands), "stamp_size": int(h),
            "background": background, "background_info": bg_info, "members": members,
            "seed": seed, "device": str(dev),
            "options": {"levels": levels, "blocks": blocks, "hidden": hidden,
                        "epochs": epochs, "batch_size": batch_size, "lr": lr,
                        "ensemble": int(ensemble), "precision": precision, **asdict(opts)},
            "precision": {r["label"]: r.get("precision", "float32") for r in records},
            "noise_sigma": sigma.tolist(), "score_orientations": int(opts.score_orientations),
            "masked_pixels": "filled with N(0, variance) noise (band sky sigma where the "
                             "variance is missing), seeded by (seed, object_id)",
            "preprocessing": "per-band x / sigma_b, then a * asinh(u / a) with a = "
                             f"{opts.asinh_softening} sky sigmas; log|det J| included",
            "models": records, "nan_guard_events": sum(len(r["nan_events"]) for r in records)}
    _write_reference_scores(out, images, info, device=device, t_start=t_start)
    return out


def _write_reference_scores(out: Path, images: str | os.PathLike, info: dict[str, Any], *,
                            device: str, t_start: float) -> None:
    """training.json, then the held-out test split's scores (percentile reference)."""
    from .evaluate import _reference_scores

    write_json_atomic(out / "training.json", {**info, "seconds": time.perf_counter() - t_start},
                      indent=2)
    t0 = time.perf_counter()
    _reference_scores(out, images, out=out / "reference_scores.parquet", device=device)
    info["reference_seconds"] = time.perf_counter() - t0
    info["seconds"] = time.perf_counter() - t_start
    write_json_atomic(out / "training.json", info, indent=2)
