"""Bad inputs through the command line: one short message, non-zero exit, nothing left behind.

One table of cases. Each builds a broken input (simulation files, descriptors, observed
cutouts, manifests, image sets, model folders, output paths, options, the web client's
settings) in ``tmp_path``, runs ``simcompare.cli.main`` in this process and checks:

* the exit code is non-zero;
* stderr holds exactly one ``simcompare: error:`` line, no traceback, at most three
  lines in all, and the message holds the case's key words (the file or option it
  names and what to change);
* nothing was written at ``--out`` (nor its ``.part``), no stage of the workspace cache
  (``.simcompare/cache/<stage>/<key>/done.json``) or run was completed, no report written.

A few inputs are accepted on purpose, with documented behaviour (NaN pixels are masked,
a missing PSF file falls back to the survey's PSF model, one unreadable object of a
sample is left out and counted); those cases say so and check that behaviour instead.
The pristine inputs the cases start from are checked to pass first, so each failure is
the case's own defect.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest

from simcompare import imageset
from simcompare.cli import main
from simcompare.config import Cosmology, DemoSimConfig
from simcompare.observed.cutouts import write_hsc_band, write_psf
from simcompare.sims.demo import write_demo_sim

sys.path.insert(0, str(Path(__file__).parent))
from _density_fixtures import galaxy_imageset, gaussian_psf

SNAP = 78
STAMP = 16  # observed / model stamps
SIM_STAMP = 32
FAKE_KEY = "b4d1nput5-secret-key-0123456789abcdef"

SIM_TOML = """\
name = "mysim"
title = "tiny TNG-layout simulation"
reader = "tng"
base_path = "{base_path}"
snapshots = [78]
default_snapshot = 78
box_size_ckpc_h = 75000.0
softening_kpc = 0.5
observation_redshift = 0.3
[cosmology]
H0 = 67.74
Om0 = 0.3089
Ob0 = 0.0486
[selection]
min_stellar_mass_msun = 1.0e9
mass_definition = "total"
min_star_particles = 100
"""


# ---------------------------------------------------------------------------
# Templates built once: a tiny demo simulation in the TNG layout (and the SPS table a
# render of it needs), and a tiny trained model.
# ---------------------------------------------------------------------------
@pytest.fixture(scope="session")
def sim_template(tmp_path_factory) -> dict[str, Path]:
    """The pristine simulation, rendered once (which also builds the SPS table the cases copy)."""
    from simcompare.mock import render

    root = tmp_path_factory.mktemp("badinputs-sim")
    bp = write_demo_sim(root / "sim", DemoSimConfig(n_galaxies=4, seed=5, min_log_mass=9.5,
                                                    max_log_mass=10.0, snapshot=SNAP, redshift=0.3),
                        cosmology=Cosmology(), box_size_ckpc_h=75000.0, softening_kpc=0.5)
    ws = root / "ws"
    (ws / "sims").mkdir(parents=True)
    (ws / "sims" / "mysim.toml").write_text(SIM_TOML.format(base_path=bp))
    control = render("mysim", "hsc", out=root / "control.h5", n_galaxies=2, workspace=ws,
                     stamp_size=SIM_STAMP, bands=("g", "r"))
    return {"sim": root / "sim", "sps": ws / ".simcompare" / "cache" / "sps", "control": control}


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    import torch

    from simcompare.density import train

    d = tmp_path_factory.mktemp("badinputs-model")
    obs = galaxy_imageset(d / "obs.h5", n=24, size=STAMP)
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return train(obs, out=d / "model", epochs=1, background="none", levels=2, blocks=2,
                     hidden=8, batch_size=8, device="cpu")


@dataclass
class Env:
    """What a case's builder works with."""

    tmp: Path
    ws: Path
    sim_template: dict[str, Path]
    model: Path | None
    monkeypatch: pytest.MonkeyPatch
    out: Path = field(init=False)

    def __post_init__(self) -> None:
        self.out = self.tmp / "out.h5"


def _args(env: Env, *argv: str) -> list[str]:
    return [*argv, "--workspace", str(env.ws)]


# ---------------------------------------------------------------------------
# Simulation side
# ---------------------------------------------------------------------------
def _sim(env: Env, *, toml: str | None = None, selection: str = "") -> Path:
    """Copy the template simulation into tmp, describe it as workspace sims/mysim.toml."""
    root = env.tmp / "sim"
    shutil.copytree(env.sim_template["sim"], root)
    text = (toml if toml is not None else SIM_TOML).format(base_path=root / "output") + selection
    (env.ws / "sims").mkdir(parents=True, exist_ok=True)
    (env.ws / "sims" / "mysim.toml").write_text(text)
    if env.sim_template["sps"].is_dir():
        shutil.copytree(env.sim_template["sps"], env.ws / ".simcompare" / "cache" / "sps")
    return root / "output"


def _render(env: Env, *extra: str) -> list[str]:
    return _args(env, "render", "--sim", "mysim", "--survey", "hsc", "--out", str(env.out),
                 "--n-galaxies", "2", "--stamp-size", str(SIM_STAMP), "--bands", "g,r", *extra)


