"""Public names: the star import shadows no builtin; the verbs resolve."""

from __future__ import annotations

import builtins

import simcompare


def test_star_import_shadows_no_builtin():
    namespace: dict = {}
    exec("from simcompare import *", namespace)
    shadowed = sorted(n for n in namespace if n != "__builtins__" and hasattr(builtins, n))
    assert shadowed == [], shadowed


def test_every_name_in_all_resolves():
    for name in simcompare.__all__:
        assert getattr(simcompare, name) is not None, name


def test_list_verb_stays_an_attribute():
    from simcompare.pipeline import list_all

    assert simcompare.list is list_all and simcompare.list_runs is list_all
    assert "list" not in simcompare.__all__
