"""Observed survey samples: HSC cutout and manifest readers, ingestion, demo samples.

Public functions: :func:`ingest` (cutouts or manifest -> observed ImageSet),
:func:`load_sample` (follows a survey descriptor's ``[sample]``),
:func:`make_demo_sample` and :func:`make_cosmos_sample` (synthetic samples written in the
HSC cutout layout).
"""

from __future__ import annotations

from .cutouts import (
    read_catalog_table,
    read_hsc_band,
    read_manifest,
    read_psf,
    write_hsc_band,
    write_psf,
)
from .demo import demo_sample_root, make_cosmos_sample, make_demo_sample, survey_psf_images
from .ingestion import ingest
from .sample import load_sample

__all__ = [
    "demo_sample_root",
    "ingest",
    "load_sample",
    "make_cosmos_sample",
    "make_demo_sample",
    "read_catalog_table",
    "read_hsc_band",
    "read_manifest",
    "read_psf",
    "survey_psf_images",
    "write_hsc_band",
    "write_psf",
]
