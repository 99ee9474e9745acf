"""TNG / Illustris reader: real TNG100-1 catalogue chunks, real CAMELS-TNG stars in a
TNG-layout basePath read through illustris_python, preflight errors, selection, streaming."""

from __future__ import annotations

import dataclasses
import gc
import os
import shutil
import tracemalloc

import h5py
import numpy as np
import pytest

from simcompare.config import Cosmology, DemoSimConfig, SelectionConfig
from simcompare.errors import ConfigError, DataFormatError, DataNotFoundError, RangeError
from simcompare.registry import find_sim
from simcompare.sims import open_reader, resolve_base_path
from simcompare.sims.demo import write_demo_sim
from simcompare.sims.layout import write_tng_layout
from simcompare.sims.tng import TNGReader, preflight_tng, read_groupcat_chunk, subhalo_table
from simcompare.sims.units import unwrap_periodic

COSMO = Cosmology()
SEL_ALL = SelectionConfig(min_stellar_mass_msun=1e8, mass_definition="total",
                          min_star_particles=100)


@pytest.fixture(scope="module")
def demo_bp(tmp_path_factory):
    """A small demo simulation (TNG layout); rewritten per test module."""
    root = tmp_path_factory.mktemp("tngdemo")
    cfg = DemoSimConfig(n_galaxies=40, seed=11, min_log_mass=9.0, max_log_mass=9.7)
    return write_demo_sim(root, cfg, cosmology=COSMO, box_size_ckpc_h=75000.0, softening_kpc=0.5)


def _copy(bp, tmp_path):
    dst = tmp_path / "sim"
    shutil.copytree(bp.parent, dst)
    return dst / "output"


# --------------------------------------------------------------------------- real TNG100-1
def test_real_tng100_chunk_direct_read_and_units(shared_data):
    folder = shared_data / "tng100-1-groupcat-099"
    header, data = read_groupcat_chunk(folder / "fof_subhalo_tab_099.88.hdf5",
                                       ["SubhaloMassType", "SubhaloMassInRadType",
                                        "SubhaloLenType", "SubhaloHalfmassRadType",
                                        "SubhaloSFR", "SubhaloGrNr", "SubhaloPos"],
                                       optional=["SubhaloFlag", "SubhaloWindMass"])
    assert header["NumFiles"] == 448 and len(data["SubhaloLenType"]) == 1247
    _, groups = read_groupcat_chunk(folder / "fof_subhalo_tab_099.88.hdf5",
                                    ["GroupFirstSub", "GroupNsubs"], group="Group")
    first = int(groups["GroupFirstSub"][0])  # this chunk holds exactly FoF group 50's subhalos
    assert first == 206226 and groups["GroupNsubs"][0] == 1247
    h = header["HubbleParam"]
    df = subhalo_table(data, first_id=first, snapshot=99, redshift=header["Redshift"],
                       scale_factor=header["Time"], h=h, mass_definition="total")
    assert df["object_id"].iloc[0] == 206226 and (df["group_id"] == 50).all()
    # the group's central: M* ~ 1e12 Msun in physical units (1e10 Msun/h x 1e10 / 0.6774)
    raw = float(data["SubhaloMassType"][0, 4])
    assert df["stellar_mass_msun"].iloc[0] == pytest.approx(raw * 1e10 / 0.6774, rel=1e-6)
    assert 9e11 < df["stellar_mass_msun"].iloc[0] < 1.1e12
    # z = 0: ckpc/h -> kpc is / h only
    assert df["half_mass_radius_kpc"].iloc[0] == pytest.approx(
        data["SubhaloHalfmassRadType"][0, 4] / 0.6774, rel=1e-6)
    assert df["n_star_particles"].iloc[0] == data["SubhaloLenType"][0, 4] > 1_000_000
    assert df["subhalo_flag"].dtype == bool
    assert (df["stellar_mass_in_rad_msun"] <= df["stellar_mass_total_msun"] * (1 + 1e-6)).all()
    assert (df["wind_mass_msun"] >= 0).all() and (df["sfr_msun_per_yr"] >= 0).all()
    # the real empty chunk: Subhalo group without datasets -> no rows, no error
    header1, data1 = read_groupcat_chunk(folder / "fof_subhalo_tab_099.1.hdf5",
                                         ["SubhaloMassType"])
    assert header1["Nsubgroups_ThisFile"] == 0 and data1 == {}


