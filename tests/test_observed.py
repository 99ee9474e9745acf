"""Tests of the observed-sample readers, ingestion, exclusions and demo samples."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from simcompare import imageset
from simcompare.errors import ConfigError, DataFormatError, DataNotFoundError
from simcompare.observed import (
    ingest,
    load_sample,
    make_cosmos_sample,
    make_demo_sample,
    read_hsc_band,
    read_psf,
    write_hsc_band,
    write_psf,
)
from simcompare.observed._fits import read_simple, write_simple
from simcompare.stamps import HSC_MASK_PLANES, StampMask, prepare_psf

STAMP = 32


@pytest.fixture(scope="module")
def demo(hsc, tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    cutouts, catalog = make_demo_sample(hsc, root=root, n_galaxies=24, seed=3, stamp_size=STAMP,
                                        redshift=0.3, neighbour_fraction=0.4, defect_fraction=0.3)
    return root, cutouts, catalog


@pytest.fixture(scope="module")
def demo_set(hsc, demo, tmp_path_factory):
    _, cutouts, catalog = demo
    out = tmp_path_factory.mktemp("ingest") / "obs.h5"
    ingest(hsc, out=out, cutouts=cutouts, catalog=catalog, stamp_size=STAMP)
    return imageset.read(out)


def _copy_demo(demo, tmp_path: Path) -> tuple[Path, Path]:
    _, cutouts, catalog = demo
    dst = tmp_path / "cutouts"
    shutil.copytree(cutouts, dst)
    cat = tmp_path / "catalog.csv"
    pd.read_parquet(catalog).to_csv(cat, index=False)
    return dst, cat


# ---------------------------------------------------------------------------
# file formats
# ---------------------------------------------------------------------------
def test_fast_fits_matches_astropy(tmp_path, shared_data):
    from astropy.io import fits

    img = np.arange(12, dtype=np.float32).reshape(3, 4)
    mask = np.array([[0, 1, 2, 3]] * 3, np.int32)
    path = write_hsc_band(tmp_path / "g.fits", image=img, variance=img + 1, mask=mask, band="g",
                          ra=150.1, dec=2.2)
    with fits.open(path) as h:
        assert [x.name for x in h] == ["PRIMARY", "IMAGE", "MASK", "VARIANCE"]
        assert h[0].header["FILTER"] == "HSC-G" and h[0].data is None
        np.testing.assert_array_equal(h["IMAGE"].data, img)
        assert h["MASK"].data.dtype.kind == "i" and h["MASK"].header["MP_NO_DATA"] == 8
        assert h["IMAGE"].header["CRVAL1"] == 150.1
    # the fast reader reads real survey files exactly like astropy
    for name in ("hsc_ra150.24071_dec2.06514.fits", "psf_hsc_ra150.24071_dec2.06514.fits",
                 "Cut_HSC.fits"):
        path = shared_data / "scarlet-hsc" / name
        ours = read_simple(path)
        with fits.open(path) as h:
            np.testing.assert_array_equal(ours[0][1], h[0].data)
            assert ours[0][0]["NAXIS1"] == h[0].header["NAXIS1"]
            if "CRVAL1" in h[0].header:
                assert ours[0][0]["CRVAL1"] == h[0].header["CRVAL1"]


def test_fits_writer_non_finite_values_and_long_strings_are_valid_fits(tmp_path):
    """NaN/inf header values are written as strings, long strings with CONTINUE cards;
    astropy's strictest verification passes and both readers give the same values."""
    from astropy.io import fits

    long = "".join(f"{i:03d} it's a long note; " for i in range(10))[:200]
    assert len(long) == 200 and long.count("'") > 5
    cards = [("NANVAL", float("nan")), ("POSINF", np.inf), ("NEGINF", np.float32(-np.inf)),
             ("HALF", 0.5), ("BIG", 1e20), ("LONGSTR", long), ("SHORT", "it's"),
             ("EXACT68", "x" * 68), ("QUOTES", "'" * 34 + "y"), ("AFTER", 7)]
    hier = "MP_" + "A" * 40  # HIERARCH: a long string is cut to one card, closing quote kept
    cards.append((hier, long))
    img = np.arange(6, dtype=np.float32).reshape(2, 3)
    path = tmp_path / "h.fits"
    write_simple(path, [([("FILTER", long)], None), ([("EXTNAME", "IMAGE"), *cards], img)])
    with fits.open(path) as h:
        h.verify("exception")
        for hdu in h:
            hdu.header.tostring()  # every card parses
            for card in hdu.header.cards:
                card.verify("exception")
        ref = [dict(x.header.items()) for x in h]
        np.testing.assert_array_equal(h[1].data, img)
    ours = read_simple(path)
    np.testing.assert_array_equal(ours[1][1], img)
    hdr = ours[1][0]
    for key in ("NANVAL", "POSINF", "NEGINF", "HALF", "BIG", "LONGSTR", "SHORT", "EXACT68",
                "QUOTES", "AFTER", hier, "EXTNAME"):
        assert hdr[key] == ref[1][key], key
    assert ours[0][0]["FILTER"] == ref[0]["FILTER"] == long
    # the documented round trip: non-finite numbers come back through float()
    assert np.isnan(float(hdr["NANVAL"]))
    assert float(hdr["POSINF"]) == np.inf and float(hdr["NEGINF"]) == -np.inf
    assert hdr["HALF"] == 0.5 and hdr["BIG"] == 1e20 and hdr["AFTER"] == 7
    assert hdr["LONGSTR"] == long and hdr["SHORT"] == "it's"
    assert hdr["EXACT68"] == "x" * 68 and hdr["QUOTES"] == "'" * 34 + "y"
    assert long.startswith(hdr[hier]) and 20 < len(hdr[hier]) < len(long)
    text = path.read_bytes().decode("latin-1")
    assert re.search(r"= +[-+]?(NAN|INF)", text, re.IGNORECASE) is None  # no bare NaN cards
    # 200 characters (209 escaped): 3 continuation cards, twice; 34 quotes + "y" (69
    # escaped): one, and the split keeps each doubled quote whole
    assert text.count("CONTINUE  '") == 2 * 3 + 1
    assert "CONTINUE  '" + "''" + "y'" in text


