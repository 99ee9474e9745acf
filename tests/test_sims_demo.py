"""The demo simulation: TNG on-disk layout, population model, cached writing via open_reader."""

from __future__ import annotations

import dataclasses
import json

import h5py
import illustris_python as il
import numpy as np
import pytest

from simcompare.config import Cosmology, DemoSimConfig
from simcompare.errors import RangeError
from simcompare.registry import find_sim
from simcompare.sims import demo as demo_mod
from simcompare.sims import open_reader
from simcompare.sims.demo import demo_key, write_demo_sim
from simcompare.sims.tng import TNGReader
from simcompare.sims.units import unwrap_periodic

COSMO = Cosmology()
BOX = 75000.0
SMALL = DemoSimConfig(n_galaxies=30, seed=5, min_log_mass=9.0, max_log_mass=9.6)


@pytest.fixture(scope="module")
def small_demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    bp = write_demo_sim(root, SMALL, cosmology=COSMO, box_size_ckpc_h=BOX, softening_kpc=0.5)
    return root, bp


def _subhalos(bp, snap=78):
    return il.groupcat.loadSubhalos(str(bp), snap, fields=[
        "SubhaloLenType", "SubhaloMassType", "SubhaloMassInRadType", "SubhaloHalfmassRadType",
        "SubhaloPos", "SubhaloGrNr", "SubhaloFlag", "SubhaloWindMass"])


def test_layout_matches_tng(small_demo):
    root, bp = small_demo
    assert bp == root / "output"
    gc = sorted((bp / "groups_078").glob("fof_subhalo_tab_078.*.hdf5"))
    sn = sorted((bp / "snapdir_078").glob("snap_078.*.hdf5"))
    assert len(gc) >= 2 and len(sn) >= 2
    assert (root / "postprocessing" / "offsets" / "offsets_078.hdf5").is_file()
    with h5py.File(sn[0], "r") as f:
        hd = f["Header"].attrs
        assert hd["NumPart_Total"].dtype == np.uint32
        assert "NumPart_Total_HighWord" in hd
        assert hd["Redshift"] == pytest.approx(0.3)
        assert hd["Time"] == pytest.approx(1 / 1.3)
        assert hd["BoxSize"] == BOX and hd["HubbleParam"] == pytest.approx(COSMO.h)
    # one group-catalogue chunk is empty (as many real TNG chunks): no datasets at all
    counts = []
    for p in gc:
        with h5py.File(p, "r") as f:
            counts.append(int(f["Header"].attrs["Nsubgroups_ThisFile"]))
            if counts[-1] == 0:
                assert len(f["Subhalo"]) == 0
    assert 0 in counts and sum(counts) > 0


def test_illustris_python_reads_every_subhalo(small_demo):
    _, bp = small_demo
    subs = _subhalos(bp)
    n = subs["count"]
    info = json.loads((bp.parent / "demo.json").read_text())
    # 30 galaxies + 2 unresolved + 1 wind-only + 1 flagged
    assert n == SMALL.n_galaxies + 4 == info["n_subhalos"]
    halos = il.groupcat.loadHalos(str(bp), 78, fields=["GroupFirstSub", "GroupNsubs"])
    assert halos["GroupNsubs"].sum() == n
    total = 0
    for i in range(n):
        r = il.snapshot.loadSubhalo(str(bp), 78, i, "stars", fields=["Masses", "Coordinates"])
        assert r["count"] == subs["SubhaloLenType"][i, 4]
        # catalogue mass is the sum of the particles (stars + wind cells), as in TNG
        assert r["Masses"].astype(np.float64).sum() == pytest.approx(
            subs["SubhaloMassType"][i, 4], rel=1e-6)
        total += r["count"]
    # inner and outer fuzz exist: the snapshot holds more stars than all subhalos
    with h5py.File(bp / "snapdir_078" / "snap_078.0.hdf5", "r") as f:
        assert int(f["Header"].attrs["NumPart_Total"][4]) > total