def test_real_tng100_chunks_alone_fail_preflight_with_one_message(shared_data, tmp_path):
    bp = tmp_path / "TNG100-1" / "output"
    (bp / "groups_099").mkdir(parents=True)
    for name in ("fof_subhalo_tab_099.1.hdf5", "fof_subhalo_tab_099.88.hdf5"):
        os.symlink(shared_data / "tng100-1-groupcat-099" / name, bp / "groups_099" / name)
    with pytest.raises(DataNotFoundError) as err:
        preflight_tng(bp, 99)
    msg = str(err.value)
    # chunk 0 is missing, snapshots and offsets too: all listed at once
    assert "fof_subhalo_tab_099.0.hdf5" in msg and "snap_099.0.hdf5" in msg
    assert "offsets_099.hdf5" in msg and "tng-project.org" in msg


# --------------------------------------------------------------------------- real CAMELS stars
def _camels_basepath(shared_data, root, *, shift_x=0.0):
    """TNG-layout basePath from the real CAMELS-TNG particles (one FoF group, 10 subhalos)."""
    folder = shared_data / "camels-tng-cv0-086"
    with h5py.File(folder / "camels_snap.hdf5", "r") as f:
        hd = dict(f["Header"].attrs)
        stars = {k: f["PartType4"][k][()] for k in f["PartType4"]}
    with h5py.File(folder / "camels_subhalo.hdf5", "r") as f:
        lens = f["Subhalo/SubhaloLenType"][()]
        pos = f["Subhalo/SubhaloPos"][()].astype(np.float64)
    box = 25000.0
    if shift_x:  # a periodic translation of the whole box: physics unchanged
        stars["Coordinates"] = stars["Coordinates"].astype(np.float64)
        stars["Coordinates"][:, 0] = (stars["Coordinates"][:, 0] + shift_x) % box
        pos[:, 0] = (pos[:, 0] + shift_x) % box
    off = np.concatenate([[0], np.cumsum(lens[:, 4])])
    mass = np.array([stars["Masses"][off[i]:off[i + 1]].astype(np.float64).sum()
                     for i in range(10)])
    mt = np.zeros((10, 6), np.float32)
    mt[:, 4] = mass
    subhalos = {"SubhaloLenType": lens, "SubhaloPos": pos.astype(np.float32),
                "SubhaloMassType": mt, "SubhaloMassInRadType": mt,
                "SubhaloHalfmassRadType": np.ones((10, 6), np.float32),
                "SubhaloSFR": np.zeros(10, np.float32), "SubhaloGrNr": np.zeros(10, np.int32)}
    glt = np.zeros((1, 6), np.int32)
    glt[0, 4] = lens[:, 4].sum()
    groups = {"GroupLenType": glt, "GroupFirstSub": np.array([0], np.int32),
              "GroupNsubs": np.array([10], np.int32)}
    header = {"BoxSize": box, "HubbleParam": hd["HubbleParam"], "Omega0": hd["Omega0"],
              "OmegaLambda": 1 - hd["Omega0"], "OmegaBaryon": 0.049,
              "Time": hd["Time"], "Redshift": 1 / hd["Time"] - 1}
    bp = write_tng_layout(root, snapshot=86, header=header, subhalos=subhalos, groups=groups,
                          stars=stars, n_groupcat_chunks=2, snapshot_cuts=(0.5,))
    return bp, stars, off, pos, hd