def _snap(bp: Path, chunk: int) -> Path:
    return bp / f"snapdir_{SNAP:03d}" / f"snap_{SNAP:03d}.{chunk}.hdf5"


def _groupcat(bp: Path, chunk: int) -> Path:
    return bp / f"groups_{SNAP:03d}" / f"fof_subhalo_tab_{SNAP:03d}.{chunk}.hdf5"


def _truncate(path: Path, fraction: float = 0.5) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])


def _edit_stars(bp: Path, edit: Callable[[h5py.Group], None]) -> None:
    for chunk in range(3):
        with h5py.File(_snap(bp, chunk), "r+") as f:
            if "PartType4" in f:
                edit(f["PartType4"])


def sim_missing_chunk(env: Env) -> list[str]:
    bp = _sim(env)
    _snap(bp, 1).unlink()
    return _render(env)


def sim_truncated_snapshot(env: Env) -> list[str]:
    bp = _sim(env)
    _truncate(_snap(bp, 2))
    return _render(env)


def sim_truncated_groupcat(env: Env) -> list[str]:
    bp = _sim(env)
    _truncate(_groupcat(bp, 0), 0.3)
    return _render(env)


def sim_missing_offsets(env: Env) -> list[str]:
    bp = _sim(env)
    (bp.parent / "postprocessing" / "offsets" / f"offsets_{SNAP:03d}.hdf5").unlink()
    return _render(env)


def sim_missing_star_dataset(env: Env) -> list[str]:
    bp = _sim(env)
    _edit_stars(bp, lambda g: g.__delitem__("GFM_Metallicity"))
    return _render(env)


def sim_missing_catalogue_dataset(env: Env) -> list[str]:
    bp = _sim(env)
    for chunk in range(3):
        with h5py.File(_groupcat(bp, chunk), "r+") as f:
            if "SubhaloMassType" in f.get("Subhalo", {}):
                del f["Subhalo"]["SubhaloMassType"]
    return _render(env)


def _wind_only_id(bp: Path) -> int:
    """The demo's subhalo made of wind cells only (all stellar mass is wind mass)."""
    first = 0
    for chunk in range(3):
        with h5py.File(_groupcat(bp, chunk), "r") as f:
            n = int(f["Header"].attrs["Nsubgroups_ThisFile"])
            if n:
                mass = f["Subhalo"]["SubhaloMassType"][:, 4]
                wind = f["Subhalo"]["SubhaloWindMass"][:]
                hit = np.flatnonzero((mass > 0) & np.isclose(wind, mass, rtol=1e-4))
                if hit.size:
                    return first + int(hit[0])
            first += n
    raise AssertionError("the demo simulation has no wind-only subhalo")  # pragma: no cover


def sim_wind_only_subhalo(env: Env) -> list[str]:
    root = env.tmp / "probe"
    shutil.copytree(env.sim_template["sim"], root)
    oid = _wind_only_id(root / "output")
    shutil.rmtree(root)
    _sim(env, selection=f"ids = [{oid}]\n")
    return _render(env)


def sim_all_wind_cells(env: Env) -> list[str]:
    bp = _sim(env)

    def edit(g: h5py.Group) -> None:
        sft = g["GFM_StellarFormationTime"]
        sft[...] = -np.abs(sft[...])
    _edit_stars(bp, edit)
    return _render(env)


def sim_empty_selection(env: Env) -> list[str]:
    _sim(env, toml=SIM_TOML.replace("min_stellar_mass_msun = 1.0e9", "min_stellar_mass_msun = 1.0e14"))
    return _render(env)


def sim_nan_coordinates(env: Env) -> list[str]:
    bp = _sim(env)

    def edit(g: h5py.Group) -> None:
        g["Coordinates"][...] = np.nan
    _edit_stars(bp, edit)
    return _render(env)


def sim_no_base_path(env: Env) -> list[str]:
    _sim(env)
    (env.ws / "sims" / "mysim.toml").write_text(SIM_TOML.format(base_path=env.tmp / "nowhere"))
    return _render(env)


def toml_syntax_error(env: Env) -> list[str]:
    _sim(env, toml=SIM_TOML.replace('title = "tiny TNG-layout simulation"', 'title = "tiny'))
    return _render(env)


def toml_missing_key(env: Env) -> list[str]:
    _sim(env, toml=SIM_TOML.replace('reader = "tng"\n', ""))
    return _render(env)


def toml_wrong_type(env: Env) -> list[str]:
    _sim(env, toml=SIM_TOML.replace("box_size_ckpc_h = 75000.0", 'box_size_ckpc_h = "big"'))
    return _render(env)


def toml_unknown_key(env: Env) -> list[str]:
    _sim(env, toml=SIM_TOML.replace("min_star_particles = 100", "min_star_particle = 100"))
    return _render(env)