def test_tan_wcs_fast_path_matches_astropy(shared_data):
    from astropy.io import fits
    from astropy.wcs import WCS

    from simcompare.observed.wcs import _tan_world2pix

    hdr = fits.getheader(shared_data / "scarlet-hsc" / "hsc_ra150.24071_dec2.06514.fits")
    wcs = WCS(hdr, naxis=2)
    for ra, dec in ((150.24071, 2.06514), (150.2479, 2.2314), (150.30, 2.0)):
        x, y = wcs.all_world2pix(ra, dec, 0)
        np.testing.assert_allclose(_tan_world2pix(dict(hdr.items()), ra, dec), (x, y), atol=1e-6)
    skewed = {"CTYPE1": "RA---TAN", "CTYPE2": "DEC--TAN", "CRPIX1": 10.5, "CRPIX2": 12.0,
              "CRVAL1": 30.0, "CRVAL2": -60.0, "CD1_1": -5e-5, "CD1_2": 1e-5, "CD2_1": 2e-5,
              "CD2_2": 4.6e-5}
    x, y = WCS(fits.Header(skewed)).all_world2pix(30.01, -59.995, 0)
    np.testing.assert_allclose(_tan_world2pix(skewed, 30.01, -59.995), (x, y), atol=1e-6)
    assert _tan_world2pix({**skewed, "A_ORDER": 2}, 30.0, -60.0) is None  # SIP -> astropy


def test_read_hsc_band_and_psf(tmp_path):
    rng = np.random.default_rng(0)
    img = rng.normal(size=(10, 12)).astype(np.float32)
    path = write_hsc_band(tmp_path / "r.fits", image=img, variance=np.ones_like(img),
                          mask=np.zeros(img.shape, np.int32), band="r")
    out = read_hsc_band(path, band="r")
    np.testing.assert_array_equal(out["image"], img)
    assert out["mask_planes"] == dict(HSC_MASK_PLANES)
    psf = write_psf(tmp_path / "psf_r.fits", np.ones((5, 5)))
    assert read_psf(psf).shape == (5, 5)


# ---------------------------------------------------------------------------
# the demo sample through the real reader
# ---------------------------------------------------------------------------
def test_demo_sample_layout(demo, hsc):
    _, cutouts, catalog = demo
    cat = pd.read_parquet(catalog)
    assert len(cat) == 24
    for col in ("object_id", "ra", "dec", "redshift", "stellar_mass_msun", "half_light_radius_arcsec",
                "bulge_to_total", "inclination_deg"):
        assert col in cat.columns
    assert np.all((cat.log_stellar_mass >= 9.5) & (cat.log_stellar_mass <= 11.5))
    np.testing.assert_allclose(cat.bulge_to_total,
                               np.clip(0.15 + 0.25 * (cat.log_stellar_mass - 9.5), 0.05, 0.8))
    assert (cat.n_clumps == 0).all()
    oid = cat.object_id.iloc[0]
    for b in hsc.bands:
        assert (cutouts / str(oid) / f"{b}.fits").is_file()
        assert (cutouts / str(oid) / f"psf_{b}.fits").is_file()
    # brighter in the redder bands for these old populations at z = 0.3
    assert (cat.mag_i < cat.mag_g).all()


