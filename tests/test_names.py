"""Public names: the star import shadows no builtin; the verbs resolve."""

from __future__ import annotations

import builtins
import importlib
import sys

import pytest

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


def test_the_old_name_of_the_tng_web_api_module_still_imports():
    from simcompare.sims import tng_api

    sys.modules.pop("simcompare.sims.api", None)
    with pytest.warns(DeprecationWarning, match="simcompare.sims.tng_api"):
        old = importlib.import_module("simcompare.sims.api")
    assert old is tng_api and old.fetch is tng_api.fetch


def test_the_fetch_verb_is_the_tng_web_api_fetch():
    from simcompare.sims.tng_api import fetch

    assert simcompare.fetch is fetch
