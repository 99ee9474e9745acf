"""The ``simcompare`` command line.

Each verb is a thin wrapper over the Python function of the same name; the parser is
built inside :func:`main` so importing this module costs nothing. Errors a user can fix
end with one line naming the fix and exit code 2; ``-v`` shows tracebacks. Any other
exception is a bug: one ``simcompare: internal error:`` line naming the log file that holds
the traceback (``<workspace>/.simcompare/logs/``, else the temp folder), exit code 3.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from ._version import __version__
from .errors import SimcompareError

__all__ = ["build_parser", "main"]

log = logging.getLogger("simcompare")

EXIT_USAGE = 2
EXIT_INVALID = 1
EXIT_INTERRUPTED = 130
EXIT_INTERNAL = 3


class _Parser(argparse.ArgumentParser):
    """ArgumentParser whose errors are one line (plus the usage)."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"simcompare: error: {message} (see '{self.prog} --help')\n")


def _bands(text: str) -> tuple[str, ...]:
    return tuple(b.strip() for b in text.split(",") if b.strip())


def _batch_size(text: str) -> int | str:
    return "auto" if text.strip().lower() == "auto" else _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        msg = f"expected a whole number, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None
    if value < 1:
        msg = f"must be at least 1, got {value}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _counts(text: str) -> tuple[int, ...]:
    """Comma-separated particle counts, e.g. ``1000,4000,2e4`` (each at least 1)."""
    out = []
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        try:
            value = float(part)
        except ValueError:
            msg = f"expected comma-separated particle counts, got {text!r}"
            raise argparse.ArgumentTypeError(msg) from None
        if value < 1 or value != int(value):
            msg = f"particle counts must be whole numbers of at least 1, got {part!r}"
            raise argparse.ArgumentTypeError(msg)
        out.append(int(value))
    if not out:
        msg = f"expected comma-separated particle counts, got {text!r}"
        raise argparse.ArgumentTypeError(msg)
    return tuple(out)


def _positive_float(text: str) -> float:
    value = _float(text)
    if not (value > 0 and math.isfinite(value)):
        msg = f"must be a positive number, got {text}"
        raise argparse.ArgumentTypeError(msg)
    return value