def test_demo_sample_is_reused(hsc, demo):
    root, cutouts, _ = demo
    f = next(cutouts.glob("*/g.fits"))
    before = f.stat().st_mtime_ns
    again = make_demo_sample(hsc, root=root, n_galaxies=24, seed=3, stamp_size=STAMP, redshift=0.3,
                             neighbour_fraction=0.4, defect_fraction=0.3)
    assert again[0] == cutouts and f.stat().st_mtime_ns == before


def test_demo_ingested_imageset(demo_set, demo, hsc):
    s = demo_set
    cat = pd.read_parquet(demo[2])
    assert s.kind == "observed" and s.bands == tuple(hsc.bands)
    assert s.images.shape == (24, 5, STAMP, STAMP)
    assert s.psf.shape == (5, 25, 25)
    np.testing.assert_allclose(s.psf.sum(axis=(-1, -2)), 1.0, atol=1e-5)
    assert s.provenance["exclusions"] == {}
    frame = s.catalog_frame().set_index("object_id").loc[cat.object_id]
    np.testing.assert_allclose(frame.stellar_mass_msun.to_numpy(), cat.stellar_mass_msun.to_numpy())
    # objects with a neighbour get pixels replaced; isolated ones (almost) never
    nb = frame.n_neighbour_pixels.to_numpy()
    has = cat.has_neighbour.to_numpy()
    assert has.any() and (nb[has] > 0).mean() >= 0.75
    assert (nb[~has] == 0).mean() >= 0.9
    # defects are masked
    rows = {d: np.flatnonzero(cat.defect.to_numpy() == d) for d in ("cr", "bad_column", "no_data_edge")}
    order = {oid: i for i, oid in enumerate(s.object_id)}
    for d, idx in rows.items():
        for i in idx:
            m = s.mask[order[int(cat.object_id.iloc[i])]]
            assert ((m & StampMask.BAD) != 0).any(), d
    # the galaxy sits at the centre: the flux-weighted centroid of the i band is near 15.5
    k = hsc.bands.index("i")
    iso = [order[int(o)] for o in cat.object_id[~has & (cat.defect == "")]]
    img = np.clip(s.images[iso, k], 0, None)
    xx = np.mgrid[0:STAMP, 0:STAMP][1]
    cx = (img * xx).sum(axis=(1, 2)) / img.sum(axis=(1, 2))
    assert np.all(np.abs(cx - 15.5) < 1.0)


def test_demo_noise_matches_descriptor(demo_set, hsc):
    """Sky pixels have the descriptor's sky sigma; variance = sky^2 + source/gain."""
    s = demo_set
    for k, b in enumerate(hsc.bands):
        corner = s.images[:, k, :4, -4:]
        corner = corner - np.median(corner, axis=(1, 2), keepdims=True)  # faint galaxy wings
        robust = 1.4826 * np.median(np.abs(corner))
        sky = hsc.noise.sky_sigma[b]
        assert 0.85 * sky < robust < 1.2 * sky
        assert np.median(s.variance[:, k, :4, -4:]) == pytest.approx(sky**2, rel=0.05)


def test_size_scale_and_clumps(hsc, tmp_path):
    _, c1 = make_demo_sample(hsc, root=tmp_path / "a", n_galaxies=3, seed=5, stamp_size=16,
                             redshift=0.3, size_scale=1.0)
    _, c2 = make_demo_sample(hsc, root=tmp_path / "b", n_galaxies=3, seed=5, stamp_size=16,
                             redshift=0.3, size_scale=1.25, clumps=True)
    a, b = pd.read_parquet(c1), pd.read_parquet(c2)
    np.testing.assert_allclose(b.disc_half_light_radius_kpc / a.disc_half_light_radius_kpc, 1.25)
    np.testing.assert_allclose(b.stellar_mass_msun, a.stellar_mass_msun)
    assert (b.n_clumps >= 3).all() and (a.n_clumps == 0).all()