def toml_negative_softening(env: Env) -> list[str]:
    _sim(env, toml=SIM_TOML.replace("softening_kpc = 0.5", "softening_kpc = -0.5"))
    return _render(env)


def survey_stamp_too_small(env: Env) -> list[str]:
    _survey_toml(env, "stamp_size = 64", "stamp_size = 4")
    argv = _hsc_sample(env)
    argv[argv.index("hsc")] = "mysurvey"
    return argv


def train_imageset_band_count_mismatch(env: Env) -> list[str]:
    p = galaxy_imageset(env.tmp / "obs.h5", n=24, size=STAMP)
    with h5py.File(p, "r+") as f:
        f.attrs["bands"] = json.dumps(["g", "r", "i"])
    return _train(env, p)


def _survey_toml(env: Env, old: str, new: str) -> None:
    from simcompare.registry import builtin_dir

    text = (builtin_dir("observed") / "hsc.toml").read_text()
    assert old in text
    (env.ws / "observed").mkdir(parents=True, exist_ok=True)
    (env.ws / "observed" / "mysurvey.toml").write_text(text.replace(old, new).replace(
        'name = "hsc"', 'name = "mysurvey"'))


def toml_wrong_type_in_table(env: Env) -> list[str]:
    _survey_toml(env, "g = 0.77,", 'g = "wide",')
    argv = _hsc_sample(env)
    argv[argv.index("hsc")] = "mysurvey"
    return argv


def score_broken_sim(env: Env) -> list[str]:
    bp = _sim(env)
    _snap(bp, 0).unlink()
    return _args(env, "score", "--sim", "mysim", "--survey", "hsc", "--n-galaxies", "2",
                 "--stamp-size", str(SIM_STAMP), "--epochs", "1")


# ---------------------------------------------------------------------------
# Observed side (HSC cutout layout and manifest)
# ---------------------------------------------------------------------------
def _blob(size: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size] - (size - 1) / 2
    return 40.0 * np.exp(-(xx**2 + yy**2) / 8.0) + rng.normal(0.0, 0.05, (size, size))