def _float(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        msg = f"expected a number, got {text!r}"
        raise argparse.ArgumentTypeError(msg) from None


def _general_options(p: argparse.ArgumentParser, *, defaults: bool = False) -> None:
    """-v, -q, --workspace and --no-progress; with ``defaults`` their default values."""
    g = p.add_argument_group("general")
    kw = (lambda value: {"default": value}) if defaults else (lambda value: {})
    g.add_argument("-v", "--verbose", action="count", help="more output (-vv: debug)", **kw(0))
    g.add_argument("-q", "--quiet", action="store_true", help="only warnings and errors", **kw(False))
    g.add_argument("--workspace", metavar="DIR", **kw("."),
                   help="folder for caches (.simcompare/) and reports (default: current folder)")
    g.add_argument("--no-progress", action="store_true", help="hide progress bars", **kw(False))


def _scoring_options(p: argparse.ArgumentParser) -> None:
    """``--precision``, ``--compile`` and ``--orientations``, shared by ``score`` and ``evaluate``."""
    p.add_argument("--precision", choices=("auto", "float32", "bfloat16", "float16"),
                   default="auto",
                   help="autocast precision, kept only if it scores within 1e-3 relative "
                        "of float32 (auto: float32 on CPU, bfloat16/float16 on CUDA)")
    p.add_argument("--compile", action="store_true",
                   help="run the flows through torch.compile (pays on a GPU with many "
                        "thousands of images; compiles for about a minute first)")
    p.add_argument("--orientations", type=int, choices=(1, 4, 8), default=None,
                   help="score every image in N orientations (4: its quarter turns, 8: also "
                        "mirrored) and average the maps; 4 is the default of models trained "
                        "now and of score (models trained before used 1); costs N times the "
                        "scoring")


def build_parser() -> argparse.ArgumentParser:
    """Build the argument parser (called by :func:`main`, never at import time)."""
    # The general options are accepted before the verb and after it. Their defaults are
    # set once, on the top-level parser; the verbs' copies default to SUPPRESS, so a verb
    # that is not given an option leaves the value from before the verb alone, and one
    # given after the verb wins.
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    _general_options(common)

    parser = _Parser(
        prog="simcompare",
        description="Compare the galaxies of a cosmological simulation with a survey's galaxies: "
        "mock imaging, normalizing-flow likelihoods, statistics with uncertainties, HTML reports.",
    )
    _general_options(parser, defaults=True)
    parser.add_argument("--version", action="version", version=f"simcompare {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB", parser_class=_Parser)

    def model_options(p: argparse.ArgumentParser, *, demo_note: bool = False) -> None:
        note = " (default: the simulation's [score_defaults], else %s)" if demo_note else " (default: %s)"
        p.add_argument("--levels", type=_positive_int, default=None if demo_note else 3,
                       help="multiscale levels of the Glow" + note % 3)
        p.add_argument("--blocks", type=_positive_int, default=None if demo_note else 16,
                       help="Glow blocks per level" + note % 16)
        p.add_argument("--hidden", type=_positive_int, default=None if demo_note else 128,
                       help="hidden channels of the coupling networks" + note % 128)
        p.add_argument("--epochs", type=_positive_int, default=None if demo_note else 20,
                       help="training epochs" + note % 20)
        p.add_argument("--batch-size", type=_positive_int, default=None if demo_note else 32,
                       help="training batch size" + note % 32)
        p.add_argument("--lr", type=_positive_float, default=1e-3, help="peak learning rate (default: 1e-3)")
        p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
        p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
        p.add_argument("--background", choices=("sersic", "none"), default="sersic",
                       help="background model for the likelihood ratio (default: sersic)")
        p.add_argument("--background-conditions", choices=("broad", "survey"), default="broad",
                       help="observing conditions of the background renderings: 'survey' = "
                            "the survey's PSF and noise only (the ratio then cancels noise "
                            "and PSF errors); 'broad' = also other noise levels and PSF "
                            "widths, so such errors lower the ratio (default: broad)")
        p.add_argument("--ensemble", type=_positive_int, default=None if demo_note else 1,
                       help="train K models with different seeds; scores are their mean, with "
                            "the spread in the *_std columns"
                            + (note % 3 if demo_note else " (default: 1)"))

    # score ------------------------------------------------------------------------
    p = sub.add_parser("score", parents=[common], help="the whole comparison, cached",
                       description="Render the simulation, ingest the survey sample, train the "
                       "density model, score, compare and write reports/<sim>_<survey>/index.html.")
    p.add_argument("--sim", required=True, help="simulation descriptor name (see 'simcompare list')")
    p.add_argument("--survey", required=True, help="survey descriptor name (see 'simcompare list')")
    p.add_argument("--snapshot", type=int, default=None, help="snapshot number (default: descriptor)")
    p.add_argument("--n-galaxies", type=_positive_int, default=None, help="render at most N galaxies")
    p.add_argument("--base-path", default=None, help="simulation output/ folder (overrides descriptor)")
    p.add_argument("--stamp-size", type=_positive_int, default=None, help="stamp size in pixels")
    p.add_argument("--bands", type=_bands, default=(), help="comma-separated subset of the survey's bands")
    p.add_argument("--noise", choices=("survey", "none", "blank-sky"), default="survey",
                   help="mock noise (blank-sky: insert into the descriptor's noise.blank_sky fields)")
    p.add_argument("--workers", type=_positive_int, default=None,
                   help="local worker processes (default: the machine's cores, at most 4)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="dask scheduler address")
    p.add_argument("--n-bootstrap", type=_positive_int, default=None, help="bootstrap draws")
    p.add_argument("--morphology-max", type=_positive_int, default=None,
                   help="measure morphology on at most N images per side")
    p.add_argument("--no-floor", action="store_true",
                   help="skip the pipeline floor (the held-out observed galaxies' Sersic fits "
                        "rendered as particles through the mock path); verdicts then compare "
                        "with 0.5 only")
    p.add_argument("--floor-max", type=_positive_int, default=None,
                   help="use at most N held-out observed galaxies for the floor, half "
                        "self-simulated and half re-rendered analytically (default: twice "
                        "--morphology-max)")
    p.add_argument("--floor-particles", type=_positive_int, default=None,
                   help="star particles per self-simulated galaxy (default: the median of "
                        "the rendered galaxies)")
    p.add_argument("--floor-curve", type=_counts, nargs="?", const=(1000, 4000, 20000, 100000),
                   default=(), metavar="N,N,...",
                   help="also measure the floor at these particle counts (default when given "
                        "without a value: 1000,4000,20000,100000) and show the curve")
    p.add_argument("--mock-survey", default=None, metavar="NAME",
                   help="render the mocks with this survey descriptor instead of --survey (same "
                        "pixels and bands; e.g. a copy with a 20%% wider PSF, to see how far a "
                        "wrong PSF or noise model moves each axis); the observed side and the "
                        "model stay those of --survey")
    p.add_argument("--classifier-epochs", type=_positive_int, default=None, metavar="N",
                   help="training epochs per fold of the any-difference image classifier "
                        "(default: the simulation's [score_defaults], else 50; fewer is faster "
                        "and weaker: on the closure benchmark clump removal read 0.84 at 10, "
                        "0.85-0.90 at 25 and 0.94-0.97 at 50)")
    p.add_argument("--lookalike-mass-window", type=_positive_float, default=None, metavar="DEX",
                   help="choose each simulated galaxy's observed look-alikes by appearance among "
                        "observed galaxies within DEX of its stellar mass (default: any mass)")
    _scoring_options(p)
    model_options(p, demo_note=True)

    # anomalies --------------------------------------------------------------------
    p = sub.add_parser("anomalies", parents=[common],
                       help="the observed galaxies a survey's density model finds least typical",
                       description="Ingest the survey's sample, score it with --model (or train a "
                       "model on it and rank its held-out test split) and write the least typical "
                       "galaxies as anomalies.parquet and a gallery index.html.")
    p.add_argument("--survey", required=True, help="survey descriptor name (see 'simcompare list')")
    p.add_argument("--model", type=Path, default=None,
                   help="trained model folder (default: train one on the sample)")
    p.add_argument("--out", type=Path, default=None,
                   help="output folder (default: <workspace>/reports/anomalies_<survey>/)")
    p.add_argument("--n", type=_positive_int, default=24, help="galaxies listed (default: 24)")
    p.add_argument("--stamp-size", type=_positive_int, default=None, help="stamp size in pixels")
    p.add_argument("--bands", type=_bands, default=(), help="comma-separated subset of the survey's bands")
    model_options(p)

    # render -----------------------------------------------------------------------
    p = sub.add_parser("render", parents=[common], help="mock images of a simulation (ImageSet)")
    p.add_argument("--sim", required=True)
    p.add_argument("--survey", required=True)
    p.add_argument("--out", required=True, type=Path, help="output ImageSet (.h5)")
    p.add_argument("--snapshot", type=int, default=None)
    p.add_argument("--n-galaxies", type=_positive_int, default=None)
    p.add_argument("--base-path", default=None)
    p.add_argument("--stamp-size", type=_positive_int, default=None)
    p.add_argument("--bands", type=_bands, default=())
    p.add_argument("--noise", choices=("survey", "none", "blank-sky"), default="survey")
    p.add_argument("--projection", default="random", help="x, y, z, face-on, edge-on or random")
    p.add_argument("--redshift", type=_positive_float, default=None, help="observation redshift")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--scheduler", default=None, metavar="ADDRESS")

    # ingest -----------------------------------------------------------------------
    p = sub.add_parser("ingest", parents=[common], help="real survey cutouts into an ImageSet")
    p.add_argument("--survey", required=True)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--cutouts", type=Path, default=None, help="HSC cutout layout folder")
    p.add_argument("--catalog", type=Path, default=None, help="catalogue (CSV or Parquet)")
    p.add_argument("--manifest", type=Path, default=None, help="manifest (CSV or Parquet)")
    p.add_argument("--stamp-size", type=_positive_int, default=None)
    p.add_argument("--bands", type=_bands, default=())
    p.add_argument("--workers", type=_positive_int, default=1,
                   help="worker processes (more than 1 starts a local dask cluster)")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS", help="dask scheduler address")

    # train ------------------------------------------------------------------------
    p = sub.add_parser("train", parents=[common], help="train the density model on an ImageSet")
    p.add_argument("--images", required=True, type=Path, help="observed ImageSet (.h5)")
    p.add_argument("--out", required=True, type=Path, help="model folder")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    model_options(p)

    # evaluate ---------------------------------------------------------------------
    p = sub.add_parser("evaluate", parents=[common], help="per-image scores to Parquet")
    p.add_argument("--model", required=True, type=Path)
    p.add_argument("--images", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path)
    p.add_argument("--split", choices=("train", "validation", "test"), default=None,
                   help="score only this split of the model's own training set")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-size", type=_batch_size, default="auto",
                   help="images per batch, or auto (from free GPU memory on CUDA; "
                        "default: auto)")
    _scoring_options(p)

    # compare ----------------------------------------------------------------------
    p = sub.add_parser("compare", parents=[common], help="population statistics with CIs")
    p.add_argument("--scores", required=True, nargs="+", type=Path,
                   help="score table(s) of simulated images; several give a league table")
    p.add_argument("--reference", required=True, type=Path, help="held-out observed scores")
    p.add_argument("--out", required=True, type=Path, help="summary.json (or folder for several)")
    p.add_argument("--column", default="llr_peak_nats")
    p.add_argument("--n-bootstrap", type=_positive_int, default=1000)
    p.add_argument("--n-null", type=_positive_int, default=50)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--morphology", type=Path, default=None, metavar="SIM.parquet",
                   help="morphology of the simulated images ('simcompare measure'): adds the "
                        "global-structure axis")
    p.add_argument("--morphology-reference", type=Path, default=None, metavar="REF.parquet",
                   help="morphology of the reference (held-out observed) images")

    # crosscheck -------------------------------------------------------------------
    p = sub.add_parser("crosscheck", parents=[common], help="particle renders vs published images",
                       description="Match a particle render and an image render of the same subhalos "
                       "(both from 'simcompare render' for one survey) and tabulate per band the "
                       "flux ratio, half-light radius and colour differences.")
    p.add_argument("--particles", required=True, type=Path, help="mock ImageSet rendered from particles")
    p.add_argument("--images", required=True, type=Path, help="mock ImageSet rendered from images")
    p.add_argument("--out", required=True, type=Path, help="output table (.parquet)")
    p.add_argument("--figure", type=Path, default=None, help="PNG of the pairs side by side per band")

    # measure ----------------------------------------------------------------------
    p = sub.add_parser("measure", parents=[common], help="global-axis morphology of an ImageSet",
                       description="Measure statmorph morphology (sizes, Sersic index, CAS, Gini-M20, "
                       "colours) of every stamp of an ImageSet into a Parquet table for "
                       "'simcompare compare --morphology'.")
    p.add_argument("--images", required=True, type=Path, help="ImageSet (.h5), mock or observed")
    p.add_argument("--out", required=True, type=Path, help="output table (.parquet)")
    p.add_argument("--band", default=None, help="measurement band (default i, else r, else the middle)")
    p.add_argument("--max-images", type=_positive_int, default=None,
                   help="measure a random subset of N images (default all)")
    p.add_argument("--workers", type=_positive_int, default=1)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--method", choices=("fast", "statmorph"), default="fast",
                   help="fast: vectorised statistics with statmorph's definitions and a batched "
                   "Sersic fit (default); statmorph: statmorph itself, the slow reference")

    # report -----------------------------------------------------------------------
    p = sub.add_parser("report", parents=[common], help="HTML report of a run folder")
    p.add_argument("--run", required=True, type=Path, help="run folder holding run.json")
    p.add_argument("--out", required=True, type=Path)

    # list / fetch -----------------------------------------------------------------
    sub.add_parser("list", parents=[common], help="simulations, surveys and cached runs")
    p = sub.add_parser("fetch", parents=[common], help="download TNG subhalo cutouts (web API)")
    p.add_argument("--sim", required=True)
    p.add_argument("--snapshot", type=int, required=True)
    p.add_argument("--min-stellar-mass", type=_float, default=1e10, help="Msun (physical)")
    p.add_argument("--limit", type=_positive_int, default=None)
    p.add_argument("--out", type=Path, default=None, help="download folder")

    # validate ---------------------------------------------------------------------
    p = sub.add_parser("validate", parents=[common],
                       help="check an ImageSet file (e.g. written by hand; see docs/imageset.md)")
    p.add_argument("file", type=Path, help="the HDF5 image set")
    return parser


