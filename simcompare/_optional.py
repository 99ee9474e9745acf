"""Optional helpers: progress bars that are a no-op when disabled."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TypeVar

__all__ = ["progress"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, desc: str = "", total: int | None = None, enable: bool = False,
    unit: str = "it",
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm progress bar when ``enable`` is true.

    The library passes ``enable=False`` by default; the command line turns bars on.
    """
    if not enable:
        yield from iterable
        return
    try:
        from tqdm.auto import tqdm
    except ImportError:  # pragma: no cover - tqdm is a dependency
        yield from iterable
        return
    yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
