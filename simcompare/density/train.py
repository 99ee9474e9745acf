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
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .. import imageset as _imageset
from .._io import check_output_dir, write_json_atomic
from ..errors import ConfigError, DataFormatError, SimcompareError
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


def _train_one(
    model_dir: Path, *, train_x: np.ndarray, val_x: np.ndarray, sigma: np.ndarray,
    levels: int, blocks: int, hidden: int, epochs: int, batch_size: int, lr: float, seed: int,
    device: Any, resume: bool, progress: bool, opts: TrainOptions, label: str,
    metadata: dict[str, Any],
) -> dict[str, Any]:
    """Train one DensityModel into ``model_dir``; returns its training record."""
    import torch

    from .model import DensityModel, atomic_torch_save

    ckpt_path = model_dir / "checkpoint.pt"
    if resume and ckpt_path.exists():
        ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ckpt.get("done") and (model_dir / "weights.pt").exists():
            log.info("%s: already trained (%d epochs); reusing it", label, len(ckpt["history"]))
            return ckpt["record"]
    else:
        ckpt = None
        if ckpt_path.exists():
            ckpt_path.unlink()

    model_dir.mkdir(parents=True, exist_ok=True)
    size = train_x.shape[-1]
    # Weight initialisation draws from torch's global generator: seed it inside a fork so
    # the model depends on ``seed`` alone and the caller's random state is left untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DensityModel(bands=train_x.shape[1], size=size, levels=levels, blocks=blocks,
                             hidden=hidden, noise_sigma=sigma.tolist(),
                             asinh_softening=opts.asinh_softening, metadata=metadata)
    model.to(device)
    model.set_channels_last(device.type == "cpu")
    gen = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    n_dim = model.n_dim
    steps_per_epoch = max(1, len(train_x) // batch_size)
    total = epochs * steps_per_epoch
    warmup = max(1, round(opts.warmup_fraction * total))

    if ckpt is None:
        init_idx = rng.permutation(len(train_x))[: max(batch_size, min(256, len(train_x)))]
        model.initialize(torch.from_numpy(train_x[init_idx]).to(device))
    else:
        model.initialize(torch.from_numpy(train_x[:2]).to(device))  # overwritten below
    optim = torch.optim.Adam(model.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(
        optim, lambda s: _lr_factor(s, total, warmup, opts.min_lr_fraction))

    history: list[dict[str, Any]] = []
    nan_events: list[dict[str, Any]] = []
    best_val, best_state, bad_epochs, start_epoch = math.inf, None, 0, 0
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optim.load_state_dict(ckpt["optim"])
        sched.load_state_dict(ckpt["sched"])
        gen.set_state(ckpt["torch_gen"])
        rng.bit_generator.state = ckpt["np_rng"]
        history, nan_events = ckpt["history"], ckpt["nan_events"]
        best_val, best_state, bad_epochs = ckpt["best_val"], ckpt["best_state"], ckpt["bad_epochs"]
        start_epoch = ckpt["epoch"]
        log.info("%s: resuming after epoch %d", label, start_epoch)

    def snapshot() -> dict[str, Any]:
        return {"model": copy.deepcopy(model.state_dict()),
                "optim": copy.deepcopy(optim.state_dict())}

    good = snapshot()
    stopped_early = False
    bar = None
    if progress:
        from tqdm.auto import tqdm

        # updated by hand after each epoch, so the count and the figures shown are always
        # those of the epoch just finished (an iterating bar redraws only on a timer)
        bar = tqdm(desc=label, initial=start_epoch, total=epochs, unit="epoch",
                   leave=False, dynamic_ncols=True)
    for epoch in range(start_epoch, epochs):
        if stopped_early:
            break
        t0 = time.perf_counter()
        model.train()
        perm = rng.permutation(len(train_x))
        losses = []
        for step in range(steps_per_epoch):
            idx = np.sort(perm[step * batch_size:(step + 1) * batch_size])
            xb = torch.from_numpy(train_x[idx]).to(device)
            if opts.augment:
                xb = _augment(xb, gen)
            loss = -model.log_prob(xb).mean() / n_dim
            bad = not bool(torch.isfinite(loss))
            if not bad:
                optim.zero_grad(set_to_none=True)
                loss.backward()
                gnorm = torch.nn.utils.clip_grad_norm_(model.parameters(), opts.clip_norm)
                bad = not bool(torch.isfinite(gnorm))
            if bad:
                event = {"epoch": epoch + 1, "step": step, "loss": float(loss.detach())}
                nan_events.append(event)
                log.warning("%s: non-finite loss or gradient at epoch %d step %d; restored "
                            "the last good state and skipped the batch", label, epoch + 1, step)
                model.load_state_dict(good["model"])
                optim.load_state_dict(good["optim"])
                optim.zero_grad(set_to_none=True)
                if len(nan_events) > opts.max_nan_events:
                    msg = (f"{label}: {len(nan_events)} non-finite training steps; lower --lr "
                           "or check the images for extreme values")
                    raise SimcompareError(msg)
                continue
            optim.step()
            sched.step()
            losses.append(float(loss.detach()) / math.log(2))
            if (step + 1) % opts.snapshot_every == 0:
                good = snapshot()
        model.eval()
        val_bpd = _mean_bpd(model, val_x, device, max(batch_size, 64))
        if not math.isfinite(val_bpd):
            nan_events.append({"epoch": epoch + 1, "step": "validation", "loss": val_bpd})
            log.warning("%s: non-finite validation NLL at epoch %d; restored the last good "
                        "state", label, epoch + 1)
            model.load_state_dict(good["model"])
            optim.load_state_dict(good["optim"])
        else:
            good = snapshot()
        train_bpd = float(np.mean(losses)) if losses else math.nan
        history.append({"epoch": epoch + 1, "train_bits_per_dim": train_bpd,
                        "val_bits_per_dim": val_bpd, "lr": optim.param_groups[0]["lr"],
                        "seconds": time.perf_counter() - t0})
        if math.isfinite(val_bpd) and val_bpd < best_val - 1e-5:
            best_val, bad_epochs = val_bpd, 0
            best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        stopped_early = bad_epochs >= opts.patience and epoch + 1 < epochs
        if bar is not None:
            bar.update(1)
            bar.set_postfix(train_bpd=f"{train_bpd:.4f}", val_bpd=f"{val_bpd:.4f}")  # redraws
        log.info("%s epoch %d: train %.4f, validation %.4f bits/dim", label, epoch + 1,
                 train_bpd, val_bpd)
        atomic_torch_save({
            "done": False, "epoch": epoch + 1, "model": model.state_dict(),
            "optim": optim.state_dict(), "sched": sched.state_dict(),
            "torch_gen": gen.get_state(), "np_rng": rng.bit_generator.state,
            "history": history, "nan_events": nan_events, "best_val": best_val,
            "best_state": best_state, "bad_epochs": bad_epochs}, ckpt_path)
        if stopped_early:
            log.info("%s: early stop after epoch %d (no validation gain for %d epochs)",
                     label, epoch + 1, opts.patience)
    if bar is not None:
        bar.close()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.set_channels_last(False)
    model.save(model_dir)
    best_epoch = (min(history, key=lambda h: h["val_bits_per_dim"]
                      if math.isfinite(h["val_bits_per_dim"]) else math.inf)["epoch"]
                  if history else None)
    record = {"label": label, "seed": seed, "epochs_run": len(history),
              "stopped_early": stopped_early or len(history) < epochs,
              "best_epoch": best_epoch, "best_val_bits_per_dim": best_val,
              "history": history, "nan_events": nan_events,
              "seconds": float(sum(h["seconds"] for h in history)),
              "n_train": len(train_x), "n_validation": len(val_x)}
    atomic_torch_save({"done": True, "history": history, "record": record}, ckpt_path)
    return record


def train(
    images: str | os.PathLike, *, out: str | os.PathLike, levels: int = 3, blocks: int = 16,
    hidden: int = 128, epochs: int = 20, batch_size: int = 32, lr: float = 1e-3, seed: int = 0,
    device: str = "auto", background: str = "sersic", resume: bool = False,
    progress: bool = False, ensemble: int = 1, options: TrainOptions | None = None,
    background_conditions: str = "broad",
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

    Returns
    -------
    Path
        ``out``.
    """
    from ..inference import resolve_device

    opts = options or TrainOptions()
    if background not in BACKGROUNDS:
        msg = f"background must be one of {BACKGROUNDS}, got {background!r}"
        raise ConfigError(msg)
    from .background import CONDITIONS

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
    t_start = time.perf_counter()
    out = Path(out)
    dev = resolve_device(device)
    s = _imageset.read(images)
    n, _nb, h, w = s.images.shape
    if h != w:
        msg = f"stamps must be square for the flow, got {h}x{w}; re-render with a square stamp size"
        raise DataFormatError(msg)
    ids = s.object_id.astype(np.int64)

    split_path = out / "split.json"
    if resume and split_path.exists():
        split = json.loads(split_path.read_text())
        if set(split["train"] + split["validation"] + split["test"]) != set(ids.tolist()):
            msg = f"{split_path} does not match the image set's object ids; train without resume"
            raise ConfigError(msg)
    else:
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
    common = {"sigma": sigma, "levels": levels, "blocks": blocks, "hidden": hidden,
              "epochs": epochs, "batch_size": min(batch_size, len(tr)), "lr": lr,
              "device": dev, "resume": resume, "progress": progress, "opts": opts}

    bg_images, bg_info = None, {}
    if background == "sersic":
        from .background import sersic_background_images

        t0 = time.perf_counter()
        conditions = CONDITIONS[background_conditions]
        bg_images, fits = sersic_background_images(s, filled, rng=np.random.default_rng(seed + 1),
                                                   conditions=conditions)
        bg_info = {"kind": "sersic", "fit_seconds": time.perf_counter() - t0,
                   "conditions": background_conditions, **conditions.describe(),
                   "fraction_at_survey_conditions": float(np.mean(
                       (fits["noise_scale"] == 1.0) & (fits["psf_scale"] == 1.0))),
                   "fit_seed": seed + 1, "n_fits": len(fits),
                   "median_sersic_n": float(np.nanmedian(fits["sersic_n"])),
                   "median_r_e_pixels": float(np.nanmedian(fits["r_e_pixels"]))}

    members = []
    records = []
    for k in range(int(ensemble)):
        prefix = out if k == 0 else out / f"member_{k}"
        mseed = seed + 1000 * k
        rec = _train_one(prefix / "model", train_x=filled[tr], val_x=filled[index["validation"]],
                         seed=mseed, label="model" if k == 0 else f"member_{k}/model",
                         metadata={**metadata, "role": "observed", "seed": mseed}, **common)
        records.append(rec)
        member = {"model": str((prefix / "model").relative_to(out)), "seed": mseed}
        if bg_images is not None:
            rec = _train_one(prefix / "background", train_x=bg_images[tr],
                             val_x=bg_images[index["validation"]], seed=mseed + 1,
                             label="background" if k == 0 else f"member_{k}/background",
                             metadata={**metadata, "role": "background", "seed": mseed + 1},
                             **common)
            records.append(rec)
            member["background"] = str((prefix / "background").relative_to(out))
        members.append(member)

    info = {"schema": "simcompare.training", "schema_version": 1, "images": str(images),
            "n_images": int(n), "bands": list(s.bands), "stamp_size": int(h),
            "background": background, "background_info": bg_info, "members": members,
            "seed": seed, "device": str(dev),
            "options": {"levels": levels, "blocks": blocks, "hidden": hidden,
                        "epochs": epochs, "batch_size": batch_size, "lr": lr,
                        "ensemble": int(ensemble), **asdict(opts)},
            "noise_sigma": sigma.tolist(),
            "masked_pixels": "filled with N(0, variance) noise (band sky sigma where the "
                             "variance is missing), seeded by (seed, object_id)",
            "preprocessing": "per-band x / sigma_b, then a * asinh(u / a) with a = "
                             f"{opts.asinh_softening} sky sigmas; log|det J| included",
            "models": records, "nan_guard_events": sum(len(r["nan_events"]) for r in records)}
    from .evaluate import evaluate
    write_json_atomic(out / "training.json", {**info, "seconds": time.perf_counter() - t_start},
                      indent=2)
    t0 = time.perf_counter()
    evaluate(out, images, out=out / "reference_scores.parquet", split="test", device=device,
             _reference=True)
    info["reference_seconds"] = time.perf_counter() - t0
    info["seconds"] = time.perf_counter() - t_start
    write_json_atomic(out / "training.json", info, indent=2)
    return out