def test_load_sample_follows_descriptor(tmp_path, hsc):
    ws = tmp_path / "ws"
    (ws / "observed").mkdir(parents=True)
    text = Path(hsc.source).read_text().replace("demo_n_galaxies = 1500", "demo_n_galaxies = 6")
    (ws / "observed" / "mini.toml").write_text(text.replace('name = "hsc"', 'name = "mini"'))
    out = load_sample("mini", out=ws / "obs.h5", workspace=ws, stamp_size=24)
    s = imageset.read(out)
    assert len(s) == 6 and s.images.shape[-1] == 24 and s.survey == "mini"
    roots = list((ws / ".simcompare" / "observed").glob("mini-demo-*"))
    assert len(roots) == 1 and (roots[0] / "done.json").is_file()
    # a descriptor pointing at a cutout folder + catalogue (paths relative to the descriptor)
    shutil.copytree(roots[0] / "cutouts", ws / "observed" / "cut")
    shutil.copy(roots[0] / "catalog.parquet", ws / "observed" / "cat.parquet")
    text2 = text.replace("\ndemo = true\n", '\ncutout_dir = "cut"\ncatalog = "cat.parquet"\n')
    (ws / "observed" / "real.toml").write_text(text2.replace('name = "hsc"', 'name = "real"'))
    s2 = imageset.read(load_sample("real", out=ws / "obs2.h5", workspace=ws, stamp_size=24))
    np.testing.assert_array_equal(np.sort(s2.object_id), np.sort(s.object_id))


# ---------------------------------------------------------------------------
# cuts and bad input
# ---------------------------------------------------------------------------
def test_cuts(demo, hsc, tmp_path):
    _, cutouts, catalog = demo
    cat = pd.read_parquet(catalog)
    lo = float(np.median(cat.stellar_mass_msun))
    out = ingest(hsc, out=tmp_path / "c.h5", cutouts=cutouts, catalog=catalog, stamp_size=STAMP,
                 cuts={"stellar_mass_msun": [lo, None]}, mask_neighbours=False)
    s = imageset.read(out)
    assert len(s) == int((cat.stellar_mass_msun >= lo).sum())
    assert s.provenance["removed_by_cuts"] == {"stellar_mass_msun": 24 - len(s)}
    # the same cut from the survey descriptor's [sample] cuts
    cut_table = f"\n[sample.cuts]\nstellar_mass_msun = [{lo!r}, 1e13]\n"
    text = Path(hsc.source).read_text() + cut_table  # [sample] is the descriptor's last table
    (tmp_path / "observed").mkdir()
    (tmp_path / "observed" / "cut.toml").write_text(text.replace('name = "hsc"', 'name = "cut"'))
    s2 = imageset.read(ingest("cut", out=tmp_path / "c2.h5", cutouts=cutouts, catalog=catalog,
                              workspace=tmp_path, stamp_size=STAMP, mask_neighbours=False))
    np.testing.assert_array_equal(s2.object_id, s.object_id)
    with pytest.raises(ConfigError, match="no such column"):
        ingest(hsc, out=tmp_path / "d.h5", cutouts=cutouts, catalog=catalog, cuts={"nope": [0, 1]})
    with pytest.raises(DataFormatError, match="no usable object"):
        ingest(hsc, out=tmp_path / "e.h5", cutouts=cutouts, catalog=catalog,
               cuts={"redshift": [1.0, 2.0]})


