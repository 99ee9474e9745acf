"""Input-file fingerprints: full and head/tail hashes, the memo, and what changes a key."""

from __future__ import annotations

import os

from simcompare import _fingerprint as fp


def _prints(files, memo, ws):
    return fp.fingerprints([(p, False) for p in files], memo=memo, workspace=ws)


def test_names_are_relative_to_the_workspace_and_missing_files_say_so(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "x.csv").write_text("object_id\n1\n")
    memo = fp.FingerprintMemo(None)
    prints = _prints([tmp_path / "a" / "x.csv", tmp_path / "gone.fits"], memo, tmp_path)
    assert list(prints) == ["a/x.csv", "gone.fits"]
    assert prints["gone.fits"] == "missing"
    assert prints["a/x.csv"].startswith("12:")


def test_memo_skips_rehashing_unchanged_files_and_rehashes_edited_ones(tmp_path, monkeypatch):
    f = tmp_path / "cut.fits"
    f.write_bytes(b"A" * 5000)
    memo_path = tmp_path / "memo.sqlite"
    memo = fp.FingerprintMemo(memo_path)
    first = _prints([f], memo, tmp_path)
    memo.close()

    calls = []
    real = fp._full_sha
    monkeypatch.setattr(fp, "_full_sha", lambda p: calls.append(p) or real(p))
    memo = fp.FingerprintMemo(memo_path)  # reopened: the hash comes from the SQLite file
    assert _prints([f], memo, tmp_path) == first
    assert calls == []

    st = f.stat()
    f.write_bytes(b"B" + b"A" * 4999)  # same size, and the old modification time restored
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert (f.stat().st_size, f.stat().st_mtime_ns) == (st.st_size, st.st_mtime_ns)
    second = _prints([f], memo, tmp_path)
    assert calls == [f]
    assert second != first
    memo.close()


def test_large_files_hash_their_ends_with_size_and_mtime(tmp_path):
    f = tmp_path / "snap.0.hdf5"
    size = fp.FULL_HASH_MAX_BYTES + 3 * fp.HEAD_BYTES
    with open(f, "wb") as fh:
        fh.write(b"H" * fp.HEAD_BYTES)
        fh.seek(size - 1)
        fh.write(b"T")
    memo = fp.FingerprintMemo(None)
    a = _prints([f], memo, tmp_path)["snap.0.hdf5"]
    assert a.split(":")[:2] == [str(size), str(f.stat().st_mtime_ns)]

    st = f.stat()
    with open(f, "r+b") as fh:  # a header byte, modification time restored: caught by the hash
        fh.seek(10)
        fh.write(b"X")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns))
    b = _prints([f], memo, tmp_path)["snap.0.hdf5"]
    assert b != a

    with open(f, "r+b") as fh:  # a byte in the middle: caught by the modification time
        fh.seek(fp.HEAD_BYTES + 100)
        fh.write(b"M")
    os.utime(f, ns=(st.st_atime_ns, st.st_mtime_ns + 1000))
    assert _prints([f], memo, tmp_path)["snap.0.hdf5"] != b


def test_full_flag_hashes_big_catalogues_whole_and_combined_orders_names(tmp_path):
    f = tmp_path / "catalog.csv"
    f.write_bytes(b"x" * (fp.FULL_HASH_MAX_BYTES + 10))
    memo = fp.FingerprintMemo(None)
    full = fp.fingerprints([(f, True)], memo=memo, workspace=tmp_path)["catalog.csv"]
    assert full.count(":") == 1  # size and content hash only: a touch does not change it
    os.utime(f, ns=(1, 2))
    assert fp.fingerprints([(f, True)], memo=memo, workspace=tmp_path)["catalog.csv"] == full
    assert fp.combined({"a": "1", "b": "2"}) == fp.combined({"b": "2", "a": "1"})
    assert fp.combined({"a": "1"}) != fp.combined({"a": "2"})
    assert fp.changed_names({"a": "1", "b": "2"}, {"a": "1", "c": "3"}) == ["b", "c"]