def test_camels_through_illustris_python_unwraps_ages_and_hsml(shared_data, tmp_path):
    sel = SelectionConfig(ids=tuple(range(10)), min_star_particles=1)
    bp, stars, off, pos, hd = _camels_basepath(shared_data, tmp_path / "plain")
    reader = TNGReader(bp, snapshot=86, selection=sel, name="camels")
    assert reader.redshift == pytest.approx(0.1, abs=2e-3)
    table = reader.select()
    assert table["object_id"].tolist() == list(range(10))
    assert table["is_central"].tolist() == [True] + [False] * 9
    a, h = hd["Time"], hd["HubbleParam"]
    astro = Cosmology(H0=100 * h, Om0=hd["Omega0"], Ob0=0.049).astropy()
    gals = {g.object_id: g for g in reader.galaxies(range(10))}
    assert len(gals) == 10 and reader.exclusions == {}
    for i, g in gals.items():
        sl = slice(off[i], off[i + 1])
        # positions relative to SubhaloPos, ckpc/h -> physical kpc
        expect = (stars["Coordinates"][sl].astype(np.float64) - pos[i]) * a / h
        np.testing.assert_allclose(g.particles.positions_kpc, expect, atol=1e-6)
        # ages in Gyr against astropy through the simulation's own cosmology
        z_form = 1 / stars["GFM_StellarFormationTime"][sl].astype(np.float64) - 1
        age = (astro.age(1 / a - 1) - astro.age(z_form)).to_value("Gyr")
        np.testing.assert_allclose(g.particles.age_gyr, age, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(g.particles.hsml_kpc,
                                   stars["SubfindHsml"][sl].astype(np.float64) * a / h)
        np.testing.assert_allclose(g.particles.initial_mass_msun,
                                   stars["GFM_InitialMass"][sl].astype(np.float64) * 1e10 / h)
        # catalogue stellar mass reproduced from the summed particles
        assert g.particles.mass_msun.sum() == pytest.approx(g.row["stellar_mass_msun"], rel=1e-6)
    # the real group straddles the box edge: subhalo 4 sits at x ~ 24876 ckpc/h, its
    # central at x ~ 88 ckpc/h; unwrapped, they are ~ 200 ckpc/h apart, not ~ 24800
    d = unwrap_periodic(stars["Coordinates"][off[4]:off[5]], pos[0], box_size=25000.0)
    assert np.abs(d[:, 0]).max() < 300.0
    assert (np.abs(stars["Coordinates"][off[4]:off[5], 0] - pos[0, 0]) > 24000).all()


def test_camels_subhalo_straddling_the_boundary_is_unwrapped(shared_data, tmp_path):
    sel = SelectionConfig(ids=(0,), min_star_particles=1)
    bp, *_ = _camels_basepath(shared_data, tmp_path / "plain")
    bps, stars_s, off, _, _ = _camels_basepath(shared_data, tmp_path / "shifted", shift_x=-75.0)
    raw_x = stars_s["Coordinates"][off[0]:off[1], 0]
    assert raw_x.min() < 50 and raw_x.max() > 24950  # subhalo 0 now straddles x = 0
    g_plain = next(TNGReader(bp, snapshot=86, selection=sel).galaxies([0]))
    g_shift = next(TNGReader(bps, snapshot=86, selection=sel).galaxies([0]))
    np.testing.assert_allclose(g_shift.particles.positions_kpc, g_plain.particles.positions_kpc,
                               atol=2e-3)
    assert np.abs(g_shift.particles.positions_kpc).max() < 60.0


# --------------------------------------------------------------------------- preflight
def test_preflight_lists_every_missing_piece(demo_bp, tmp_path):
    bp = _copy(demo_bp, tmp_path)
    (bp / "groups_078" / "fof_subhalo_tab_078.2.hdf5").unlink()
    (bp / "snapdir_078" / "snap_078.1.hdf5").unlink()
    (bp.parent / "postprocessing" / "offsets" / "offsets_078.hdf5").unlink()
    with pytest.raises(DataNotFoundError) as err:
        TNGReader(bp, snapshot=78)
    msg = str(err.value)
    assert "group-catalogue chunks 2 of 3" in msg
    assert "snapshot chunks 1 of 3" in msg and "snap_078.1.hdf5" in msg
    assert "offsets_078.hdf5" in msg
    with pytest.raises(DataNotFoundError, match="does not exist"):
        TNGReader(tmp_path / "nowhere", snapshot=78)


def test_truncated_chunk_is_named(demo_bp, tmp_path):
    bp = _copy(demo_bp, tmp_path)
    chunk = bp / "snapdir_078" / "snap_078.1.hdf5"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError, match=r"snap_078\.1\.hdf5 is corrupt or truncated"):
        TNGReader(bp, snapshot=78)
    # without the preflight, the failure while reading still names the chunk
    reader = TNGReader(bp, snapshot=78, selection=SEL_ALL, check_files=False)
    ids = reader.select()["object_id"]
    with pytest.raises(DataFormatError, match=r"snap_078\.1\.hdf5"):
        for _ in reader.galaxies(ids):
            pass


def test_mini_snapshot_without_gfm_fields(demo_bp, tmp_path):
    bp = _copy(demo_bp, tmp_path)
    for chunk in (bp / "snapdir_078").glob("*.hdf5"):
        with h5py.File(chunk, "a") as f:
            if "PartType4" in f:
                del f["PartType4/GFM_InitialMass"]
                del f["PartType4/GFM_Metallicity"]
    with pytest.raises(DataFormatError) as err:
        TNGReader(bp, snapshot=78)
    msg = str(err.value)
    assert "GFM_InitialMass" in msg and "GFM_Metallicity" in msg and "snap_078.0.hdf5" in msg