def test_bad_inputs_are_excluded_and_counted(demo, hsc, tmp_path):
    cutouts, cat_path = _copy_demo(demo, tmp_path)
    cat = pd.read_csv(cat_path)
    ids = [int(x) for x in cat.object_id[:8]]
    # 1. truncated FITS
    f = cutouts / str(ids[0]) / "r.fits"
    f.write_bytes(f.read_bytes()[:4000])
    # 2. missing VARIANCE extension
    f = cutouts / str(ids[1]) / "i.fits"
    hdus = read_simple(f)
    write_simple(f, [([("FILTER", "HSC-I")], None),
                     ([("EXTNAME", "IMAGE")], hdus[1][1]), ([("EXTNAME", "MASK")], hdus[2][1])])
    # 3. band mismatch: the z file holds the y band
    shutil.copy(cutouts / str(ids[2]) / "y.fits", cutouts / str(ids[2]) / "z.fits")
    # 4. all pixels masked (NO_DATA) in the g band
    f = cutouts / str(ids[3]) / "g.fits"
    h = read_hsc_band(f, band="g")
    write_hsc_band(f, image=h["image"], variance=h["variance"],
                   mask=np.full(h["image"].shape, 1 << HSC_MASK_PLANES["NO_DATA"], np.int32), band="g")
    # 5. catalogue row without a folder, 6. a missing band file
    shutil.rmtree(cutouts / str(ids[4]))
    (cutouts / str(ids[5]) / "y.fits").unlink()
    # 7. a missing PSF file falls back to the descriptor's PSF model (object kept)
    (cutouts / str(ids[6]) / "psf_g.fits").unlink()
    # 8. most of the stamp without data
    for b in hsc.bands:
        f = cutouts / str(ids[7]) / f"{b}.fits"
        h = read_hsc_band(f, band=b)
        m = h["mask"].astype(np.int32)
        m[:, : STAMP * 3 // 4] |= 1 << HSC_MASK_PLANES["NO_DATA"]
        write_hsc_band(f, image=h["image"], variance=h["variance"], mask=m, band=b)
    out = ingest(hsc, out=tmp_path / "o.h5", cutouts=cutouts, catalog=cat_path, stamp_size=STAMP)
    s = imageset.read(out)
    prov = s.provenance
    assert prov["exclusions"] == {"unreadable_file": 1, "missing_extension": 1, "band_mismatch": 1,
                                  "all_masked": 1, "missing_file": 1, "missing_band": 1,
                                  "mostly_masked": 1}
    assert ids[6] in s.object_id.tolist() and s.psf.shape == (5, 25, 25)
    assert prov["excluded_ids"]["unreadable_file"] == [ids[0]]
    assert prov["excluded_ids"]["missing_file"] == [ids[4]]
    assert len(s) == 24 - 7 and not (set(ids) - {ids[6]}) & set(s.object_id.tolist())
    # strict mode names the file instead
    with pytest.raises(DataFormatError, match=f"{ids[0]}.*r.fits"):
        ingest(hsc, out=tmp_path / "p.h5", cutouts=cutouts, catalog=cat_path, stamp_size=STAMP,
               strict=True)
    assert not (tmp_path / "p.h5").exists()


def test_bad_catalogues_and_options(demo, hsc, tmp_path):
    _, cutouts, catalog = demo
    bad = tmp_path / "bad.csv"
    bad.write_text("id,ra\n1,2\n")
    with pytest.raises(DataFormatError, match="object_id"):
        ingest(hsc, out=tmp_path / "x.h5", cutouts=cutouts, catalog=bad)
    dup = tmp_path / "dup.csv"
    dup.write_text("object_id\n1\n1\n")
    with pytest.raises(DataFormatError, match="duplicate"):
        ingest(hsc, out=tmp_path / "x.h5", cutouts=cutouts, catalog=dup)
    with pytest.raises(DataNotFoundError):
        ingest(hsc, out=tmp_path / "x.h5", cutouts=cutouts, catalog=tmp_path / "none.csv")
    with pytest.raises(DataNotFoundError):
        ingest(hsc, out=tmp_path / "x.h5", cutouts=tmp_path / "nodir", catalog=catalog)
    with pytest.raises(ConfigError, match="not bands"):
        ingest(hsc, out=tmp_path / "x.h5", cutouts=cutouts, catalog=catalog, bands=("u",))
    with pytest.raises(ConfigError, match="names no observed sample"):
        ingest(dataclasses.replace(hsc, sample=dataclasses.replace(hsc.sample, demo=False)),
               out=tmp_path / "x.h5")
    assert not (tmp_path / "x.h5").exists()


# ---------------------------------------------------------------------------
# manifest layout
# ---------------------------------------------------------------------------
def test_manifest_layout(demo, demo_set, hsc, tmp_path):
    _, cutouts, catalog = demo
    cat = pd.read_parquet(catalog).iloc[:5]
    rows = []
    for r in cat.itertuples():
        for b in hsc.bands:
            h = read_hsc_band(cutouts / str(r.object_id) / f"{b}.fits", band=b)
            d = tmp_path / "m" / str(r.object_id)
            d.mkdir(parents=True, exist_ok=True)
            write_simple(d / f"{b}_img.fits", [([("CRVAL1", 0.0)], h["image"].astype(np.float32))])
            sig = np.sqrt(h["variance"]).astype(np.float32)
            write_simple(d / f"{b}_sig.fits", [([], None), ([("EXTNAME", "SIGMA")], sig)])
            bad = (h["mask"] & ((1 << HSC_MASK_PLANES["CR"]) | (1 << HSC_MASK_PLANES["BAD"])
                                | (1 << HSC_MASK_PLANES["NO_DATA"]))) != 0
            write_simple(d / f"{b}_msk.fits", [([], bad.astype(np.int16))])
            rows.append({"object_id": r.object_id, "band": b, "image": f"{r.object_id}/{b}_img.fits",
                         "sigma": f"{r.object_id}/{b}_sig.fits", "sigma_hdu": "SIGMA",
                         "mask": f"{r.object_id}/{b}_msk.fits",
                         "psf": str(cutouts / str(r.object_id) / f"psf_{b}.fits"),
                         "redshift": r.redshift, "stellar_mass_msun": r.stellar_mass_msun})
    man = tmp_path / "m" / "manifest.csv"
    pd.DataFrame(rows).to_csv(man, index=False)
    s = imageset.read(ingest(hsc, out=tmp_path / "man.h5", manifest=man, stamp_size=STAMP))
    assert len(s) == 5 and s.psf.shape == (5, 25, 25)
    ref = demo_set.subset(np.isin(demo_set.object_id, cat.object_id.to_numpy()))
    order = np.argsort(s.object_id)
    ref_order = np.argsort(ref.object_id)
    np.testing.assert_allclose(s.variance[order], ref.variance[ref_order], rtol=1e-5)
    np.testing.assert_allclose(s.catalog["stellar_mass_msun"][order],
                               ref.catalog["stellar_mass_msun"][ref_order])
    # inconsistent catalogue columns between band rows are an error naming the object
    df = pd.DataFrame(rows)
    df.loc[1, "redshift"] = 0.9
    df.to_csv(man, index=False)
    with pytest.raises(DataFormatError, match="differ between the band rows"):
        ingest(hsc, out=tmp_path / "man2.h5", manifest=man)
    pd.DataFrame(rows).drop(columns=["image"]).to_csv(man, index=False)
    with pytest.raises(DataFormatError, match="image"):
        ingest(hsc, out=tmp_path / "man2.h5", manifest=man)


# ---------------------------------------------------------------------------
# real HSC data
# ---------------------------------------------------------------------------
def _write_cosmos35(shared_data: Path, root: Path, hsc) -> tuple[Path, Path, np.lib.npyio.NpzFile]:
    d = np.load(shared_data / "scarlet-hsc" / "hsc_cosmos_35.npz")
    oid = 35
    ra0, dec0 = 150.0, 2.0
    for k, b in enumerate(d["filters"]):
        write_hsc_band(root / str(oid) / f"{b}.fits", image=d["images"][k], variance=d["variance"][k],
                       mask=d["mask"][k], band=str(b), ra=ra0, dec=dec0)
        write_psf(root / str(oid) / f"psf_{b}.fits", d["psfs"][k])
    # catalogue position = the bright galaxy at pixel (31, 36), through the WCS
    from astropy.wcs import WCS

    hdr = read_simple(root / str(oid) / "g.fits")[1][0]
    w = WCS({k: v for k, v in hdr.items() if k[:2] in ("CT", "CR", "CD", "CU", "WC", "RA")})
    ra, dec = w.all_pix2world(31.0, 36.0, 0)
    cat = root.parent / "cat.csv"
    pd.DataFrame({"object_id": [oid], "ra": [float(ra)], "dec": [float(dec)], "redshift": [0.35],
                  "stellar_mass_msun": [3e10]}).to_csv(cat, index=False)
    return root, cat, d


def test_real_hsc_blend_ingest(shared_data, hsc, tmp_path):
    cutouts, cat, d = _write_cosmos35(shared_data, tmp_path / "cut", hsc)
    s = imageset.read(ingest(hsc, out=tmp_path / "h.h5", cutouts=cutouts, catalog=cat, stamp_size=48))
    assert s.bands == ("g", "r", "i", "z", "y") and len(s) == 1
    np.testing.assert_allclose(s.psf.sum(axis=(-1, -2)), 1.0, atol=1e-5)
    assert s.psf.shape == (5, 25, 25)
    assert np.unravel_index(np.argmax(s.psf[2]), (25, 25)) == (12, 12)
    cx, cy = s.catalog["center_x_pix"][0], s.catalog["center_y_pix"][0]
    assert abs(cx - 31.0) < 1e-6 and abs(cy - 36.0) < 1e-6
    x0, y0 = int(np.floor(cx - 23.5 + 0.5)), int(np.floor(cy - 23.5 + 0.5))
    m = s.mask[0]
    # variance carried where original
    orig = m == 0
    var_in = np.zeros((5, 48, 48))
    ys, xs = np.nonzero(orig[2])
    var_in[2, ys, xs] = d["variance"][2, ys + y0, xs + x0]
    np.testing.assert_allclose(s.variance[0, 2][orig[2]], var_in[2][orig[2]], rtol=1e-6)
    # HSC INTRP/CR pixels inside the stamp are masked as bad
    bad_in = (d["mask"] & ((1 << 2) | (1 << 3))) != 0
    inside = bad_in[:, y0:y0 + 48, max(x0, 0):x0 + 48]
    assert ((m & StampMask.BAD) != 0).sum() >= inside.sum() > 0
    # the neighbouring bright galaxy (14, 33) is replaced by noise, the target kept
    assert m[2, 33 - y0, 14 - x0] & StampMask.NEIGHBOUR
    assert m[2, 36 - y0, 31 - x0] == 0
    assert s.catalog["n_neighbour_pixels"][0] > 100


def test_real_hsc_fits_cube_through_manifest(shared_data, hsc, tmp_path):
    """The real grizy cube + PSF cube, read in place through a manifest with 'plane'."""
    from astropy.io import fits

    img_path = shared_data / "scarlet-hsc" / "hsc_ra150.24071_dec2.06514.fits"
    psf_path = shared_data / "scarlet-hsc" / "psf_hsc_ra150.24071_dec2.06514.fits"
    cube = fits.getdata(img_path)
    # the file has no variance: a per-band sigma map from the robust background scatter
    sig = np.empty_like(cube, dtype=np.float32)
    for k in range(5):
        d = cube[k] - np.median(cube[k])
        sig[k] = 1.4826 * np.median(np.abs(d))
    write_simple(tmp_path / "sigma.fits", [([], sig)])
    rows = [{"object_id": 1, "band": b, "image": str(img_path), "plane": k, "sigma": "sigma.fits",
             "psf": str(psf_path), "ra": 150.24071, "dec": 2.06514, "redshift": 0.3}
            for k, b in enumerate(hsc.bands)]
    man = tmp_path / "manifest.parquet"
    pd.DataFrame(rows).to_parquet(man)
    s = imageset.read(ingest(hsc, out=tmp_path / "cube.h5", manifest=man, stamp_size=48))
    assert len(s) == 1 and s.psf.shape == (5, 25, 25)
    np.testing.assert_allclose(s.psf.sum(axis=(-1, -2)), 1.0, atol=1e-5)
    # recentred through the file's own WCS on the catalogue position (pixel 26.70, 26.17)
    assert s.catalog["center_x_pix"][0] == pytest.approx(26.6976, abs=1e-3)
    assert s.catalog["center_y_pix"][0] == pytest.approx(26.1698, abs=1e-3)
    x0, y0 = int(np.floor(26.6976 - 23.5 + 0.5)), int(np.floor(26.1698 - 23.5 + 0.5))
    assert (x0, y0) == (3, 3)
    orig = s.mask[0] == 0
    np.testing.assert_allclose(s.images[0][orig], cube[:, 3:51, 3:51][orig], rtol=1e-6)
    with fits.open(psf_path) as h:
        assert np.argmax(s.psf[2]) == np.argmax(prepare_psf(h[0].data[2], size=25))


def test_cosmos_parametric_sample(shared_data, hsc, tmp_path):
    fits_cat = shared_data / "galsim-cosmos-example" / "real_galaxy_catalog_23.5_example_fits.fits"
    cutouts, catalog = make_cosmos_sample(hsc, root=tmp_path / "cosmos", fits_catalog=fits_cat, seed=1,
                                          stamp_size=24)
    cat = pd.read_parquet(catalog)
    assert len(cat) == 100
    from astropy.io import fits

    with fits.open(fits_cat) as h:
        data = h[1].data
        sersic = ~data["use_bulgefit"].astype(bool)
        hlr = data["sersicfit"][:, 1] * 0.03  # HST pixels -> arcsec
        ident = data["IDENT"]
    np.testing.assert_array_equal(cat.object_id, ident)
    np.testing.assert_allclose(cat.half_light_radius_arcsec[sersic], hlr[sersic], rtol=1e-6)
    assert (cat.profile[~sersic] == "bulge+disc").all()
    s = imageset.read(ingest(hsc, out=tmp_path / "cosmos.h5", cutouts=cutouts, catalog=catalog,
                             stamp_size=24))
    assert len(s) + sum(s.provenance["exclusions"].values()) == 100
    assert len(s) >= 95
    # i-band flux follows the catalogue magnitude for compact, isolated objects
    k = s.bands.index("i")
    flux = s.images[:, k].sum(axis=(1, 2))
    mag = s.catalog_frame().set_index("object_id").loc[s.object_id, "mag_i_hst"].to_numpy()
    good = np.isfinite(mag) & (mag < 22)
    pred = 10 ** (-0.4 * (mag[good] - 27.0))
    assert np.median(flux[good] / pred) == pytest.approx(1.0, abs=0.25)


# ---------------------------------------------------------------------------
# streaming, workers and resumption
# ---------------------------------------------------------------------------
def _same_sets(a, b) -> None:
    np.testing.assert_array_equal(a.object_id, b.object_id)
    np.testing.assert_array_equal(a.images, b.images)
    np.testing.assert_array_equal(a.variance, b.variance)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.psf, b.psf)
    assert sorted(a.catalog) == sorted(b.catalog)
    for k in a.catalog:
        np.testing.assert_array_equal(a.catalog[k], b.catalog[k])
    assert a.provenance["exclusions"] == b.provenance["exclusions"]
    assert a.provenance["excluded_ids"] == b.provenance["excluded_ids"]


