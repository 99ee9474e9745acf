"""TNG web-API fetch against a local HTTP server (127.0.0.1) serving fixture files built
from real CAMELS-TNG star particles, and the tng-api reader on what it downloads."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import threading
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from test_sims_tng import _camels_basepath

from simcompare.config import Cosmology, SelectionConfig
from simcompare.errors import ConfigError, DataFormatError, DataNotFoundError
from simcompare.sims.tng import TNGReader
from simcompare.sims.tng_api import TNGAPIReader, api_key_from_config, fetch, verify_cutout

KEY = "test-key-0123456789abcdef"
BOX = 25000.0


@pytest.fixture(scope="module")
def fixtures(shared_data, tmp_path_factory):
    """API JSON records and cutout files for the 10 real CAMELS subhalos."""
    root = tmp_path_factory.mktemp("api_fixtures")
    folder = shared_data / "camels-tng-cv0-086"
    with h5py.File(folder / "camels_snap.hdf5", "r") as f:
        hd = dict(f["Header"].attrs)
        stars = {k: f["PartType4"][k][()] for k in f["PartType4"]}
    with h5py.File(folder / "camels_subhalo.hdf5", "r") as f:
        lens = f["Subhalo/SubhaloLenType"][:, 4]
        pos = f["Subhalo/SubhaloPos"][()]
    off = np.concatenate([[0], np.cumsum(lens)])
    h = float(hd["HubbleParam"])
    records, cutouts = {}, {}
    for i in range(10):
        sl = slice(off[i], off[i + 1])
        mass = float(stars["Masses"][sl].astype(np.float64).sum())
        records[i] = {"id": i, "pos_x": float(pos[i, 0]), "pos_y": float(pos[i, 1]),
                      "pos_z": float(pos[i, 2]), "mass_stars": mass, "massinrad_stars": mass,
                      "halfmassrad_stars": 5.0, "sfr": 0.1 * i, "len_stars": int(lens[i]),
                      "primary_flag": int(i == 0), "subhaloflag": 1, "grnr": 0,
                      "cutouts": {"subhalo": f"cutout_{i}"}}
        path = root / f"cutout_{i}.hdf5"
        with h5py.File(path, "w") as f:
            hdr = f.create_group("Header")
            hdr.attrs.update({"Time": hd["Time"], "Redshift": 1 / hd["Time"] - 1,
                              "HubbleParam": h, "Omega0": hd["Omega0"], "BoxSize": BOX,
                              "NumPart_ThisFile": np.array([0, 0, 0, 0, lens[i], 0], np.int32)})
            pt = f.create_group("PartType4")
            for k in ("Coordinates", "Masses", "GFM_InitialMass", "GFM_StellarFormationTime",
                      "GFM_Metallicity"):
                pt[k] = stars[k][sl]
            pt["StellarHsml"] = stars["SubfindHsml"][sl]
        cutouts[i] = path.read_bytes()
    sim = {"name": "TNG100-1", "hubble": h, "omega_0": float(hd["Omega0"]),
           "omega_B": 0.049, "omega_L": 1 - float(hd["Omega0"]), "boxsize": BOX}
    snap = {"number": 86, "redshift": float(1 / hd["Time"] - 1)}
    return {"records": records, "cutouts": cutouts, "sim": sim, "snap": snap, "h": h}


class _Server:
    """A fake TNG API: JSON and cutout endpoints, scripted failures, request log."""

    def __init__(self, fx):
        self.fx = fx
        self.failures: dict[str, list] = {}  # path -> list of actions consumed per request
        self.log: list[tuple[str, dict]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep the test output clean
                pass

            def _send(self, code, body=b"", ctype="application/json", headers=None, length=None):
                self.send_response(code)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body) if length is None else length))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(body)

            def do_GET(self):
                server.log.append((self.path, {k.lower(): v for k, v in self.headers.items()}))
                if self.headers.get("api-key") != KEY:
                    self._send(403, b'{"detail": "Invalid API key."}')
                    return
                parsed = urllib.parse.urlparse(self.path)
                path = parsed.path
                actions = server.failures.get(path)
                if actions:
                    act = actions.pop(0)
                    if act[0] == "status":
                        self._send(act[1], b"busy", headers=act[2] if len(act) > 2 else None)
                        return
                    if act[0] == "truncate":
                        body = server.fx["cutouts"][int(path.split("/")[-2])]
                        self._send(200, body[: len(body) // 3], ctype="application/x-hdf5",
                                   length=len(body))
                        self.close_connection = True
                        return
                parts = [p for p in path.split("/") if p]
                base = ["api", "TNG100-1"]
                if parts == base:
                    self._send(200, json.dumps(server.fx["sim"]).encode())
                elif parts == [*base, "snapshots", "86"]:
                    self._send(200, json.dumps(server.fx["snap"]).encode())
                elif parts == [*base, "snapshots", "86", "subhalos"]:
                    q = urllib.parse.parse_qs(parsed.query)
                    lo = float(q["mass_stars__gt"][0])
                    limit = int(q.get("limit", ["100"])[0])
                    start = int(q.get("offset", ["0"])[0])
                    ids = [i for i, r in sorted(server.fx["records"].items())
                           if r["mass_stars"] > lo]
                    page = ids[start:start + limit]
                    nxt = None
                    if start + limit < len(ids):
                        nq = dict(mass_stars__gt=q["mass_stars__gt"][0], limit=limit,
                                  offset=start + limit)
                        nxt = (f"http://{self.headers['Host']}{path}?"
                               f"{urllib.parse.urlencode(nq)}")
                    body = {"count": len(ids), "next": nxt, "previous": None,
                            "results": [{"id": i, "url": f"{path}{i}/"} for i in page]}
                    self._send(200, json.dumps(body).encode())
                elif len(parts) == 6 and parts[:5] == [*base, "snapshots", "86", "subhalos"]:
                    self._send(200, json.dumps(server.fx["records"][int(parts[5])]).encode())
                elif len(parts) == 7 and parts[6] == "cutout.hdf5":
                    self._send(200, server.fx["cutouts"][int(parts[5])],
                               ctype="application/x-hdf5")
                else:
                    self._send(404, b'{"detail": "Not found."}')

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/api/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server(fixtures):
    srv = _Server(fixtures)
    yield srv
    srv.close()


@pytest.fixture(autouse=True)
def _no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.delenv("TNG_API_KEY", raising=False)
    monkeypatch.delenv("SIMCOMPARE_TNG_API_URL", raising=False)


def _fetch(server, out, sleeps=None, **kw):
    kw.setdefault("api_key", KEY)
    return fetch("tng100", snapshot=86, min_stellar_mass=1e8, out=out, base_url=server.url,
                 backoff_s=0.01, sleep=(sleeps.append if sleeps is not None else lambda s: None),
                 **kw)


def test_fetch_downloads_verified_cutouts_with_key_in_header_only(server, fixtures, tmp_path,
                                                                   caplog):
    caplog.set_level(logging.DEBUG)
    out = _fetch(server, tmp_path / "out", limit=4)
    man = json.loads((out / "manifest.json").read_text())
    h = fixtures["h"]
    expect = [i for i, r in sorted(fixtures["records"].items())
              if r["mass_stars"] > 1e8 * h / 1e10][:4]
    assert man["subhalos"] == expect and man["complete"] == expect
    for i in expect:
        assert (out / f"cutout_{i}.hdf5").read_bytes() == fixtures["cutouts"][i]
        assert json.loads((out / f"subhalo_{i}.json").read_text())["id"] == i
    assert not list(out.glob("*.part"))
    # the key travels in the api-key header only: never in a URL, the log or the files
    assert all(hdr.get("api-key") == KEY for _, hdr in server.log)
    assert not any(KEY in p for p, _ in server.log)
    assert KEY not in caplog.text
    assert all(KEY not in p.read_text(errors="ignore") for p in out.glob("*.json"))
    # the cutout request names only the star fields
    cut = next(p for p, _ in server.log if "cutout.hdf5" in p)
    q = urllib.parse.parse_qs(urllib.parse.urlparse(cut).query)
    assert q["stars"][0].split(",")[:2] == ["Coordinates", "Masses"]


def test_fetch_resumes_and_skips_complete_files(server, tmp_path):
    out = _fetch(server, tmp_path / "out", limit=3)
    n_first = len(server.log)
    server.log.clear()
    _fetch(server, out, limit=3)
    assert not any("cutout.hdf5" in p for p, _ in server.log)  # nothing re-downloaded
    assert len(server.log) < n_first
    # a corrupted file is fetched again; a stale .part is replaced
    victim = sorted(out.glob("cutout_*.hdf5"))[0]
    victim.write_bytes(victim.read_bytes()[:100])
    (out / "cutout_999.hdf5.part").write_bytes(b"junk")
    server.log.clear()
    _fetch(server, out, limit=3)
    assert [p for p, _ in server.log if "cutout.hdf5" in p] == [
        f"/api/TNG100-1/snapshots/86/subhalos/{victim.stem.split('_')[1]}/cutout.hdf5?stars="
        "Coordinates,Masses,GFM_InitialMass,GFM_StellarFormationTime,GFM_Metallicity,StellarHsml"]
    assert verify_cutout(victim, ["Coordinates"]) is None


def test_retries_honour_retry_after_and_survive_500_and_truncation(server, fixtures, tmp_path):
    server.failures = {
        "/api/TNG100-1/snapshots/86/subhalos/0/cutout.hdf5": [("status", 429, {"Retry-After": "7"})],
        "/api/TNG100-1/snapshots/86/subhalos/1/": [("status", 500), ("status", 503)],
        "/api/TNG100-1/snapshots/86/subhalos/2/cutout.hdf5": [("truncate",)],
    }
    sleeps: list[float] = []
    out = _fetch(server, tmp_path / "out", sleeps=sleeps, limit=3)
    assert 7.0 in sleeps  # Retry-After honoured
    assert sorted(s for s in sleeps if s != 7.0) == pytest.approx([0.01, 0.01, 0.02])
    for i in range(3):
        assert (out / f"cutout_{i}.hdf5").read_bytes() == fixtures["cutouts"][i]


def test_persistent_failure_is_one_clear_error(server, tmp_path):
    server.failures = {"/api/TNG100-1/snapshots/86/subhalos/0/cutout.hdf5":
                       [("truncate",)] * 10}
    with pytest.raises(DataFormatError, match=r"cutout_0\.hdf5.*truncated") as err:
        _fetch(server, tmp_path / "out", limit=1, retries=2)
    assert KEY not in str(err.value)
    assert not (tmp_path / "out" / "cutout_0.hdf5").exists()
    assert not (tmp_path / "out" / "cutout_0.hdf5.part").exists()
    server.failures = {"/api/TNG100-1/": [("status", 502)] * 10}
    with pytest.raises(DataNotFoundError, match="HTTP 502"):
        _fetch(server, tmp_path / "out2", retries=1)


def test_wrong_or_missing_key(server, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="rejected the API key") as err:
        _fetch(server, tmp_path / "out", api_key="wrong-key-xyz")
    assert "wrong-key-xyz" not in str(err.value) and "TNG_API_KEY" in str(err.value)
    assert len(server.log) == 1  # stopped at the first call, no retries
    with pytest.raises(ConfigError, match="no TNG web-API key"):
        _fetch(server, tmp_path / "out", api_key=None)
    # from the environment, then from the user config file
    monkeypatch.setenv("TNG_API_KEY", KEY)
    assert api_key_from_config() == KEY
    monkeypatch.delenv("TNG_API_KEY")
    cfg = tmp_path / "xdg" / "simcompare" / "config.toml"
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'[tng]\napi_key = "{KEY}"\nbase_url = "{server.url}"\n')
    assert api_key_from_config() == KEY
    out = fetch("tng100", snapshot=86, min_stellar_mass=1e8, limit=1, out=tmp_path / "cfg",
                sleep=lambda s: None)
    assert len(list(out.glob("cutout_*.hdf5"))) == 1


def test_unknown_sim_and_snapshot(server, tmp_path):
    with pytest.raises(ConfigError, match="no TNG web-API simulation"):
        fetch("eagle100", snapshot=86, min_stellar_mass=1e8, out=tmp_path, api_key=KEY,
              base_url=server.url)
    with pytest.raises(DataNotFoundError, match="HTTP 404"):
        fetch("tng100", snapshot=12, min_stellar_mass=1e8, out=tmp_path, api_key=KEY,
              base_url=server.url)


def test_tng_api_reader_matches_the_basepath_reader(server, shared_data, tmp_path):
    out = _fetch(server, tmp_path / "out")
    sel = SelectionConfig(min_stellar_mass_msun=1e8, mass_definition="total",
                          min_star_particles=20, require_subhalo_flag=True)
    api = TNGAPIReader(out, snapshot=86, selection=sel, cosmology=Cosmology())
    table = api.select()
    assert api.redshift == pytest.approx(0.1, abs=2e-3)
    assert table["object_id"].is_monotonic_increasing
    assert api.exclusions == {"too_few_star_particles": 1}  # subhalo 4 has 8 stars
    bp, *_ = _camels_basepath(shared_data, tmp_path / "bp")
    tng = TNGReader(bp, snapshot=86, selection=sel)
    ref = {g.object_id: g for g in tng.galaxies(table["object_id"])}
    for g in api.galaxies(table["object_id"]):
        r = ref[g.object_id]
        np.testing.assert_allclose(g.particles.positions_kpc, r.particles.positions_kpc,
                                   atol=1e-4)
        np.testing.assert_allclose(g.particles.age_gyr, r.particles.age_gyr, rtol=1e-9)
        np.testing.assert_allclose(g.particles.mass_msun, r.particles.mass_msun)
        np.testing.assert_allclose(g.particles.hsml_kpc, r.particles.hsml_kpc)
        assert g.particles.mass_msun.sum() == pytest.approx(g.row["stellar_mass_total_msun"],
                                                           rel=1e-6)
    # bad input: a corrupt cutout and a missing folder
    (out / "cutout_0.hdf5").write_bytes(b"broken")
    with pytest.raises(DataFormatError, match=r"cutout_0\.hdf5.*fetch again"):
        next(api.galaxies([0]))
    with pytest.raises(DataNotFoundError, match="simcompare fetch"):
        TNGAPIReader(tmp_path / "empty")


def test_fetch_cli_downloads_from_the_api_url(server, fixtures, tmp_path):
    """``simcompare fetch`` in a subprocess against the local server (SIMCOMPARE_TNG_API_URL):
    the files land in the workspace's default folder, the reader reads them, and the key
    shows nowhere."""
    ws = tmp_path / "ws"
    (tmp_path / "xdg").mkdir()  # an existing config home, as a user's is (astropy warns otherwise)
    env = {k: v for k, v in os.environ.items() if k not in ("TNG_API_KEY", "SIMCOMPARE_TNG_API_URL")}
    env.update(TNG_API_KEY=KEY, SIMCOMPARE_TNG_API_URL=server.url,
               XDG_CONFIG_HOME=str(tmp_path / "xdg"),
               PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parent.parent),
                                           env.get("PYTHONPATH", "")]))
    argv = ["fetch", "--sim", "tng100", "--snapshot", "86", "--min-stellar-mass", "1e8",
            "--limit", "3"]
    proc = subprocess.run([sys.executable, "-m", "simcompare", "--workspace", str(ws), *argv],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    out = ws / "tng-api" / "tng100_086"
    assert proc.stdout.strip() == str(out)
    assert "fetch complete: 3 cutouts" in proc.stderr
    assert any("cutout.hdf5" in p for p, _ in server.log)  # downloaded through the server
    h = fixtures["h"]
    expect = [i for i, r in sorted(fixtures["records"].items())
              if r["mass_stars"] > 1e8 * h / 1e10][:3]
    for i in expect:
        assert (out / f"cutout_{i}.hdf5").read_bytes() == fixtures["cutouts"][i]
    assert not list(out.glob("*.part"))
    sel = SelectionConfig(min_stellar_mass_msun=1e8, mass_definition="total",
                          min_star_particles=1, require_subhalo_flag=True)
    reader = TNGAPIReader(out, snapshot=86, selection=sel, cosmology=Cosmology())
    table = reader.select()
    assert sorted(table["object_id"]) == expect
    galaxies = list(reader.galaxies(table["object_id"]))
    assert [g.object_id for g in galaxies] == list(table["object_id"])
    assert all(len(g.particles) > 0 and np.isfinite(g.particles.mass_msun).all()
               for g in galaxies)
    # the key travelled in the header only and was written and printed nowhere
    assert all(hdr.get("api-key") == KEY for _, hdr in server.log)
    assert KEY not in proc.stdout + proc.stderr
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert len(written) >= 7
    assert not any(KEY.encode() in p.read_bytes() for p in written)
    # a second run resumes (nothing downloaded again); -q hides the progress notes
    server.log.clear()
    proc = subprocess.run([sys.executable, "-m", "simcompare", "-q", *argv, "--workspace", str(ws)],
                          capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300,
                          check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(out) and proc.stderr == ""
    assert not any("cutout.hdf5" in p for p, _ in server.log)