Edit = Callable[[int, str, np.ndarray, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _hsc_sample(env: Env, *, n: int = 2, size: int = 24, bands: tuple[str, ...] = ("g", "r"),
                edit: Edit | None = None, psf: bool = True,
                catalog: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> list[str]:
    cut = env.tmp / "cutouts"
    for oid in range(1, n + 1):
        for k, b in enumerate(bands):
            img = _blob(size, 10 * oid + k)
            var = np.full((size, size), 0.05**2)
            mask = np.zeros((size, size), np.int32)
            if edit is not None:
                img, var, mask = edit(oid, b, img, var, mask)
            write_hsc_band(cut / str(oid) / f"{b}.fits", image=img, variance=var, mask=mask, band=b)
            if psf:
                write_psf(cut / str(oid) / f"psf_{b}.fits", gaussian_psf(11, 1.5))
    cat = pd.DataFrame({"object_id": np.arange(1, n + 1), "redshift": np.full(n, 0.3)})
    if catalog is not None:
        cat = catalog(cat)
    cat.to_csv(env.tmp / "catalog.csv", index=False)
    return _args(env, "ingest", "--survey", "hsc", "--out", str(env.out), "--cutouts", str(cut),
                 "--catalog", str(env.tmp / "catalog.csv"), "--stamp-size", str(STAMP), "--bands", "g,r")


def _manifest(env: Env, *, edit: Callable[[pd.DataFrame], pd.DataFrame] | None = None) -> list[str]:
    _hsc_sample(env)
    rows = []
    for oid in (1, 2):
        for b in ("g", "r"):
            f = f"cutouts/{oid}/{b}.fits"
            rows.append({"object_id": oid, "band": b, "image": f, "image_hdu": "IMAGE",
                         "variance": f, "variance_hdu": "VARIANCE", "mask": f, "mask_hdu": "MASK",
                         "psf": f"cutouts/{oid}/psf_{b}.fits", "redshift": 0.3})
    df = pd.DataFrame(rows)
    if edit is not None:
        df = edit(df)
    df.to_csv(env.tmp / "manifest.csv", index=False)
    return _args(env, "ingest", "--survey", "hsc", "--out", str(env.out),
                 "--manifest", str(env.tmp / "manifest.csv"), "--stamp-size", str(STAMP), "--bands", "g,r")


def obs_truncated_fits(env: Env) -> list[str]:
    argv = _hsc_sample(env)
    for oid in (1, 2):
        _truncate(env.tmp / "cutouts" / str(oid) / "g.fits")
    return argv


def obs_all_nan_band(env: Env) -> list[str]:
    def edit(oid, b, img, var, mask):
        return (np.full_like(img, np.nan) if b == "r" else img), var, mask
    return _hsc_sample(env, edit=edit)


def obs_all_inf_band(env: Env) -> list[str]:
    def edit(oid, b, img, var, mask):
        return (np.full_like(img, np.inf) if b == "g" else img), var, mask
    return _hsc_sample(env, edit=edit)


def obs_all_zero_image(env: Env) -> list[str]:
    def edit(oid, b, img, var, mask):
        return (np.zeros_like(img) if b == "g" else img), var, mask
    return _hsc_sample(env, edit=edit)


def obs_missing_band_file(env: Env) -> list[str]:
    return _hsc_sample(env, bands=("g",))


def obs_wrong_filter(env: Env) -> list[str]:
    argv = _hsc_sample(env)
    for oid in (1, 2):
        p = env.tmp / "cutouts" / str(oid) / "r.fits"
        write_hsc_band(p, image=_blob(24, oid), variance=np.full((24, 24), 0.0025),
                       mask=np.zeros((24, 24), np.int32), band="r", filter_name="HSC-I")
    return argv


def obs_cube_too_few_planes(env: Env) -> list[str]:
    from simcompare.observed._fits import write_simple

    def edit(df: pd.DataFrame) -> pd.DataFrame:
        for oid in (1, 2):
            write_simple(env.tmp / f"cube{oid}.fits", [([], np.stack([_blob(24, oid)]).astype(np.float32))])
            write_simple(env.tmp / f"var{oid}.fits", [([], np.full((1, 24, 24), 0.0025, np.float32))])
        df = df.drop(columns=["image_hdu", "variance_hdu", "mask", "mask_hdu"])
        df["image"] = [f"cube{o}.fits" for o in df["object_id"]]
        df["variance"] = [f"var{o}.fits" for o in df["object_id"]]
        df["plane"] = [0 if b == "g" else 1 for b in df["band"]]
        return df
    return _manifest(env, edit=edit)


def obs_manifest_missing_psf(env: Env) -> list[str]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df["psf"] = [f"psfs/psf_{b}.fits" for b in df["band"]]
        return df
    return _manifest(env, edit=edit)


def obs_manifest_missing_column(env: Env) -> list[str]:
    return _manifest(env, edit=lambda df: df.drop(columns=["image"]))


def obs_manifest_missing_path(env: Env) -> list[str]:
    def edit(df: pd.DataFrame) -> pd.DataFrame:
        df["image"] = [f"moved/{o}_{b}.fits" for o, b in zip(df["object_id"], df["band"], strict=True)]
        return df
    return _manifest(env, edit=edit)


def obs_manifest_duplicate_rows(env: Env) -> list[str]:
    return _manifest(env, edit=lambda df: pd.concat([df, df.iloc[[0]]], ignore_index=True))


def obs_duplicate_ids(env: Env) -> list[str]:
    return _hsc_sample(env, catalog=lambda c: pd.concat([c, c.iloc[[0]]], ignore_index=True))


def obs_catalog_without_object_id(env: Env) -> list[str]:
    return _hsc_sample(env, catalog=lambda c: c.rename(columns={"object_id": "id"}))


def obs_catalog_missing(env: Env) -> list[str]:
    argv = _hsc_sample(env)
    (env.tmp / "catalog.csv").unlink()
    return argv


def obs_cutout_dir_missing(env: Env) -> list[str]:
    argv = _hsc_sample(env)
    shutil.rmtree(env.tmp / "cutouts")
    return argv


def obs_cutout_smaller_than_stamp(env: Env) -> list[str]:
    return _hsc_sample(env, size=6)


# ---------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------
def _train(env: Env, images: Path, *extra: str) -> list[str]:
    env.out = env.tmp / "model"
    return _args(env, "train", "--images", str(images), "--out", str(env.out), "--epochs", "1",
                 "--levels", "2", "--blocks", "2", "--hidden", "8", "--batch-size", "8",
                 "--background", "none", "--device", "cpu", *extra)


def _evaluate(env: Env, model: Path, images: Path, *extra: str) -> list[str]:
    env.out = env.tmp / "scores.parquet"
    return _args(env, "evaluate", "--model", str(model), "--images", str(images), "--out", str(env.out),
                 "--device", "cpu", *extra)


def train_one_image(env: Env) -> list[str]:
    return _train(env, galaxy_imageset(env.tmp / "one.h5", n=1, size=STAMP))


def train_cuda_without_gpu(env: Env) -> list[str]:
    import torch

    env.monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = _train(env, galaxy_imageset(env.tmp / "obs.h5", n=24, size=STAMP))
    argv[argv.index("--device") + 1] = "cuda"
    return argv


def train_truncated_imageset(env: Env) -> list[str]:
    p = galaxy_imageset(env.tmp / "obs.h5", n=24, size=STAMP)
    _truncate(p)
    return _train(env, p)


def train_imageset_is_a_directory(env: Env) -> list[str]:
    (env.tmp / "obs.h5").mkdir()
    return _train(env, env.tmp / "obs.h5")


def evaluate_stamp_mismatch(env: Env) -> list[str]:
    return _evaluate(env, env.model, galaxy_imageset(env.tmp / "big.h5", n=4, size=STAMP + 8))


def evaluate_band_mismatch(env: Env) -> list[str]:
    return _evaluate(env, env.model, galaxy_imageset(env.tmp / "gri.h5", n=4, size=STAMP, bands=3))


def evaluate_empty_model_folder(env: Env) -> list[str]:
    (env.tmp / "model").mkdir()
    return _evaluate(env, env.tmp / "model", galaxy_imageset(env.tmp / "obs.h5", n=4, size=STAMP))


def _damage_weights(damage: Callable[[bytes], bytes]) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        model = env.tmp / "model"
        shutil.copytree(env.model, model)
        weights = sorted(model.rglob("weights.pt"))
        assert weights
        for w in weights:
            w.write_bytes(damage(w.read_bytes()))
        return _evaluate(env, model, galaxy_imageset(env.tmp / "obs.h5", n=4, size=STAMP))
    return build


def evaluate_damaged_training_json(env: Env) -> list[str]:
    model = env.tmp / "model"
    shutil.copytree(env.model, model)
    (model / "training.json").write_text('{"bands": ["g", ')
    return _evaluate(env, model, galaxy_imageset(env.tmp / "obs.h5", n=4, size=STAMP))


def _option(verb_args: Callable[[Env], list[str]], option: str, value: str) -> Callable[[Env], list[str]]:
    def build(env: Env) -> list[str]:
        argv = verb_args(env)
        if option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
        return argv
    build.__name__ = f"option_{option}"
    return build


def _train_args(env: Env) -> list[str]:
    return _train(env, galaxy_imageset(env.tmp / "obs.h5", n=24, size=STAMP))


def _render_args(env: Env) -> list[str]:
    _sim(env)
    return _render(env)


def _score_args(env: Env) -> list[str]:
    _sim(env)
    return _args(env, "score", "--sim", "mysim", "--survey", "hsc")


# ---------------------------------------------------------------------------
# Outputs
# ---------------------------------------------------------------------------
def out_unwritable(env: Env) -> list[str]:
    argv = _hsc_sample(env)
    ro = env.tmp / "readonly"
    ro.mkdir()
    ro.chmod(0o555)
    env.out = ro / "obs.h5"
    if os.geteuid() == 0:  # permissions do not bind root: sysfs refuses new entries to everyone
        env.out = Path("/sys/simcompare-unwritable/obs.h5")
    argv[argv.index("--out") + 1] = str(env.out)
    return argv


def out_parent_is_a_file(env: Env) -> list[str]:
    argv = _hsc_sample(env)
    (env.tmp / "results.txt").write_text("not a folder\n")
    env.out = env.tmp / "results.txt" / "obs.h5"
    argv[argv.index("--out") + 1] = str(env.out)
    return argv


def out_is_a_directory(env: Env) -> list[str]:
    argv = _hsc_sample(env)
    env.out = env.tmp / "obs.h5"
    env.out.mkdir()
    argv[argv.index("--out") + 1] = str(env.out)
    return argv


def render_out_is_a_directory(env: Env) -> list[str]:
    argv = _render_args(env)
    env.out.mkdir()
    return argv


def evaluate_out_is_a_directory(env: Env) -> list[str]:
    argv = _evaluate(env, env.model, galaxy_imageset(env.tmp / "obs.h5", n=4, size=STAMP))
    env.out.mkdir()
    return argv


# ---------------------------------------------------------------------------
# Web client (fetch)
# ---------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _fetch(env: Env) -> list[str]:
    env.out = env.tmp / "downloads"
    return _args(env, "fetch", "--sim", "tng100", "--snapshot", "99", "--limit", "2", "--out", str(env.out))


def fetch_no_key(env: Env) -> list[str]:
    env.monkeypatch.delenv("TNG_API_KEY", raising=False)
    env.monkeypatch.setenv("SIMCOMPARE_TNG_API_URL", f"http://127.0.0.1:{_free_port()}/api/")
    return _fetch(env)


def fetch_offline(env: Env) -> list[str]:
    from simcompare.sims import tng_api as api

    env.monkeypatch.setitem(api.fetch.__kwdefaults__, "sleep", lambda s: None)  # no back-off waits
    env.monkeypatch.setenv("TNG_API_KEY", FAKE_KEY)
    env.monkeypatch.setenv("SIMCOMPARE_TNG_API_URL", f"http://127.0.0.1:{_free_port()}/api/")
    return _fetch(env)


# ---------------------------------------------------------------------------
# The table
# ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Case:
    """One bad input: how to build it, and the words its message must hold."""

    id: str
    build: Callable[[Env], list[str]]
    words: tuple[str, ...]
    #: For inputs accepted on purpose: a check of the documented behaviour (exit 0).
    accepted: Callable[[Env, str], None] | None = None
    #: Extra check after the run (e.g. a secret never written).
    also: Callable[[Env, str, str], None] | None = None
    #: For accepted inputs: the documented behaviour, in words (for the list of messages).
    note: str = ""
    #: ``--out`` may be left as an empty folder (fetch makes its download folder first).
    empty_dir_ok: bool = False


def _nan_pixels(env: Env) -> list[str]:
    def edit(oid, b, img, var, mask):
        img = img.copy()
        img[10, 10:13] = np.nan
        img[13, 11] = np.inf
        return img, var, mask
    return _hsc_sample(env, edit=edit)


def _nan_pixels_masked(env: Env, err: str) -> None:
    s = imageset.read(env.out)
    assert np.isfinite(s.images).all(), "NaN/inf pixels must be replaced"
    assert s.mask is not None
    # the four non-finite pixels of every band are flagged bad (bit 1) in the output
    assert ((s.mask & 1) != 0).sum(axis=(2, 3)).min() >= 4


def _psf_fallback(env: Env, err: str) -> None:
    s = imageset.read(env.out)
    assert len(s) == 2 and s.psf is not None
    assert "psf_g.fits" in err and "PSF model" in err, err


def _one_unreadable(env: Env) -> list[str]:
    argv = _hsc_sample(env, n=3)
    _truncate(env.tmp / "cutouts" / "2" / "r.fits")
    return argv


def _one_unreadable_counted(env: Env, err: str) -> None:
    s = imageset.read(env.out)
    assert sorted(s.object_id.tolist()) == [1, 3]
    assert s.provenance["excluded_ids"] == {"unreadable_file": [2]}
    assert "r.fits" in err and "excluding object 2" in err, err


def _key_never_shown(env: Env, out: str, err: str) -> None:
    assert FAKE_KEY not in out and FAKE_KEY not in err
    for p in env.tmp.rglob("*"):
        if p.is_file():
            assert FAKE_KEY.encode() not in p.read_bytes(), f"API key written into {p}"


CASES = [
    # simulation side -----------------------------------------------------------------
    Case("sim-missing-snapshot-chunk", sim_missing_chunk, ("snap_078.1.hdf5", "missing", "download")),
    Case("sim-truncated-snapshot-chunk", sim_truncated_snapshot,
         ("snap_078.2.hdf5", "truncated", "download")),
    Case("sim-truncated-group-catalogue", sim_truncated_groupcat, ("fof_subhalo_tab_078.0.hdf5", "download")),
    Case("sim-missing-offsets", sim_missing_offsets, ("offsets_078.hdf5", "download")),
    Case("sim-missing-star-dataset", sim_missing_star_dataset, ("GFM_Metallicity", "snap_078", "download")),
    Case("sim-missing-catalogue-dataset", sim_missing_catalogue_dataset,
         ("SubhaloMassType", "fof_subhalo_tab_078", "download")),
    Case("sim-wind-only-subhalo", sim_wind_only_subhalo,
         ("wind", "GFM_StellarFormationTime", "mysim.toml", "ids")),
    Case("sim-all-star-particles-wind", sim_all_wind_cells, ("wind", "GFM_StellarFormationTime", "output")),
    Case("sim-empty-selection", sim_empty_selection,
         ("matched no galaxy", "min_stellar_mass_msun", "loosen")),
    Case("sim-nan-coordinates", sim_nan_coordinates, ("NaN", "Coordinates", "output", "download")),
    Case("sim-base-path-missing", sim_no_base_path, ("nowhere", "does not exist", "set base_path")),
    Case("descriptor-toml-syntax-error", toml_syntax_error, ("mysim.toml", "not valid TOML", "fix")),
    Case("descriptor-missing-key", toml_missing_key, ("mysim.toml", "'reader'", "add")),
    Case("descriptor-wrong-type", toml_wrong_type, ("mysim.toml", "box_size_ckpc_h", "must be a number")),
    Case("descriptor-unknown-key", toml_unknown_key, ("mysim.toml", "min_star_particle", "spelling")),
    Case("descriptor-wrong-type-in-table", toml_wrong_type_in_table,
         ("mysurvey.toml", "psf.fwhm_arcsec", "'g'", "number")),
    Case("descriptor-negative-softening", toml_negative_softening,
         ("mysim.toml", "softening_kpc", "positive")),
    Case("survey-stamp-size-too-small", survey_stamp_too_small,
         ("mysurvey.toml", "stamp_size", "at least 8")),
    Case("score-missing-snapshot-chunk", score_broken_sim, ("snap_078.0.hdf5", "download")),
    # observed side -------------------------------------------------------------------
    Case("obs-truncated-fits", obs_truncated_fits, ("g.fits", "truncated", "download")),
    Case("obs-nan-pixels-masked", _nan_pixels, (), accepted=_nan_pixels_masked,
         note="NaN/inf pixels are bad pixels: flagged in the mask (bit 1) and filled, as documented"),
    Case("obs-all-nan-band", obs_all_nan_band, ("r.fits", "NaN", "every pixel")),
    Case("obs-all-inf-band", obs_all_inf_band, ("g.fits", "every pixel")),
    Case("obs-all-zero-image", obs_all_zero_image, ("g.fits", "zero", "download")),
    Case("obs-wrong-band-count", obs_missing_band_file, ("r.fits", "missing", "--bands")),
    Case("obs-band-mismatch", obs_wrong_filter, ("r.fits", "FILTER", "HSC-I")),
    Case("obs-cube-with-too-few-planes", obs_cube_too_few_planes, ("cube1.fits", "plane", "1")),
    Case("obs-missing-psf-in-manifest", obs_manifest_missing_psf, ("psf_g.fits", "manifest.csv", "psf")),
    Case("obs-missing-psf-file-falls-back", lambda env: _hsc_sample(env, psf=False), (),
         accepted=_psf_fallback,
         note="the survey's PSF model stands in for missing PSF files, with one warning"),
    Case("obs-manifest-missing-column", obs_manifest_missing_column, ("manifest.csv", "'image'", "add")),
    Case("obs-manifest-missing-path", obs_manifest_missing_path, ("moved", "manifest.csv")),
    Case("obs-manifest-duplicate-rows", obs_manifest_duplicate_rows,
         ("manifest.csv", "more than one row", "remove")),
    Case("obs-duplicate-ids", obs_duplicate_ids, ("catalog.csv", "duplicate object_id", "unique")),
    Case("obs-catalog-without-object-id", obs_catalog_without_object_id, ("catalog.csv", "object_id", "add")),
    Case("obs-catalog-missing", obs_catalog_missing, ("catalog.csv", "not found", "--catalog")),
    Case("obs-cutout-folder-missing", obs_cutout_dir_missing, ("cutouts", "not found", "--cutouts")),
    Case("obs-cutout-smaller-than-stamp", obs_cutout_smaller_than_stamp, ("6x6", "smaller", "--stamp-size")),
    Case("obs-one-unreadable-object-left-out", _one_unreadable, (), accepted=_one_unreadable_counted,
         note="an unreadable object is left out, with a warning naming its file, and counted"),
    # models --------------------------------------------------------------------------
    Case("train-one-image", train_one_image, ("one.h5", "1 image", "at least")),
    Case("train-cuda-without-gpu", train_cuda_without_gpu, ("cuda", "--device cpu")),
    Case("train-truncated-imageset", train_truncated_imageset, ("obs.h5", "regenerate")),
    Case("train-imageset-band-count-mismatch", train_imageset_band_count_mismatch,
         ("obs.h5", "bands lists 3", "fix the file")),
    Case("train-imageset-is-a-directory", train_imageset_is_a_directory, ("obs.h5", "directory")),
    Case("evaluate-stamp-mismatch", evaluate_stamp_mismatch, ("big.h5", "stamp 24", "same")),
    Case("evaluate-band-mismatch", evaluate_band_mismatch, ("gri.h5", "bands", "same survey bands")),
    Case("evaluate-empty-model-folder", evaluate_empty_model_folder,
         ("model", "training.json", "simcompare train")),
    Case("evaluate-truncated-weights", _damage_weights(lambda b: b[:100]), ("model", "damaged", "train")),
    Case("evaluate-empty-weights", _damage_weights(lambda b: b""), ("weights.pt", "train")),
    Case("evaluate-garbage-weights", _damage_weights(lambda b: bytes(range(256)) * 4),
         ("weights.pt", "train")),
    Case("evaluate-damaged-training-json", evaluate_damaged_training_json, ("training.json", "retrain")),
    Case("option-train-epochs-0", _option(_train_args, "--epochs", "0"), ("--epochs", "at least 1")),
    Case("option-train-batch-size-negative", _option(_train_args, "--batch-size", "-1"),
         ("--batch-size", "at least 1")),
    Case("option-train-lr-0", _option(_train_args, "--lr", "0"), ("--lr", "positive")),
    Case("option-render-n-galaxies-0", _option(_render_args, "--n-galaxies", "0"),
         ("--n-galaxies", "at least 1")),
    Case("option-render-stamp-size-0", _option(_render_args, "--stamp-size", "0"),
         ("--stamp-size", "at least 1")),
    Case("option-render-redshift-negative", _option(_render_args, "--redshift", "-0.5"),
         ("--redshift", "-0.5")),
    Case("option-score-n-bootstrap-0", _option(_score_args, "--n-bootstrap", "0"),
         ("--n-bootstrap", "at least 1")),
    Case("option-score-workers-negative", _option(_score_args, "--workers", "-2"),
         ("--workers", "at least 1")),
    # outputs -------------------------------------------------------------------------
    Case("out-unwritable", out_unwritable, ("obs.h5", "cannot write", "--out")),
    Case("out-parent-is-a-file", out_parent_is_a_file, ("results.txt", "not a folder", "--out")),
    Case("out-is-a-directory", out_is_a_directory, ("obs.h5", "directory", "--out")),
    Case("render-out-is-a-directory", render_out_is_a_directory, ("out.h5", "directory", "--out")),
    Case("evaluate-out-is-a-directory", evaluate_out_is_a_directory,
         ("scores.parquet", "directory", "--out")),
    # web client ----------------------------------------------------------------------
    Case("fetch-no-api-key", fetch_no_key, ("TNG_API_KEY", "set"), empty_dir_ok=True),
    Case("fetch-offline", fetch_offline, ("127.0.0.1", "try again"), also=_key_never_shown,
         empty_dir_ok=True),
]


def _run(argv: list[str], capsys) -> tuple[int, str, str]:
    try:
        code = main(argv)
    except SystemExit as exc:  # argparse rejects the option
        code = exc.code if isinstance(exc.code, int) else 1
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def _completed_stages(ws: Path) -> list[Path]:
    root = ws / ".simcompare"
    done = list((root / "cache").rglob("done.json")) if (root / "cache").is_dir() else []
    runs = list((root / "runs").rglob("run.json")) if (root / "runs").is_dir() else []
    return done + runs


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path, sim_template, tiny_model, monkeypatch, capsys, record_property):
    monkeypatch.delenv("TNG_API_KEY", raising=False)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))  # never the user's own settings
    ws = tmp_path / "ws"
    ws.mkdir()
    env = Env(tmp=tmp_path, ws=ws, sim_template=sim_template, model=tiny_model, monkeypatch=monkeypatch)
    argv = case.build(env)
    before = sorted(env.out.rglob("*")) if env.out.is_dir() else None  # a directory in the way
    code, out, err = _run(argv, capsys)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert not any("Traceback" in ln for ln in lines), err
    if case.accepted is not None:
        assert code == 0, err
        case.accepted(env, err)
        shown = " / ".join(lines) or "nothing"
        record_property("message", f"accepted (exit 0): {case.note}; stderr: {shown}")
        return
    errors = [ln for ln in lines if ln.startswith("simcompare: error:")]
    assert code != 0, f"exit 0 for a bad input; stderr: {err}"
    assert len(errors) == 1, err
    assert len(lines) <= 3, f"more than 3 lines on stderr:\n{err}"
    message = errors[0]
    record_property("message", message)
    missing = [w for w in case.words if w.lower() not in message.lower()]
    assert not missing, f"message lacks {missing}: {message}"
    if before is not None:
        assert env.out.is_dir() and sorted(env.out.rglob("*")) == before, f"{env.out} was changed"
    elif case.empty_dir_ok and env.out.is_dir():
        assert not any(env.out.iterdir()), f"partial output left in {env.out}"
    else:
        assert not env.out.exists(), f"partial output left at {env.out}"
    assert not env.out.with_name(env.out.name + ".part").exists(), f"partial {env.out}.part left"
    assert not _completed_stages(ws), f"a stage was completed: {_completed_stages(ws)}"
    assert not (ws / "reports").exists() or not any((ws / "reports").iterdir())
    if case.also is not None:
        case.also(env, out, err)