def test_ingest_on_a_cluster_with_a_killed_worker_matches_one_process(
        demo, demo_set, hsc, tmp_path, worker_killing_cluster):
    _, cutouts, catalog = demo
    import simcompare.observed.ingestion as cut

    old = cut._INGEST_BATCH
    cut._INGEST_BATCH = 2  # twelve tasks for the 24 objects, several in flight when one dies
    try:
        with worker_killing_cluster(workers=2) as cluster:
            out = ingest(hsc, out=tmp_path / "c.h5", cutouts=cutouts, catalog=catalog,
                         stamp_size=STAMP, cluster=cluster)
            assert len(cluster.killed) == 1
    finally:
        cut._INGEST_BATCH = old
    _same_sets(imageset.read(out), demo_set)


def test_interrupted_ingest_resumes_to_the_same_file(demo, demo_set, hsc, tmp_path, monkeypatch):
    import simcompare.observed.ingestion as cut

    _, cutouts, catalog = demo
    monkeypatch.setattr(cut, "_INGEST_BATCH", 4)
    real = cut._ingest_batch
    calls = []

    def dies_on_the_third(task, spec):
        calls.append(len(calls))
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(task, spec)

    monkeypatch.setattr(cut, "_ingest_batch", dies_on_the_third)
    out = tmp_path / "r.h5"
    with pytest.raises(KeyboardInterrupt):
        ingest(hsc, out=out, cutouts=cutouts, catalog=catalog, stamp_size=STAMP)
    part = out.with_name(out.name + ".part")
    assert part.exists() and not out.exists()
    assert len(imageset.read_catalog(part)["object_id"]) > 0
    seen = []

    def counts(task, spec):
        seen.append(len(task[0]))
        return real(task, spec)

    monkeypatch.setattr(cut, "_ingest_batch", counts)
    ingest(hsc, out=out, cutouts=cutouts, catalog=catalog, stamp_size=STAMP)
    assert sum(seen) == 24 - 8  # the two finished batches were not read again
    assert not part.exists()
    _same_sets(imageset.read(out), demo_set)