def _configure_logging(args: argparse.Namespace) -> None:
    level = logging.WARNING if args.quiet else logging.INFO
    if args.verbose >= 2:
        level = logging.DEBUG
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s" if level > logging.DEBUG
                                           else "%(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger("simcompare")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False


def _run(args: argparse.Namespace) -> int:
    progress = not args.no_progress and not args.quiet and sys.stderr.isatty()
    ws = Path(args.workspace)
    if args.verb == "score":
        from .config import ScoreConfig
        from .pipeline import score

        cfg = ScoreConfig(
            sim=args.sim, survey=args.survey, snapshot=args.snapshot, n_galaxies=args.n_galaxies,
            base_path=args.base_path, workspace=str(ws), device=args.device, workers=args.workers,
            scheduler=args.scheduler, stamp_size=args.stamp_size, bands=args.bands,
            levels=args.levels, blocks=args.blocks, hidden=args.hidden, epochs=args.epochs,
            batch_size=args.batch_size, lr=args.lr, background=args.background,
            background_conditions=args.background_conditions, n_bootstrap=args.n_bootstrap,
            seed=args.seed, noise=args.noise, ensemble=args.ensemble,
            morphology_max=args.morphology_max, progress=progress, floor=not args.no_floor,
            floor_max=args.floor_max, floor_particles=args.floor_particles,
            floor_curve=tuple(args.floor_curve), precision=args.precision,
            lookalike_mass_window=args.lookalike_mass_window, mock_survey=args.mock_survey,
            classifier_epochs=args.classifier_epochs, compile=args.compile,
            orientations=args.orientations,
        )
        out = score(cfg)
        print(out / "index.html")
        return 0
    if args.verb == "render":
        from .mock import render

        out = render(args.sim, args.survey, out=args.out, snapshot=args.snapshot,
                     n_galaxies=args.n_galaxies, base_path=args.base_path, workspace=ws,
                     stamp_size=args.stamp_size, bands=args.bands, noise=args.noise,
                     projection=args.projection, redshift=args.redshift, seed=args.seed,
                     workers=args.workers, scheduler=args.scheduler, progress=progress)
        print(out)
        return 0
    if args.verb == "anomalies":
        from .sky_anomalies import anomalies

        out = anomalies(args.survey, model=args.model, out=args.out, workspace=ws, n=args.n,
                        stamp_size=args.stamp_size, bands=args.bands, levels=args.levels,
                        blocks=args.blocks, hidden=args.hidden, epochs=args.epochs,
                        batch_size=args.batch_size, lr=args.lr, seed=args.seed,
                        device=args.device, background=args.background, progress=progress)
        print(out)
        return 0
    if args.verb == "ingest":
        from .observed import ingest

        out = ingest(args.survey, out=args.out, cutouts=args.cutouts, catalog=args.catalog,
                     manifest=args.manifest, workspace=ws, stamp_size=args.stamp_size,
                     bands=args.bands, progress=progress, workers=args.workers,
                     scheduler=args.scheduler)
        print(out)
        return 0
    if args.verb == "train":
        from .density import train

        out = train(args.images, out=args.out, levels=args.levels, blocks=args.blocks,
                    hidden=args.hidden, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                    seed=args.seed, device=args.device, background=args.background,
                    background_conditions=args.background_conditions, ensemble=args.ensemble,
                    resume=args.resume, progress=progress)
        print(out)
        return 0
    if args.verb == "evaluate":
        from .density import evaluate

        evaluate(args.model, args.images, out=args.out, split=args.split, device=args.device,
                 batch_size=args.batch_size, progress=progress, precision=args.precision,
                 use_torch_compile=args.compile, orientations=args.orientations)
        print(args.out)
        return 0
    if args.verb == "compare":
        from .comparison import compare_files, league_table

        if (args.morphology is None) != (args.morphology_reference is None):
            from .errors import ConfigError

            msg = "give both --morphology and --morphology-reference (or neither)"
            raise ConfigError(msg)
        morph = {"morphology": args.morphology, "morphology_reference": args.morphology_reference} \
            if args.morphology is not None else {}
        if morph and len(args.scores) > 1:
            from .errors import ConfigError

            msg = "--morphology takes one simulation: give a single --scores table with it"
            raise ConfigError(msg)
        if len(args.scores) == 1:
            compare_files(args.scores[0], args.reference, out=args.out, column=args.column,
                          n_bootstrap=args.n_bootstrap, n_null=args.n_null, seed=args.seed, **morph)
            print(args.out)
            return 0
        summaries = {}
        for path in args.scores:
            target = args.out / f"{path.stem}.summary.json"
            summaries[path.stem] = compare_files(
                path, args.reference, out=target, column=args.column,
                n_bootstrap=args.n_bootstrap, n_null=args.n_null, seed=args.seed)
        league_table(summaries, out_dir=args.out)
        print(args.out)
        return 0
    if args.verb == "crosscheck":
        from .cross_check import crosscheck

        crosscheck(args.particles, args.images, out=args.out, figure=args.figure)
        print(args.out)
        return 0
    if args.verb == "measure":
        from .morphology import measure

        measure(args.images, out=args.out, band=args.band, max_images=args.max_images,
                workers=args.workers, seed=args.seed, progress=progress, method=args.method)
        print(args.out)
        return 0
    if args.verb == "report":
        from .reporting import write_index, write_report

        out = write_report(args.run, out=args.out)
        write_index(args.out.parent)
        print(out)
        return 0
    if args.verb == "list":
        from .pipeline import list_all

        print(json.dumps(list_all(workspace=ws), indent=2))
        return 0
    if args.verb == "fetch":
        from .sims.tng_api import fetch

        out = fetch(args.sim, snapshot=args.snapshot, min_stellar_mass=args.min_stellar_mass,
                    limit=args.limit, out=args.out, workspace=ws, progress=progress)
        print(out)
        return 0
    if args.verb == "validate":
        return _validate(args.file)
    return EXIT_USAGE  # pragma: no cover - argparse rejects unknown verbs


