"""ImageSet schema: round trip, streaming writer, and validation errors."""

from __future__ import annotations

import h5py
import numpy as np
import pytest

from simcompare import imageset
from simcompare.errors import DataFormatError, DataNotFoundError


def _make(n: int = 4, b: int = 2, h: int = 8, *, rng: np.random.Generator) -> imageset.ImageSet:
    psf = np.zeros((b, 5, 5), np.float32)
    psf[:, 2, 2] = 0.6
    psf[:, 1:4, 1:4] += 0.4 / 9
    return imageset.ImageSet(
        images=rng.normal(size=(n, b, h, h)).astype(np.float32),
        variance=np.full((n, b, h, h), 2.0, np.float32),
        mask=np.zeros((n, b, h, h), np.uint8),
        psf=psf,
        catalog={"object_id": np.arange(10, 10 + n, dtype=np.int64),
                 "stellar_mass_msun": np.logspace(9, 11, n),
                 "name": np.array([f"g{i}" for i in range(n)])},
        kind="observed", survey="hsc", bands=("g", "r")[:b], pixel_scale_arcsec=0.168,
        zero_point=27.0, provenance={"seed": 3, "note": "test"},
    )


def test_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    s = _make(rng=rng)
    path = imageset.write(tmp_path / "set.h5", s)
    r = imageset.read(path)
    np.testing.assert_array_equal(r.images, s.images)
    np.testing.assert_array_equal(r.variance, s.variance)
    np.testing.assert_array_equal(r.mask, s.mask)
    np.testing.assert_allclose(r.psf, s.psf)
    np.testing.assert_array_equal(r.object_id, s.object_id)
    assert list(r.catalog["name"]) == ["g0", "g1", "g2", "g3"]
    assert r.bands == ("g", "r") and r.kind == "observed" and r.zero_point == 27.0
    assert r.provenance == {"seed": 3, "note": "test"}
    assert not list(tmp_path.glob("*.part")), "temporary file left behind"


def test_read_subset_and_catalog(tmp_path):
    s = _make(n=6, rng=np.random.default_rng(1))
    path = imageset.write(tmp_path / "set.h5", s)
    sub = imageset.read(path, index=np.array([4, 1]))
    np.testing.assert_array_equal(sub.object_id, [11, 14])
    np.testing.assert_array_equal(sub.images, s.images[[1, 4]])
    cat = imageset.read_catalog(path)
    assert cat["object_id"].dtype == np.int64 and len(cat["object_id"]) == 6
    assert len(s.subset(s.object_id > 12)) == 3


def test_streaming_writer_and_resume(tmp_path):
    rng = np.random.default_rng(2)
    s = _make(n=6, rng=rng)
    out = tmp_path / "stream.h5"
    kw = dict(kind="mock", survey="hsc", bands=("g", "r"), pixel_scale_arcsec=0.168,
              zero_point=27.0, stamp_size=8, with_variance=True, psf=s.psf)
    w = imageset.ImageSetWriter(out, **kw)
    w.append(s.images[:3], catalog={"object_id": s.object_id[:3]}, variance=s.variance[:3])
    w.abort()  # an interrupted render leaves the .part file
    assert not out.exists() and out.with_name("stream.h5.part").exists()
    w = imageset.ImageSetWriter(out, resume=True, **kw)
    np.testing.assert_array_equal(w.done_ids(), s.object_id[:3])
    w.append(s.images[3:], catalog={"object_id": s.object_id[3:]}, variance=s.variance[3:])
    w.close()
    r = imageset.read(out)
    np.testing.assert_array_equal(r.images, s.images)
    np.testing.assert_array_equal(r.object_id, s.object_id)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (dict(images=np.zeros((2, 2, 8, 8), np.float64)), "float32"),
        (dict(images=np.zeros((2, 8, 8), np.float32)), "4-D"),
        (dict(bands=("g",)), "bands"),
        (dict(kind="simulated"), "kind"),
        (dict(catalog={"stellar_mass_msun": np.ones(4)}), "object_id"),
        (dict(catalog={"object_id": np.arange(3)}), "catalog column"),
        (dict(psf=np.ones((2, 5, 5), np.float32)), "normalised"),
        (dict(variance=np.ones((4, 2, 8, 9), np.float32)), "variance"),
        (dict(pixel_scale_arcsec=-1.0), "pixel_scale"),
    ],
)
def test_validation_errors(change, message):
    s = _make(rng=np.random.default_rng(3))
    kwargs = {k: getattr(s, k) for k in s.__dataclass_fields__}
    kwargs.update(change)
    with pytest.raises(DataFormatError, match=message):
        imageset.ImageSet(**kwargs)


def test_nan_only_allowed_where_masked():
    s = _make(rng=np.random.default_rng(4))
    images = s.images.copy()
    images[0, 0, 0, 0] = np.nan
    kwargs = {k: getattr(s, k) for k in s.__dataclass_fields__}
    with pytest.raises(DataFormatError, match="NaN"):
        imageset.ImageSet(**(kwargs | {"images": images}))
    mask = s.mask.copy()
    mask[0, 0, 0, 0] = 1
    imageset.ImageSet(**(kwargs | {"images": images, "mask": mask}))  # accepted


def test_read_errors(tmp_path):
    with pytest.raises(DataNotFoundError, match="no such image set"):
        imageset.read(tmp_path / "missing.h5")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"not hdf5 at all")
    with pytest.raises(DataFormatError, match="not a readable HDF5"):
        imageset.read(junk)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.attrs["schema"] = "something.else"
    with pytest.raises(DataFormatError, match="not a simcompare image set"):
        imageset.read(other)
    path = imageset.write(tmp_path / "v.h5", _make(rng=np.random.default_rng(5)))
    with h5py.File(path, "a") as f:
        f.attrs["schema_version"] = 99
    with pytest.raises(DataFormatError, match="schema version 99"):
        imageset.read(path)
    trunc = tmp_path / "trunc.h5"
    data = imageset.write(tmp_path / "full.h5", _make(rng=np.random.default_rng(6))).read_bytes()
    trunc.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataFormatError):
        imageset.read(trunc)
