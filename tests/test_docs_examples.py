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
        if info.name.endswith("__main__") or info.name == "simcompare.sims.api":  # a deprecated alias
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


def _package_modules() -> list[str]:
    root = Path(simcompare.__file__).resolve().parent
    names = []
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        names.append(".".join(parts[:-1] if parts[-1] == "__init__" else parts))
    return names


def test_every_module_is_named_in_the_architecture_page():
    """Each module file of the package appears as a code span with its dotted name."""
    text = DOC.read_text()
    modules = _package_modules()
    assert "simcompare.stats.metrics" in modules and "simcompare" in modules
    missing = [m for m in modules if f"`{m}`" not in text]
    assert missing == [], f"modules not named in {DOC.name}: {missing}"