def test_corrupt_group_catalogue(demo_bp, tmp_path):
    bp = _copy(demo_bp, tmp_path)
    (bp / "groups_078" / "fof_subhalo_tab_078.0.hdf5").write_bytes(b"not an hdf5 file" * 10)
    with pytest.raises(DataFormatError, match=r"fof_subhalo_tab_078\.0\.hdf5"):
        TNGReader(bp, snapshot=78)


# --------------------------------------------------------------------------- selection
def _truth(bp):
    import illustris_python as il

    return il.groupcat.loadSubhalos(str(bp), 78, fields=[
        "SubhaloMassType", "SubhaloMassInRadType", "SubhaloLenType", "SubhaloFlag",
        "SubhaloGrNr"])


def test_selection_cuts_match_the_catalogue(demo_bp):
    truth = _truth(demo_bp)
    h = COSMO.h
    halos = __import__("illustris_python").groupcat.loadHalos(
        str(demo_bp), 78, fields=["GroupFirstSub"])
    central = halos[truth["SubhaloGrNr"]] == np.arange(truth["count"])
    for definition, field in (("total", "SubhaloMassType"), ("in_rad", "SubhaloMassInRadType")):
        m = truth[field][:, 4].astype(np.float64) * 1e10 / h
        for centrals in ("all", "centrals", "satellites"):
            sel = SelectionConfig(min_stellar_mass_msun=2e9, mass_definition=definition,
                                  centrals=centrals, min_star_particles=100)
            reader = TNGReader(demo_bp, snapshot=78, selection=sel)
            ok = (m >= 2e9) & truth["SubhaloFlag"].astype(bool) & (
                truth["SubhaloLenType"][:, 4] >= 100)
            if centrals != "all":
                ok &= central == (centrals == "centrals")
            df = reader.select()
            assert df["object_id"].tolist() == np.flatnonzero(ok).tolist()
            np.testing.assert_allclose(df["stellar_mass_msun"], m[ok], rtol=1e-6)
            assert (df["is_central"] == central[ok]).all()


def test_ids_subset_and_no_match(demo_bp):
    reader = TNGReader(demo_bp, snapshot=78, selection=dataclasses.replace(SEL_ALL, ids=(7, 3, 3)))
    assert reader.select()["object_id"].tolist() == [3, 7]
    with pytest.raises(RangeError, match="do not exist"):
        TNGReader(demo_bp, snapshot=78,
                  selection=dataclasses.replace(SEL_ALL, ids=(10**6,))).select()
    with pytest.raises(ConfigError, match="matched no galaxy") as err:
        TNGReader(demo_bp, snapshot=78,
                  selection=dataclasses.replace(SEL_ALL, min_stellar_mass_msun=1e13)).select()
    assert "min_stellar_mass_msun" in str(err.value)
    reader = TNGReader(demo_bp, snapshot=78, selection=SEL_ALL)
    full = reader.select()
    a = reader.select(n_galaxies=10, seed=1)["object_id"].tolist()
    assert a == reader.select(n_galaxies=10, seed=1)["object_id"].tolist() == sorted(a)
    assert a != reader.select(n_galaxies=10, seed=2)["object_id"].tolist()
    assert set(a) <= set(full["object_id"]) and len(a) == 10


def test_galaxies_for_unselected_ids_and_bad_id(demo_bp):
    reader = TNGReader(demo_bp, snapshot=78, selection=SEL_ALL)
    g = next(reader.galaxies([5]))  # no select() needed
    assert g.object_id == 5 and g.row["object_id"] == 5 and g.row["snapshot"] == 78
    assert g.row["n_star_particles"] == len(g.particles)
    with pytest.raises(RangeError):
        next(reader.galaxies([10**7]))