def _validate(path: Path) -> int:
    """``simcompare validate FILE``: every problem on stderr, or a one-line summary."""
    from .imageset import read, validate

    problems = validate(path)
    if problems:
        print(f"simcompare: {path}: {len(problems)} problem(s):", file=sys.stderr)
        for problem in problems:
            print(f"  - {problem}", file=sys.stderr)
        return EXIT_INVALID
    s = read(path)
    h, w = s.images.shape[2:]
    extras = ", ".join(f"{name} {'yes' if getattr(s, name) is not None else 'no'}"
                       for name in ("variance", "mask", "psf"))
    note = "" if s.psf is not None else " (a background model, and so the likelihood ratio, needs a PSF)"
    print(f"{path}: valid {s.kind} image set, {len(s)} images, bands {','.join(s.bands)}, "
          f"{h}x{w} pixels of {s.pixel_scale_arcsec:g} arcsec, {extras}{note}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.verb is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    _configure_logging(args)
    try:
        return _run(args)
    except SimcompareError as exc:
        if args.verbose:
            log.exception("error")
        print(f"simcompare: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("simcompare: interrupted; run the same command again to resume", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # e.g. `simcompare list | head`: the reader left, nothing to report
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # no second error when Python flushes stdout
        return 0
    except Exception as exc:  # the boundary: anything else is a bug to report
        return _internal_error(exc, args, sys.argv[1:] if argv is None else list(argv))


def _internal_error(exc: BaseException, args: argparse.Namespace, argv: Sequence[str]) -> int:
    """An unexpected exception: one line on stderr, the traceback in a log file."""
    import traceback

    text = "".join(traceback.format_exception(exc))
    where = _write_traceback(text, Path(args.workspace), argv)
    if args.verbose:
        print(text, end="", file=sys.stderr)
    detail = str(exc).splitlines()[0] if str(exc) else ""
    saved = f"traceback in {where}" if where else "traceback not saved: no writable folder"
    print(f"simcompare: internal error: {type(exc).__name__}: {detail} ({saved})", file=sys.stderr)
    return EXIT_INTERNAL


def _write_traceback(text: str, workspace: Path, argv: Sequence[str]) -> Path | None:
    """Write ``text`` to ``<workspace>/.simcompare/logs/`` (else the temp folder)."""
    import os
    import tempfile
    import time

    stem = f"error-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}"
    header = (f"simcompare {__version__}, {time.strftime('%Y-%m-%d %H:%M:%S %z')}\n"
              f"command: simcompare {' '.join(argv)}\n\n")
    for folder in (workspace / ".simcompare" / "logs", Path(tempfile.gettempdir()) / "simcompare-logs"):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            fd, name = tempfile.mkstemp(prefix=stem + "-", suffix=".log", dir=folder)
            with os.fdopen(fd, "w", encoding="utf-8", errors="replace") as fh:
                fh.write(header + text)
        except OSError:
            continue
        return Path(name).resolve()
    return None


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