def test_per_object_psfs_are_kept_and_a_shared_one_stored_once(tmp_path):
    from simcompare.imageset import ImageSetWriter

    psf = np.zeros((2, 5, 5), np.float32)
    psf[:, 2, 2] = 1
    other = np.full((2, 5, 5), 1 / 25, np.float32)
    kw = {"kind": "observed", "survey": "hsc", "bands": ("g", "r"), "pixel_scale_arcsec": 0.168,
          "zero_point": 27.0, "stamp_size": 4}
    imgs = np.ones((3, 2, 4, 4), np.float32)
    with ImageSetWriter(tmp_path / "same.h5", **kw) as w:
        for i in range(2):
            w.append(imgs, catalog={"object_id": np.arange(3) + 3 * i}, psf=np.stack([psf] * 3))
    s = imageset.read(tmp_path / "same.h5")
    assert s.psf.shape == (2, 5, 5) and np.array_equal(s.psf, psf)
    with ImageSetWriter(tmp_path / "mixed.h5", **kw) as w:
        w.append(imgs, catalog={"object_id": np.arange(3)}, psf=np.stack([psf] * 3))
        w.append(imgs, catalog={"object_id": np.arange(3, 6)}, psf=np.stack([psf, other, psf]))
    s = imageset.read(tmp_path / "mixed.h5")
    assert s.psf.shape == (6, 2, 5, 5)
    assert [np.array_equal(p, other) for p in s.psf] == [False] * 4 + [True, False]


