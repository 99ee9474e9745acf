"""Scoring speed: images/s of the fast scorer vs plain normflows log_prob (prints JSON).

Usage: python benchmarks/score.py [--bands 5] [--size 64] [--levels 3] [--blocks 16]
       [--hidden 128] [--batch 64] [--repeats 3] [--device auto]

"Plain" is normflows' ``MultiscaleFlow.log_prob(y, None)`` with the same weights (an
unmodified normflows build, LeakyReLU(0) as shipped), same batch, NCHW, autograd enabled
(how normflows is usually called); "fast" is
``simcompare.scoring.log_prob_batched`` (inference mode, channels-last on CPU).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
import torch

from simcompare.density import DensityModel
from simcompare.scoring import log_prob_batched, resolve_device


def _unmodified_glow(a: argparse.Namespace) -> torch.nn.Module:
    import normflows as nf

    c, length, size = a.bands, a.levels, a.size
    q0, merges, flows = [], [], []
    for i in range(length):
        flows.append([nf.flows.GlowBlock(c * 2 ** (length + 1 - i), a.hidden,
                                         split_mode="channel", scale=True)
                      for _ in range(a.blocks)] + [nf.flows.Squeeze()])
        if i > 0:
            merges.append(nf.flows.Merge())
            s = size // 2 ** (length - i)
            latent = (c * 2 ** (length - i), s, s)
        else:
            s = size // 2**length
            latent = (c * 2 ** (length + 1), s, s)
        q0.append(nf.distributions.DiagGaussian(latent))
    return nf.MultiscaleFlow(q0, flows, merges, class_cond=False)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bands", type=int, default=5)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--levels", type=int, default=3)
    ap.add_argument("--blocks", type=int, default=16)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="auto")
    a = ap.parse_args()
    dev = resolve_device(a.device)
    torch.manual_seed(0)
    model = DensityModel(bands=a.bands, size=a.size, levels=a.levels, blocks=a.blocks,
                         hidden=a.hidden, noise_sigma=[1.0] * a.bands)
    x = np.random.default_rng(0).normal(0, 1, (a.batch, a.bands, a.size, a.size)).astype(
        np.float32)
    model.initialize(torch.from_numpy(x))
    model.eval()
    xt = torch.from_numpy(x).to(dev)

    def sync() -> None:
        if dev.type == "cuda":
            torch.cuda.synchronize()

    plain_flow = _unmodified_glow(a)
    plain_flow.load_state_dict(model.flow.state_dict())
    plain_flow.to(dev)

    def plain() -> None:
        y = model.transform.to(dev)(xt)
        plain_flow.log_prob(y, None)
        sync()

    def fast() -> None:
        log_prob_batched(model, x, batch_size=a.batch, device=dev)
        sync()

    runs: dict[str, list[float]] = {"plain": [], "fast": []}
    plain()  # warm-up
    fast()
    for _ in range(a.repeats):  # interleaved, so load changes on a shared machine hit both
        for name, fn in (("plain", plain), ("fast", fast)):
            t0 = time.perf_counter()
            fn()
            runs[name].append(time.perf_counter() - t0)
    timings = {k: statistics.median(v) for k, v in runs.items()}
    print(json.dumps({
        "benchmark": "score", "device": str(dev), "threads": torch.get_num_threads(),
        "config": vars(a), "n_params": sum(p.numel() for p in model.parameters()),
        "images_per_s": a.batch / timings["fast"],
        "plain_normflows_images_per_s": a.batch / timings["plain"],
        "speedup_vs_plain": timings["plain"] / timings["fast"],
    }, indent=2))


if __name__ == "__main__":
    main()
