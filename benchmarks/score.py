"""Scoring speed: images/s of plain normflows, the eager fast path and the frozen scorer (JSON).

Usage: python benchmarks/score.py [--bands 5] [--size 64] [--levels 3] [--blocks 16]
       [--hidden 128] [--batch 32] [--repeats 5] [--threads 2] [--device auto]
       [--batches 64,32,16] [--torch-compile]

Variants, all on the same weights and the same batch of images, timed interleaved
(``repeats`` rounds, each running every variant once) so that load from other work
on a shared machine hits all of them alike; the medians are reported (and the best
run of each, the figure least disturbed by other load), with the load average:

``plain``   normflows' ``MultiscaleFlow.log_prob(y, None)`` as shipped (LeakyReLU(0)),
            NCHW, ``eval()``, ``torch.no_grad()``; ``y`` is the preprocessed batch.
``fast``    ``log_prob_batched(..., frozen=False)``: the DensityModel itself under
            ``torch.inference_mode``, channels-last on CPU.
``frozen``  ``log_prob_batched`` (default): the frozen copy of
            :mod:`simcompare.density.frozen`, on CPU with the batch cut into one shard
            per intra-op thread, scored concurrently (in batches of at most
            ``simcompare.inference.CPU_BATCH_LIMIT`` = 32, so ``--batch`` above 32 is not
            the same batch for it; the default ``--batch 32`` is).
``frozen_unsharded`` the frozen copy with ``shards=1``: the whole batch at once, torch's
            intra-op threads inside each operation.
``frozen_b<N>`` the frozen copy scoring the same ``--batch`` images in batches of N
            (``--batches``, each N < ``--batch``).
``frozen_compiled`` (``--torch-compile``) the frozen copy through ``torch.compile``
            (compile time reported separately).
``frozen_convs_only`` the frozen scorer's convolutions and nothing else: the same
            calls (shapes, weights, fused ReLUs, channels-last, shards and threads) on
            inputs of the right shapes, without the preprocessing, squeezes, coupling
            arithmetic or log-determinants. No scorer that runs these convolutions
            through the same kernels can be faster, so ``plain`` / ``frozen_convs_only``
            (``speedup_ceiling_vs_plain``) bounds the speed-up reachable on this machine
            by work outside the convolutions.

The weights are perturbed from their initialisation (the last coupling convolutions
start at zero), and the scores of all variants are checked against each other.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch

from simcompare.density import DensityModel
from simcompare.density.frozen import FrozenDensity, _conv, freeze
from simcompare.density.model import build_glow
from simcompare.inference import compile_for_inference, log_prob_batched, resolve_device


def _unmodified_glow(a: argparse.Namespace) -> torch.nn.Module:
    """The same architecture with normflows' modules exactly as shipped (LeakyReLU)."""
    return build_glow(a.bands, a.size, levels=a.levels, blocks=a.blocks, hidden=a.hidden,
                      relu=False)