def test_population_model(small_demo):
    _, bp = small_demo
    subs = _subhalos(bp)
    h, a = COSMO.h, 1 / 1.3
    flag = subs["SubhaloFlag"].astype(bool)
    gal = np.flatnonzero((subs["SubhaloLenType"][:, 4] >= 300) & flag)
    m = subs["SubhaloMassType"][gal, 4].astype(np.float64) * 1e10 / h
    # the regular galaxies: masses within the configured range, N = clip(M/5e6, 300, 8000)
    assert np.log10(m).min() >= SMALL.min_log_mass - 1e-3
    assert np.log10(m).max() <= SMALL.max_log_mass + 0.01  # + a few wind cells
    n = subs["SubhaloLenType"][gal, 4]
    n_expect = np.clip(np.round(10 ** np.log10(m) / 5e6), 300, 8000)
    assert np.all(np.abs(n - n_expect) <= 13)  # wind cells add 12 to some galaxies
    # a flagged subhalo, and centrals have group ids in order
    assert (~flag).sum() == 1 and len(gal) == SMALL.n_galaxies
    # positions: some galaxies straddle the periodic boundary
    straddle = 0
    for i in gal:
        c = il.snapshot.loadSubhalo(str(bp), 78, int(i), "stars", fields=["Coordinates"])
        raw_extent = np.ptp(c, axis=0).max()
        d = unwrap_periodic(c, subs["SubhaloPos"][i], box_size=BOX) * a / h
        assert np.abs(d).max() < 200.0  # unwrapped: compact, physical kpc
        straddle += raw_extent > BOX / 2
    assert straddle >= 1


def test_smoothing_lengths_match_neighbour_distances(small_demo):
    """StellarHsml (analytic density) agrees with the 32nd-neighbour distance it stands for."""
    from scipy.spatial import cKDTree

    _, bp = small_demo
    subs = _subhalos(bp)
    h, a = COSMO.h, 1 / 1.3
    gal = np.flatnonzero(subs["SubhaloLenType"][:, 4] >= 600)
    assert len(gal) >= 2
    ratios = []
    for i in gal[:4]:
        r = il.snapshot.loadSubhalo(str(bp), 78, int(i), "stars",
                                    fields=["Coordinates", "StellarHsml"])
        xyz = unwrap_periodic(r["Coordinates"], subs["SubhaloPos"][i], box_size=BOX) * a / h
        d32 = cKDTree(xyz).query(xyz, k=33)[0][:, -1]
        ratios.append(np.median(r["StellarHsml"] * a / h / d32))
    # the analytic value ignores Poisson clustering, so agreement is at the 30% level
    assert 0.7 < np.median(ratios) < 1.3, ratios


def test_writing_is_deterministic(tmp_path):
    cfg = dataclasses.replace(SMALL, n_galaxies=6)
    kw = {"cosmology": COSMO, "box_size_ckpc_h": BOX, "softening_kpc": 0.5}
    b1 = write_demo_sim(tmp_path / "a", cfg, **kw)
    b2 = write_demo_sim(tmp_path / "b", cfg, **kw)
    b3 = write_demo_sim(tmp_path / "c", dataclasses.replace(cfg, seed=6), **kw)
    for name in ("Coordinates", "GFM_StellarFormationTime"):
        f1 = h5py.File(b1 / "snapdir_078" / "snap_078.1.hdf5", "r")
        f2 = h5py.File(b2 / "snapdir_078" / "snap_078.1.hdf5", "r")
        f3 = h5py.File(b3 / "snapdir_078" / "snap_078.1.hdf5", "r")
        with f1, f2, f3:
            np.testing.assert_array_equal(f1["PartType4"][name][()], f2["PartType4"][name][()])
            assert f1["PartType4"][name].shape != f3["PartType4"][name].shape or not np.array_equal(
                f1["PartType4"][name][()], f3["PartType4"][name][()])


def test_bad_config_is_a_range_error(tmp_path):
    kw = {"cosmology": COSMO, "box_size_ckpc_h": BOX, "softening_kpc": 0.5}
    with pytest.raises(RangeError, match="n_galaxies"):
        write_demo_sim(tmp_path, dataclasses.replace(SMALL, n_galaxies=0), **kw)
    with pytest.raises(RangeError, match="min_log_mass"):
        write_demo_sim(tmp_path, dataclasses.replace(SMALL, min_log_mass=12.0), **kw)


