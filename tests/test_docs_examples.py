"""Every ``python`` block of docs/ARCHITECTURE.md runs, in order, in one fresh folder."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

import simcompare

DOC = Path(__file__).resolve().parent.parent / "docs" / "ARCHITECTURE.md"
_BLOCK = re.compile(r"^```(\w*)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _blocks(kind: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(DOC.read_text()) if lang == kind]


def test_the_architecture_page_has_examples():
    assert len(_blocks("python")) >= 5


def test_architecture_examples_run(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "architecture_examples"}
    for k, code in enumerate(_blocks("python"), 1):
        try:
            exec(compile(code, f"{DOC.name} python block {k}", "exec"), namespace)
        except Exception as exc:  # name the block that failed
            pytest.fail(f"{DOC.name} python block {k} failed: {type(exc).__name__}: {exc}\n{code}")


_DEF = re.compile(r"^\s*def (\w+)\((.*?)\)\s*(?:->|$)", re.MULTILINE | re.DOTALL)
_PARAM = re.compile(r"(?:^|,)\s*\*{0,2}(\w+)\s*(?=[:=,]|$)")


def _public_callables() -> dict[str, list[object]]:
    import importlib
    import inspect
    import pkgutil

    found: dict[str, list[object]] = {}
    for info in pkgutil.walk_packages(simcompare.__path__, "simcompare."):
        if info.name.endswith("__main__"):
            continue
        mod = importlib.import_module(info.name)
        for obj in vars(mod).values():
            if getattr(obj, "__module__", "") != mod.__name__:
                continue
            if inspect.isfunction(obj):
                found.setdefault(obj.__name__, []).append(obj)
            elif inspect.isclass(obj):
                for name, member in vars(obj).items():
                    fn = member.fget if isinstance(member, property) else getattr(member, "__func__", member)
                    if inspect.isfunction(fn):
                        found.setdefault(name, []).append(fn)
    return found


def test_documented_signatures_name_real_parameters():
    """Each ``def`` of a ``pyi`` block is a real function and its arguments exist."""
    import inspect

    real = _public_callables()
    problems = []
    for block in _blocks("pyi"):
        for name, params in _DEF.findall(block):
            if name not in real:
                problems.append(f"{name}: no such function or method in simcompare")
                continue
            documented = {p for p in _PARAM.findall(re.sub(r"\[.*?\]|\(.*?\)", "", params))
                          if p not in ("self", "cls")}
            if not any(documented <= set(inspect.signature(fn).parameters) for fn in real[name]):
                have = [sorted(inspect.signature(fn).parameters) for fn in real[name]]
                problems.append(f"{name}: documents {sorted(documented)}, the code has {have}")
    assert not problems, "\n".join(problems)
