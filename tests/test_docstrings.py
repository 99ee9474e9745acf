"""numpydoc sections on the public API, the check ruff's ``D`` rules do not make.

Every public function or method of a public module that takes three or more parameters
(``self``/``cls`` not counted) documents them in a numpydoc ``Parameters`` section, and
every name listed there is a real parameter.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import simcompare

PKG = Path(simcompare.__file__).parent
MIN_PARAMS = 3
_ENTRY = re.compile(r"^(\*{0,2}[A-Za-z_]\w*(?:\s*,\s*\*{0,2}[A-Za-z_]\w*)*)\s*(?::|$)")


def _public_functions():
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if any(part.startswith("_") and part != "__init__.py" for part in rel.parts):
            continue
        tree = ast.parse(path.read_text())
        stack = [(node, "") for node in tree.body]
        while stack:
            node, prefix = stack.pop()
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                stack.extend((child, f"{prefix}{node.name}.") for child in node.body)
            elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_"):
                a = node.args
                names = [x.arg for x in (*a.posonlyargs, *a.args, *a.kwonlyargs)]
                names += [x.arg for x in (a.vararg, a.kwarg) if x is not None]
                names = [n for n in names if n not in ("self", "cls")]
                yield f"{rel}:{node.lineno} {prefix}{node.name}", names, ast.get_docstring(node) or ""


def _documented(doc: str) -> set[str] | None:
    lines = doc.splitlines()
    for i, line in enumerate(lines[:-1]):
        if line.strip() == "Parameters" and set(lines[i + 1].strip()) == {"-"}:
            names: set[str] = set()
            prev = ""
            for entry in lines[i + 2:]:
                if entry.strip() and set(entry.strip()) == {"-"}:
                    names.discard(prev)  # that was the next section's title
                    break
                if entry and not entry.startswith(" "):
                    m = _ENTRY.match(entry)
                    if m:
                        prev = ""
                        for n in m.group(1).split(","):
                            prev = n.strip().lstrip("*")
                            names.add(prev)
            return names
    return None


def test_public_functions_with_several_parameters_document_them():
    missing, unknown = [], []
    for where, names, doc in _public_functions():
        if len(names) < MIN_PARAMS:
            continue
        documented = _documented(doc)
        if documented is None:
            missing.append(f"{where} ({len(names)} parameters)")
        elif documented - set(names):
            unknown.append(f"{where}: documents {sorted(documented - set(names))}, not parameters")
    assert not missing, "no numpydoc Parameters section:\n" + "\n".join(missing)
    assert not unknown, "\n".join(unknown)