def test_reader_reproduces_catalogue_masses_and_components(small_demo):
    _, bp = small_demo
    sel = dataclasses.replace(find_sim("demo").selection, min_stellar_mass_msun=1e9,
                              mass_definition="total")
    reader = TNGReader(bp, snapshot=78, selection=sel, name="demo", cosmology=COSMO)
    table = reader.select()
    assert reader.exclusions == {"subhalo_flag": 1, "too_few_star_particles": 2}
    n_young = n_all = 0
    seen = 0
    t_universe = COSMO.astropy().age(0.3).to_value("Gyr")
    for g in reader.galaxies(table["object_id"]):
        p = g.particles
        seen += 1
        # summed particles (stars + dropped wind cells) reproduce SubhaloMassType to < 1e-3
        total = p.mass_msun.sum() + g.row["wind_mass_msun"]
        assert abs(total / g.row["stellar_mass_total_msun"] - 1) < 1e-3
        # the catalogue half-mass radius encloses half of the stellar mass
        r = np.linalg.norm(p.positions_kpc, axis=1)
        inside = p.mass_msun[r <= g.row["half_mass_radius_kpc"] * (1 + 1e-5)].sum()
        assert inside / total == pytest.approx(0.5, abs=0.02)
        assert (p.initial_mass_msun >= p.mass_msun).all()
        assert set(np.round(np.unique(p.metallicity), 4)) <= {0.015, 0.02}
        # ages are capped at the age of the universe at z = 0.3 minus 50 Myr
        assert p.age_gyr.max() <= t_universe - 0.05 + 1e-3
        n_young += int((p.age_gyr < 0.3).sum())
        n_all += len(p)
    assert seen == len(table) - 1  # the wind-only subhalo is skipped...
    assert reader.exclusions["wind_only"] == 1  # ...and counted
    # clumps: clump_fraction of the disc mass is young (0.05-0.3 Gyr)
    # (the disc holds 20-85% of the particles, so the young share is a fraction of that)
    assert 0.15 * SMALL.clump_fraction < n_young / n_all < SMALL.clump_fraction


def test_open_reader_writes_demo_once_and_reuses_it(tmp_path, monkeypatch):
    demo = find_sim("demo")
    demo = dataclasses.replace(demo, demo=dataclasses.replace(demo.demo, n_galaxies=12))
    calls = []
    real = demo_mod.write_demo_sim

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(demo_mod, "write_demo_sim", counting)
    r1 = open_reader(demo, workspace=tmp_path)
    key = demo_key(demo.demo, cosmology=demo.cosmology, box_size_ckpc_h=demo.box_size_ckpc_h,
                   softening_kpc=demo.softening_kpc)
    folder = tmp_path / ".simcompare" / "sims" / f"demo-{key}"
    assert (folder / "COMPLETE").is_file() and (folder / "output" / "snapdir_078").is_dir()
    assert [p.name for p in folder.parent.iterdir()] == [folder.name]  # no temp folders left
    r2 = open_reader(demo, workspace=tmp_path)
    assert len(calls) == 1
    assert r1.redshift == pytest.approx(0.3) and r2.snapshot == 78
    assert r1.cosmology.h == pytest.approx(demo.cosmology.h)
    t1 = r1.select(n_galaxies=5)
    t2 = r2.select(n_galaxies=5)
    assert t1["object_id"].tolist() == t2["object_id"].tolist()
    assert t1["object_id"].is_monotonic_increasing and len(t1) == 5
    for col in ("object_id", "snapshot", "redshift", "stellar_mass_msun",
                "half_mass_radius_kpc", "sfr_msun_per_yr", "is_central", "n_star_particles"):
        assert col in t1.columns
    # another [demo] config writes another folder
    open_reader(dataclasses.replace(demo, demo=dataclasses.replace(demo.demo, seed=9)),
                workspace=tmp_path)
    assert len(calls) == 2
    with pytest.raises(RangeError, match="snapshot"):
        open_reader(demo, workspace=tmp_path, snapshot=99)


def test_default_demo_config_is_the_documented_population():
    demo = find_sim("demo")
    assert demo.reader == "demo" and demo.demo.n_galaxies >= 300
    assert (demo.demo.min_log_mass, demo.demo.max_log_mass) == (9.5, 11.5)
    assert demo.score_defaults.stamp_size is not None
