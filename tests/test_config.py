"""Descriptor loading, registry look-up, overrides and score defaults."""

from __future__ import annotations

import re

import pytest

from simcompare import registry
from simcompare.config import ScoreConfig, apply_overrides, load_survey_descriptor
from simcompare.errors import ConfigError


def test_builtin_descriptors_load():
    sims = registry.list_sims(workspace=None)
    surveys = registry.list_surveys(workspace=None)
    assert {"demo", "tng100"} <= set(sims)
    assert "hsc" in surveys
    for name in sims:
        desc = registry.find_sim(name, workspace=None)
        assert desc.name == name and desc.cosmology.H0 > 0
    for name in surveys:
        desc = registry.find_survey(name, workspace=None)
        assert len(desc.filters) == len(desc.bands)
        assert len(desc.band_values(desc.noise.sky_sigma, "sky_sigma")) == len(desc.bands)


def test_hsc_values():
    hsc = registry.find_survey("hsc", workspace=None)
    assert hsc.bands == ("g", "r", "i", "z", "y")
    assert hsc.pixel_scale_arcsec == pytest.approx(0.168)
    assert hsc.zero_point == 27.0


def test_unknown_name_suggests(tmp_path):
    with pytest.raises(ConfigError, match="did you mean 'tng100'"):
        registry.find_sim("tng10", workspace=tmp_path)
    with pytest.raises(ConfigError, match="unknown survey 'hcs'"):
        registry.find_survey("hcs", workspace=tmp_path)


def test_workspace_descriptor_wins_and_env_expands(tmp_path, monkeypatch):
    (tmp_path / "sims").mkdir()
    (tmp_path / "sims" / "mysim.toml").write_text(
        'name = "mysim"\ntitle = "My run"\nreader = "tng"\nbase_path = "${MY_SIM_ROOT}/output"\n'
        "[cosmology]\nH0 = 70.0\n"
    )
    monkeypatch.setenv("MY_SIM_ROOT", "/data/run1")
    desc = registry.find_sim("mysim", workspace=tmp_path)
    assert desc.base_path == "/data/run1/output" and desc.cosmology.H0 == 70.0
    assert "mysim" in registry.list_sims(workspace=tmp_path)


def test_unknown_key_is_named(tmp_path):
    bad = tmp_path / "observed"
    bad.mkdir()
    text = (registry.builtin_dir("observed") / "hsc.toml").read_text()
    (bad / "hsc.toml").write_text(text.replace("stamp_size = 64", "stamp_sise = 64"))
    with pytest.raises(ConfigError, match="stamp_sise"):
        registry.find_survey("hsc", workspace=tmp_path)


def test_missing_band_value(tmp_path):
    text = (registry.builtin_dir("observed") / "hsc.toml").read_text()
    path = tmp_path / "hsc.toml"
    lines = [re.sub(r",\s*y\s*=\s*[-+0-9.eE]+\s*}", " }", ln) if ln.startswith("sky_sigma") else ln
             for ln in text.splitlines()]
    path.write_text("\n".join(lines))
    with pytest.raises(ConfigError, match=r"band\(s\) \['y'\]"):
        load_survey_descriptor(path)


def test_bad_types_and_toml(tmp_path):
    path = tmp_path / "x.toml"
    path.write_text('name = "x"\ntitle = 3\nreader = "tng"\n')
    with pytest.raises(ConfigError, match="title must be a string"):
        registry.load_sim_descriptor(path)
    path.write_text('name = "x"\ntitle = "x"\nreader = "gadget"\n')
    with pytest.raises(ConfigError, match="reader must be one of"):
        registry.load_sim_descriptor(path)
    path.write_text("name = [unclosed")
    with pytest.raises(ConfigError, match="not valid TOML"):
        registry.load_sim_descriptor(path)


def test_score_defaults_resolution():
    demo = registry.find_sim("demo", workspace=None)
    cfg = ScoreConfig(sim="demo", survey="hsc", epochs=2).resolved(demo.score_defaults)
    assert cfg.epochs == 2  # explicit wins
    assert cfg.levels == demo.score_defaults.levels  # descriptor default next
    real = ScoreConfig(sim="tng100", survey="hsc").resolved(None)
    assert (real.levels, real.blocks, real.hidden) == (3, 16, 128)
    # an ensemble of three is the real default; the demo keeps to one model
    assert real.ensemble == 3 and cfg.ensemble == 1
    assert ScoreConfig(sim="demo", survey="hsc", ensemble=2).resolved(
        demo.score_defaults).ensemble == 2


def test_overrides():
    hsc = registry.find_survey("hsc", workspace=None)
    new = apply_overrides(hsc, ["psf.beta=2.5", "stamp_size=48"])
    assert new.psf.beta == 2.5 and new.stamp_size == 48 and hsc.stamp_size == 64
    with pytest.raises(ConfigError, match="unknown key 'psff'"):
        apply_overrides(hsc, ["psff.beta=2"])
