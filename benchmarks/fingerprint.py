"""Input fingerprints: files/s for a cold cache key (every file hashed) and a warm one.

Writes ``--n`` FITS-sized files (``--kib`` each; half above the full-hash limit, so both
the full and the head/tail hash are timed; those are sparse beyond their first and last
64 KiB, which is all the head/tail hash reads) into a temporary folder, or takes every
file below ``--dir`` (e.g. a real cutout sample), then times
:func:`simcompare._fingerprint.fingerprints` with a fresh memo (cold), again with the
memo reopened from its SQLite file (warm: ``stat`` only), and after touching one file.
Prints one JSON object::

    python benchmarks/fingerprint.py [--n 20000] [--kib 100] [--dir FOLDER]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=20000, help="files (default 20000)")
    parser.add_argument("--kib", type=int, default=100, help="KiB per small file (default 100)")
    parser.add_argument("--dir", type=Path, default=None,
                        help="fingerprint every file below this folder instead")
    args = parser.parse_args()

    from simcompare._fingerprint import FULL_HASH_MAX_BYTES, FingerprintMemo, combined, fingerprints

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        files = []
        if args.dir is not None:
            files = [(p, False) for p in sorted(args.dir.rglob("*")) if p.is_file()]
        else:
            small = os.urandom(args.kib * 1024)
            head, tail = os.urandom(1 << 16), os.urandom(1 << 16)
            for i in range(args.n):
                p = root / "cutouts" / f"{i // 1000:03d}" / f"{i}.fits"
                p.parent.mkdir(parents=True, exist_ok=True)
                if i % 2:
                    with open(p, "wb") as fh:
                        fh.write(head)
                        fh.seek(FULL_HASH_MAX_BYTES + 4096 - len(tail))
                        fh.write(tail)
                else:
                    p.write_bytes(small)
                files.append((p, False))
        n = len(files)
        memo_path = root / "memo.sqlite"

        def timed(memo: FingerprintMemo) -> tuple[float, str]:
            t0 = time.perf_counter()
            key = combined(fingerprints(files, memo=memo, workspace=root))
            memo.save()
            return time.perf_counter() - t0, key

        memo = FingerprintMemo(memo_path)
        cold, key_cold = timed(memo)
        memo.close()
        t0 = time.perf_counter()
        memo = FingerprintMemo(memo_path)
        reopen = time.perf_counter() - t0
        warm, key_warm = timed(memo)
        if args.dir is None:
            os.utime(files[0][0])
        touched, key_touched = timed(memo)
        memo.close()

    print(json.dumps({
        "benchmark": "fingerprint", "n_files": n, "folder": str(args.dir) if args.dir else None,
        "bytes": sum(p.stat().st_size for p, _ in files) if args.dir else None, "small_kib": args.kib,
        "large_bytes": FULL_HASH_MAX_BYTES + 4096,
        "cold_s": round(cold, 3), "cold_files_per_s": round(n / cold),
        "memo_open_s": round(reopen, 3), "warm_s": round(warm, 3),
        "warm_files_per_s": round(n / warm), "one_touched_s": round(touched, 3),
        "warm_key_unchanged": key_warm == key_cold,
        "touched_full_hash_file_key_unchanged": key_touched == key_cold,
        "python": platform.python_version(), "machine": platform.machine(),
    }))


if __name__ == "__main__":
    main()