def test_illustris_layout_without_subhaloflag_and_uint32_sentinel(tmp_path):
    """Old Illustris-1 naming (groups_NNN, offsets in the headers), no SubhaloFlag, and
    GroupFirstSub = -1 stored as uint32 (illustris_python#9)."""
    rng = np.random.default_rng(0)
    n_sub, n_per = 4, 150
    lens = np.zeros((n_sub, 6), np.int32)
    lens[:, 4] = n_per
    pos = rng.uniform(100, 900, (n_sub, 3)).astype(np.float32)
    coords = np.concatenate([p + rng.normal(0, 2.0, (n_per, 3)) for p in pos])
    stars = {"Coordinates": coords, "Masses": np.full(n_sub * n_per, 1e-4, np.float32),
             "GFM_InitialMass": np.full(n_sub * n_per, 1.5e-4, np.float32),
             "GFM_StellarFormationTime": rng.uniform(0.2, 0.9, n_sub * n_per).astype(np.float32),
             "GFM_Metallicity": np.full(n_sub * n_per, 0.02, np.float32)}
    mt = np.zeros((n_sub, 6), np.float32)
    mt[:, 4] = n_per * np.float32(1e-4)
    subhalos = {"SubhaloLenType": lens, "SubhaloPos": pos, "SubhaloMassType": mt,
                "SubhaloMassInRadType": mt, "SubhaloHalfmassRadType": np.ones((n_sub, 6), np.float32),
                "SubhaloSFR": np.zeros(n_sub, np.float32),
                "SubhaloGrNr": np.array([0, 0, 1, 2], np.int32)}
    glt = np.zeros((4, 6), np.int32)
    glt[:3, 4] = [2 * n_per, n_per, n_per]
    groups = {"GroupLenType": glt,
              "GroupFirstSub": np.array([0, 2, 3, 2**32 - 1], np.uint32),
              "GroupNsubs": np.array([2, 1, 1, 0], np.int32)}
    header = {"BoxSize": 1000.0, "HubbleParam": 0.704, "Omega0": 0.2726,
              "OmegaLambda": 0.7274, "OmegaBaryon": 0.0456, "Time": 1.0, "Redshift": 0.0}
    bp = write_tng_layout(tmp_path, snapshot=135, header=header, subhalos=subhalos,
                          groups=groups, stars=stars, n_groupcat_chunks=2, naming="illustris")
    assert (bp / "groups_135" / "groups_135.0.hdf5").is_file()
    reader = TNGReader(bp, snapshot=135, selection=SEL_ALL)
    assert reader.layout.naming == "illustris"
    df = reader.select()
    assert df["object_id"].tolist() == [0, 1, 2, 3]
    assert df["is_central"].tolist() == [True, False, True, True]
    assert df["subhalo_flag"].all()
    gals = list(reader.galaxies(df["object_id"]))
    assert [len(g.particles) for g in gals] == [n_per] * 4
    assert gals[1].particles.mass_msun.sum() == pytest.approx(df["stellar_mass_msun"][1], rel=1e-6)


# --------------------------------------------------------------------------- streaming
def test_galaxies_are_streamed(demo_bp):
    reader = TNGReader(demo_bp, snapshot=78, selection=SEL_ALL)
    ids = reader.select()["object_id"].tolist() * 5
    total_bytes = 0
    gc.collect()
    tracemalloc.start()
    try:
        for g in reader.galaxies(ids):
            p = g.particles
            total_bytes += sum(a.nbytes for a in (p.positions_kpc, p.mass_msun,
                                                   p.initial_mass_msun, p.age_gyr, p.metallicity))
            del g, p
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    # the largest galaxy here holds a few thousand particles (< 0.5 MB); all of them > 4 MB
    assert total_bytes > 4e6
    assert peak < total_bytes / 5


# --------------------------------------------------------------------------- descriptors
def test_user_descriptor_in_workspace_and_base_path_precedence(demo_bp, tmp_path, monkeypatch):
    ws = tmp_path / "ws"
    (ws / "sims").mkdir(parents=True)
    shutil.copytree(demo_bp.parent, ws / "data" / "mysim")
    (ws / "sims" / "mysim.toml").write_text(
        'name = "mysim"\ntitle = "my run"\nreader = "tng"\nbase_path = "data/mysim/output"\n'
        "snapshots = [78]\ndefault_snapshot = 78\n"
        "[selection]\nmin_stellar_mass_msun = 1e9\nmass_definition = \"total\"\n")
    reader = open_reader("mysim", workspace=ws)
    assert reader.name == "mysim" and reader.snapshot == 78
    assert len(reader.select()) > 0
    sim = find_sim("mysim", workspace=ws)
    assert resolve_base_path(sim, workspace=ws) == ws / "data" / "mysim" / "output"
    monkeypatch.setenv("SIMCOMPARE_MYSIM_PATH", "/from/env")
    assert str(resolve_base_path(sim, workspace=ws)) == "/from/env"
    assert str(resolve_base_path(sim, base_path="/explicit", workspace=ws)) == "/explicit"
    monkeypatch.delenv("SIMCOMPARE_TNG100_PATH", raising=False)
    with pytest.raises(ConfigError, match="SIMCOMPARE_TNG100_PATH"):
        open_reader("tng100", workspace=ws)