def test_pristine_inputs_pass(tmp_path, sim_template, tiny_model, monkeypatch, capsys):
    """The inputs every case starts from are good: each case fails for its own defect only."""
    assert len(imageset.read(sim_template["control"])) >= 1
    for build in (_render_args, _hsc_sample, _manifest, _train_args):
        tmp = tmp_path / build.__name__
        (tmp / "ws").mkdir(parents=True)
        env = Env(tmp=tmp, ws=tmp / "ws", sim_template=sim_template, model=tiny_model,
                  monkeypatch=monkeypatch)
        code, _, err = _run(build(env), capsys)
        assert code == 0, err
        if build is _train_args:
            assert json.loads((env.out / "training.json").read_text())["bands"] == ["g", "r"]
        else:
            assert len(imageset.read(env.out)) >= (1 if build is _render_args else 2)
    code, _, err = _run(_evaluate(env, tiny_model, galaxy_imageset(env.tmp / "obs4.h5", n=4, size=STAMP)),
                        capsys)
    assert code == 0, err
    assert len(pd.read_parquet(env.out)) == 4


@pytest.mark.parametrize("build", [toml_wrong_type_in_table, out_parent_is_a_file, obs_truncated_fits])
def test_bad_input_in_a_separate_process(build, tmp_path, sim_template, tiny_model, monkeypatch):
    """The same one-line message from ``python -m simcompare`` (real stderr, fresh interpreter)."""
    import subprocess

    ws = tmp_path / "ws"
    ws.mkdir()
    env = Env(tmp=tmp_path, ws=ws, sim_template=sim_template, model=tiny_model, monkeypatch=monkeypatch)
    argv = build(env)
    import simcompare

    code_root = str(Path(simcompare.__file__).resolve().parent.parent)  # the code under test
    pythonpath = os.pathsep.join([code_root, *filter(None, [os.environ.get("PYTHONPATH")])])
    proc = subprocess.run([sys.executable, "-m", "simcompare", *argv], capture_output=True, text=True,
                          check=False, cwd=tmp_path, env={**os.environ, "PYTHONPATH": pythonpath})
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr and len(lines) <= 3, proc.stderr
    assert sum(ln.startswith("simcompare: error:") for ln in lines) == 1, proc.stderr
    assert not env.out.exists()
