"""Progress bars (tqdm) that are a no-op when disabled."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

__all__ = ["bar", "progress"]

T = TypeVar("T")


def progress(
    iterable: Iterable[T], *, desc: str = "", total: int | None = None, enable: bool = False,
    unit: str = "it",
) -> Iterator[T]:
    """Wrap ``iterable`` in a tqdm progress bar when ``enable`` is true.

    The library passes ``enable=False`` by default; the command line turns bars on.

    Parameters
    ----------
    iterable : iterable
        What to iterate over.
    desc : str
        Label of the bar.
    total : int, optional
        Number of items, when ``iterable`` has no length.
    enable : bool
        Show the bar; otherwise ``iterable`` is passed through unchanged.
    unit : str
        Unit shown after the count.
    """
    if not enable:
        yield from iterable
        return
    from tqdm.auto import tqdm

    yield from tqdm(iterable, desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)


class _NoBar:
    """Stands in for a tqdm bar when bars are off."""

    def update(self, n: int = 1) -> None:
        pass

    def set_postfix_str(self, s: str) -> None:
        pass

    def close(self) -> None:
        pass


def bar(*, desc: str = "", total: int | None = None, enable: bool = False, unit: str = "it") -> Any:
    """A tqdm bar to advance by hand (``update``, ``close``), or a no-op one when disabled.

    For work whose units are not the items of one loop (images scored in batches by
    several passes, the steps of a stage).
    """
    if not enable:
        return _NoBar()
    from tqdm.auto import tqdm

    return tqdm(desc=desc, total=total, unit=unit, leave=False, dynamic_ncols=True)
