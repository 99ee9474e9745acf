"""A minimal, fast reader and writer for simple (uncompressed image) FITS files.

astropy.io.fits spends milliseconds per HDU on header verification; a demo sample or a
large cutout folder has thousands of small files. This module handles only the simple
case (primary + IMAGE extensions, BITPIX 8/16/32/64/-32/-64, no BSCALE/BZERO other than
the identity, no compression); anything else raises :class:`Unsupported` and callers fall
back to astropy. Headers are returned as plain dicts of keyword -> value.
"""

from __future__ import annotations

import os
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["Truncated", "Unsupported", "read_simple", "write_simple"]

_BLOCK = 2880
_DTYPES = {8: ">u1", 16: ">i2", 32: ">i4", 64: ">i8", -32: ">f4", -64: ">f8"}
_BITPIX = {np.dtype(v).newbyteorder("="): k for k, v in _DTYPES.items()}


class Unsupported(Exception):
    """The file uses a FITS feature this reader does not handle (use astropy)."""


class Truncated(Exception):
    """The file ends before its header or data are complete."""


#: Longest escaped string that fits one card with its closing quote (and ``&``).
_CHUNK = 67


def _quoted(text: str) -> str:
    """A FITS string value: quotes doubled, padded to 8 characters, in quotes."""
    return "'" + text.replace("'", "''").ljust(8) + "'"


def _chunks(text: str, size: int) -> list[str]:
    """Split ``text`` into pieces whose escaped form (quotes doubled) is at most ``size``."""
    out, piece, n = [], [], 0
    for ch in text:
        w = 2 if ch == "'" else 1
        if n + w > size:
            out.append("".join(piece))
            piece, n = [], 0
        piece.append(ch)
        n += w
    out.append("".join(piece))
    return out


@lru_cache(maxsize=8192)
def _cards(key: str, value: Any) -> str:
    """The 80-character card(s) of one keyword (several for a long string)."""
    if isinstance(value, float | np.floating) and not np.isfinite(value):
        value = repr(float(value))  # 'nan', 'inf', '-inf': FITS has no non-finite numbers
    if isinstance(value, bool | np.bool_):
        v = f"{'T' if value else 'F':>20}"
    elif isinstance(value, int | np.integer):
        v = f"{int(value):>20d}"
    elif isinstance(value, float | np.floating):
        s = f"{float(value):.16G}"
        if "." not in s and "E" not in s:
            s += ".0"
        v = f"{s:>20}"
    else:
        text = str(value)
        if len(key) > 8:  # ESO HIERARCH convention, as HSC uses for its MP_* mask planes
            room = 80 - len(f"HIERARCH {key} = ''")
            if room < 1:
                msg = f"FITS keyword {key!r} is too long for a card"
                raise ValueError(msg)
            card = f"HIERARCH {key} = {_quoted(_chunks(text, room)[0])}"
            if len(card) > 80:
                msg = f"FITS keyword {key!r} is too long for a card"
                raise ValueError(msg)
            return card.ljust(80)
        escaped = text.replace("'", "''")
        if len(escaped) <= 68:
            return f"{key:<8}= {_quoted(text)}".ljust(80)
        # the long-string (CONTINUE) convention: every card but the last ends in '&'
        pieces = _chunks(text, _CHUNK)
        cards = [f"{key:<8}= '{pieces[0].replace(chr(39), chr(39) * 2)}&'".ljust(80)]
        for i, piece in enumerate(pieces[1:], start=2):
            amp = "&" if i < len(pieces) else ""
            cards.append(f"CONTINUE  '{piece.replace(chr(39), chr(39) * 2)}{amp}'".ljust(80))
        return "".join(cards)
    if len(key) > 8:
        card = f"HIERARCH {key} = {v.strip()}"
        if len(card) > 80:
            msg = f"FITS keyword {key!r} is too long for a card"
            raise ValueError(msg)
        return card.ljust(80)
    return f"{key:<8}= {v}".ljust(80)


def _header_bytes(cards: list[tuple[str, Any]]) -> bytes:
    text = "".join(_cards(k, v) for k, v in cards) + "END".ljust(80)
    pad = (-len(text)) % _BLOCK
    return (text + " " * pad).encode("ascii")