def convs_only(frozen: FrozenDensity) -> FrozenDensity:
    """A shallow copy of ``frozen`` whose scoring runs only the flow's convolutions."""
    import copy

    flow = frozen.flow
    fmt = torch.channels_last if frozen.channels_last else torch.contiguous_format

    def run(x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode():
            n, ch, side = x.shape[0], frozen.bands, frozen.size
            for k, blocks in enumerate(flow.levels):
                for _ in range(flow.n_squeeze[k]):
                    ch, side = ch * 4, side // 2
                z = torch.zeros(n, ch, side, side, device=x.device).contiguous(memory_format=fmt)
                z1 = torch.zeros(n, ch - ch // 2, side, side, device=x.device).contiguous(
                    memory_format=fmt)
                for b in blocks:
                    _conv(z, b.mix_w, b.mix_b, 0, fused=b.fused, relu=False)
                    h = _conv(z1, b.w0, b.b0, b.paddings[0], fused=b.fused, relu=True)
                    h = _conv(h, b.w1, b.b1, b.paddings[1], fused=b.fused, relu=True)
                    _conv(h, b.w2, b.b2, b.paddings[2], fused=b.fused, relu=False)
                ch //= 2
            return torch.zeros(n, device=x.device)

    clone = copy.copy(frozen)
    clone._log_prob = run  # used by the sharded and the unsharded path alike
    return clone


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bands", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--batches", default="", help="extra frozen batch sizes, e.g. 32,16")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--torch-compile", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    dev = resolve_device(a.device)
    torch.manual_seed(0)
    model = DensityModel(bands=a.bands, size=a.size, levels=a.levels, blocks=a.blocks,
                         hidden=a.hidden, noise_sigma=[1.0] * a.bands)
    x = np.random.default_rng(0).normal(0, 3, (a.batch, a.bands, a.size, a.size)).astype(
        np.float32)
    model.initialize(torch.from_numpy(x))
    with torch.no_grad():
        for p in model.flow.parameters():
            p.add_(0.01 * torch.randn_like(p))
    model.eval()
    xt = torch.from_numpy(x).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    plain_flow = _unmodified_glow(a)
    plain_flow.load_state_dict(model.flow.state_dict())
    plain_flow.to(dev).eval()
    transform = model.transform.to(dev)
    frozen = compile_for_inference(model, device=dev)
    scores: dict[str, np.ndarray] = {}

    def plain() -> None:
        with torch.no_grad():
            y, ld = transform.forward_and_log_det(xt)
            scores["plain"] = (plain_flow.log_prob(y, None) + ld).double().cpu().numpy()
        sync()

    def fast() -> None:
        scores["fast"] = log_prob_batched(model, x, batch_size=a.batch, device=dev,
                                          frozen=False)
        sync()

    def run_frozen(bs: int, scorer: object = frozen, key: str = "frozen") -> Callable[[], None]:
        def fn() -> None:
            scores[key] = log_prob_batched(scorer, x, batch_size=bs)
            sync()
        return fn

    unsharded = freeze(model, device=dev, shards=1)
    variants: dict[str, Callable[[], None]] = {
        "plain": plain, "fast": fast, "frozen": run_frozen(a.batch),
        "frozen_unsharded": run_frozen(a.batch, unsharded, "frozen_unsharded"),
        "frozen_convs_only": run_frozen(a.batch, convs_only(frozen), "frozen_convs_only")}
    for bs in [int(b) for b in a.batches.split(",") if b.strip() and int(b) < a.batch]:
        variants[f"frozen_b{bs}"] = run_frozen(bs, key=f"frozen_b{bs}")
    extra: dict[str, float] = {}
    if a.torch_compile:
        compiled = compile_for_inference(model, device=dev, use_torch_compile=True)
        t0 = time.perf_counter()
        run_frozen(a.batch, compiled, "frozen_compiled")()
        extra["torch_compile_first_call_s"] = time.perf_counter() - t0
        variants["frozen_compiled"] = run_frozen(a.batch, compiled, "frozen_compiled")
    for fn in variants.values():  # warm-up
        fn()
    load_before = os.getloadavg()
    runs: dict[str, list[float]] = {k: [] for k in variants}
    for _ in range(a.repeats):
        for name, fn in variants.items():
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    load_after = os.getloadavg()
    med = {k: statistics.median(v) for k, v in runs.items()}
    ips = {k: a.batch / v for k, v in med.items()}
    ref = scores["plain"]
    max_rel = {k: float(np.max(np.abs(v - ref) / np.abs(ref))) for k, v in scores.items()
               if k not in ("plain", "frozen_convs_only")}
    print(json.dumps({
        "benchmark": "score", "device": str(dev), "threads": torch.get_num_threads(),
        "config": vars(a), "n_params": sum(p.numel() for p in model.parameters()),
        "fused_conv_relu": bool(getattr(frozen, "fused", False)),
        "images_per_s": ips["frozen"],
        "plain_normflows_images_per_s": ips["plain"],
        "speedup_vs_plain": med["plain"] / med["frozen"],
        "variants_images_per_s": ips,
        "speedup_vs_plain_by_variant": {k: med["plain"] / v for k, v in med.items()},
        "speedup_ceiling_vs_plain": med["plain"] / med["frozen_convs_only"],
        "convolution_share_of_frozen": med["frozen_convs_only"] / med["frozen"],
        "best_images_per_s": {k: a.batch / min(v) for k, v in runs.items()},
        "runs_s": runs,
        "max_rel_diff_vs_plain": max_rel,
        "load_average_before": load_before, "load_average_after": load_after,
        **extra,
    }, indent=2))


if __name__ == "__main__":
    main()