def test_ingest_verb_on_two_workers_writes_the_same_set(demo, demo_set, tmp_path, capsys):
    """`simcompare ingest --workers 2` end to end: the same image set as one process."""
    from simcompare.cli import main

    _, cutouts, catalog = demo
    out = tmp_path / "cli.h5"
    assert main(["--no-progress", "ingest", "--survey", "hsc", "--cutouts", str(cutouts),
                 "--catalog", str(catalog), "--out", str(out), "--stamp-size", str(STAMP),
                 "--workers", "2"]) == 0
    assert capsys.readouterr().out.strip() == str(out)
    _same_sets(imageset.read(out), demo_set)


def test_ingest_tasks_are_sized_to_the_workers(monkeypatch):
    import simcompare.observed.ingestion as cut

    class Workers:
        def __init__(self, n):
            self.distributed, self.n_workers = n is not None, n or 1

    assert cut._batch_size(384, Workers(2)) == 48  # four tasks per worker
    assert cut._batch_size(10**5, Workers(16)) == 64  # bounded: flat memory per task
    assert cut._batch_size(40, Workers(4)) == 16
    assert cut._batch_size(384, Workers(None)) == 64  # in this process: fewest writes
    monkeypatch.setattr(cut, "_INGEST_BATCH", 4)
    assert cut._batch_size(384, Workers(2)) == 4