def write_simple(
    path: str | os.PathLike, hdus: list[tuple[list[tuple[str, Any]], np.ndarray | None]],
) -> None:
    """Write a primary HDU and image extensions.

    Parameters
    ----------
    hdus : list of (cards, data)
        ``cards``: extra (keyword, value) pairs (``EXTNAME`` etc.); ``data``: 2-D array
        or None. The first entry is the primary HDU. Non-finite floats and long strings
        are written as the module docstring describes.
    """
    chunks = []
    for i, (cards, data) in enumerate(hdus):
        if data is None:
            base = [("SIMPLE", True) if i == 0 else ("XTENSION", "IMAGE"), ("BITPIX", 8), ("NAXIS", 0)]
        else:
            arr = np.asarray(data)
            bitpix = _BITPIX[arr.dtype.newbyteorder("=")]
            base = [("SIMPLE", True) if i == 0 else ("XTENSION", "IMAGE"), ("BITPIX", bitpix),
                    ("NAXIS", arr.ndim)]
            base += [(f"NAXIS{k + 1}", n) for k, n in enumerate(arr.shape[::-1])]
        if i == 0:
            base.append(("EXTEND", True))
        else:
            base += [("PCOUNT", 0), ("GCOUNT", 1)]
        chunks.append(_header_bytes(base + list(cards)))
        if data is not None:
            raw = np.ascontiguousarray(data, dtype=_DTYPES[bitpix]).tobytes()
            chunks.append(raw + b"\0" * ((-len(raw)) % _BLOCK))
    Path(path).write_bytes(b"".join(chunks))


def _parse_value(raw: str) -> Any:
    s = raw.strip()
    if s.startswith("'"):
        end = s.find("'", 1)
        while end != -1 and end + 1 < len(s) and s[end + 1] == "'":
            end = s.find("'", end + 2)
        return s[1:end].replace("''", "'").rstrip()
    if "/" in s:
        s = s.split("/", 1)[0].strip()
    if s == "T":
        return True
    if s == "F":
        return False
    try:
        return int(s)
    except ValueError:
        pass
    try:
        return float(s.replace("D", "E"))
    except ValueError:
        return s


def read_simple(path: str | os.PathLike) -> list[tuple[dict[str, Any], np.ndarray | None]]:
    """Read every HDU of a simple FITS file as (header dict, data) pairs.

    Raises
    ------
    Unsupported
        Compressed, scaled, random-group or table HDUs.
    Truncated
        The file ends early.
    """
    buf = Path(path).read_bytes()
    out = []
    pos = 0
    while pos < len(buf):
        header: dict[str, Any] = {}
        last = ""  # the keyword a CONTINUE card continues
        while True:
            block = buf[pos:pos + _BLOCK]
            if len(block) < _BLOCK:
                if not header and pos >= len(buf.rstrip(b"\0 ")):
                    return out
                raise Truncated
            pos += _BLOCK
            text = block.decode("ascii", errors="replace")
            done = False
            for k in range(36):
                card = text[80 * k:80 * k + 80]
                key = card[:8].strip()
                if key == "END":
                    done = True
                    break
                if key == "CONTINUE" and card[8:10] == "  ":
                    prev = header.get(last)
                    value = _parse_value(card[10:])
                    if isinstance(prev, str) and prev.endswith("&") and isinstance(value, str):
                        header[last] = prev[:-1] + value
                    continue
                if card[8:10] == "= ":
                    header[key] = _parse_value(card[10:])
                    last = key
                elif key == "HIERARCH" and "=" in card:
                    name, raw = card[9:].split("=", 1)
                    header[name.strip()] = _parse_value(raw)
            if done:
                break
        if not out and header.get("SIMPLE") is not True:
            raise Unsupported
        if out and header.get("XTENSION") != "IMAGE":
            raise Unsupported
        if header.get("BSCALE", 1) != 1 or header.get("BZERO", 0) != 0 or header.get("GROUPS"):
            raise Unsupported
        naxis = int(header.get("NAXIS", 0))
        bitpix = int(header.get("BITPIX", 8))
        if bitpix not in _DTYPES:
            raise Unsupported
        data = None
        if naxis:
            shape = tuple(int(header[f"NAXIS{k}"]) for k in range(naxis, 0, -1))
            nbytes = int(np.prod(shape)) * abs(bitpix) // 8
            if pos + nbytes > len(buf):
                raise Truncated
            data = np.frombuffer(buf, dtype=_DTYPES[bitpix], count=int(np.prod(shape)), offset=pos)
            data = data.reshape(shape).astype(np.dtype(_DTYPES[bitpix]).newbyteorder("="))
            pos += nbytes + ((-nbytes) % _BLOCK)
        out.append((header, data))
        if pos >= len(buf) or not buf[pos:].strip(b"\0 "):
            break
    return out
