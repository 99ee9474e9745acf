"""The report's pictures of galaxies: galleries, look-alikes, mismatch maps, the appearance map, anomalies."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..stats.metrics import by_typicality
from . import figures
from ._common import (
    GALLERY_SIZE,
    SectionUnavailable,
    _ci,
    _json,
    _log10,
    _normalised,
    _num,
    _rows_for,
    _Run,
    _safe,
    _score_column,
    _write_text,
    pd_series,
)


@dataclass
class _Stamps:
    """Writes composites and per-band stamps with one shared stretch."""

    fig_dir: Path
    bands: tuple[str, ...]
    q: float
    stretch: float
    choice: tuple[int, int, int] | None

    def composite(self, image: np.ndarray) -> np.ndarray:
        if self.choice is None:
            return figures.asinh_grey(image.mean(axis=0), stretch=self.stretch, q=self.q)
        r, g, b = (image[i] for i in self.choice)
        return figures.lupton_rgb(r, g, b, stretch=self.stretch, q=self.q)

    def write(self, stem: str, image: np.ndarray, *, bands: bool = True) -> dict[str, Any]:
        figures.write_png(self.fig_dir / f"{stem}.png", self.composite(image))
        if not bands:
            return {"src": f"figures/{stem}.png", "bands": []}
        out = []
        for i, band in enumerate(self.bands):
            name = f"{stem}_{_safe(band)}.png"
            figures.write_png(self.fig_dir / name,
                              figures.asinh_grey(image[i], stretch=self.stretch, q=self.q))
            out.append({"band": band, "src": f"figures/{name}"})
        return {"src": f"figures/{stem}.png", "bands": out}


def _stamp_writer(fig_dir: Path, bands: tuple[str, ...], calib: np.ndarray) -> _Stamps:
    """A stamp writer whose asinh stretch is calibrated on the stamps ``calib``."""
    choice = figures.rgb_band_choice(bands)
    intensity = calib[:, list(choice)].mean(axis=1) if choice else calib.mean(axis=1)
    q, stretch = figures.asinh_calibration(intensity)
    return _Stamps(fig_dir=fig_dir, bands=bands, q=q, stretch=stretch, choice=choice)


def _ranked(run: _Run) -> dict[str, Any]:
    """Least and most typical simulated galaxies, their image rows and look-alikes."""
    def build() -> dict[str, Any]:
        sim = run.table("sim_scores")
        column = _score_column(run)
        if column not in sim.columns:
            msg = f"the sim_scores table has no '{column}' column"
            raise SectionUnavailable(msg)
        score = sim[column].to_numpy(float)
        ids = sim["object_id"].to_numpy()
        mock_ids = run.catalog("mocks")["object_id"]
        same = len(mock_ids) == len(ids) and np.array_equal(mock_ids, ids)
        rows = _rows_for(ids, mock_ids, same_order=same)
        good = np.flatnonzero(np.isfinite(score) & (rows >= 0))
        if good.size == 0:
            msg = "no simulated galaxy has both a finite score and an image"
            raise SectionUnavailable(msg)
        try:
            ref = run.table("reference_scores")
            ref_scores = ref[column].to_numpy(float) if column in ref.columns else None
        except SectionUnavailable:
            ref = ref_scores = None
        # typicality: distance from the observed median on either side (both tails are
        # atypical); the most typical are the closest, the least typical the furthest
        order, centre = by_typicality(score, ref_scores, candidates=good)
        k = min(GALLERY_SIZE, good.size)
        most = order[:k]
        far = order[::-1]
        if good.size >= 2 * k:
            far = far[~np.isin(far, most)]
        least = far[:k]
        return {"sim": sim, "score": score, "rows": rows, "least": least, "most": most,
                "centre": centre, "column": column, "ref": ref,
                "n_unranked": int(len(score) - good.size)}

    return run._cached("ranked", build)


def _lookalikes(run: _Run, sim_pos: np.ndarray) -> dict[str, Any]:
    """Nearest observed galaxy to each simulated galaxy at ``sim_pos`` (rows of sim_scores).

    By appearance (the appearance stage's embedding) when the run has it; otherwise
    nearest in stellar mass and size, or in pixels.
    """
    try:
        return _lookalikes_by_appearance(run, sim_pos)
    except SectionUnavailable:
        pass
    ranked = _ranked(run)
    sim = ranked["sim"]
    obs_cat = run.catalog("observed")
    obs_ids = np.asarray(obs_cat["object_id"])
    pool = np.arange(len(obs_ids))
    ref = ranked["ref"]
    pool_note = "all observed galaxies in the sample"
    if ref is not None and "object_id" in ref.columns:
        in_ref = np.isin(obs_ids, ref["object_id"].to_numpy())
        if in_ref.any():
            pool = np.flatnonzero(in_ref)
            pool_note = "the held-out observed galaxies (the reference of the comparison)"
    feats_sim, feats_obs, names = [], [], []
    if "stellar_mass_msun" in sim.columns and "stellar_mass_msun" in obs_cat:
        feats_sim.append(_log10(sim["stellar_mass_msun"].to_numpy(float)[sim_pos]))
        feats_obs.append(_log10(np.asarray(obs_cat["stellar_mass_msun"], float)[pool]))
        names.append("log10 stellar mass (catalogue)")
    try:
        ms = run.table("morphology_sim").drop_duplicates("object_id").set_index("object_id")
        mr = run.table("morphology_reference").drop_duplicates("object_id").set_index("object_id")
        if "r_half_arcsec" in ms.columns and "r_half_arcsec" in mr.columns:
            rs = sim["object_id"].iloc[sim_pos].map(ms["r_half_arcsec"]).to_numpy(float)
            ro = pd_series(obs_ids[pool]).map(mr["r_half_arcsec"]).to_numpy(float)
            if np.isfinite(ro).sum() >= 1 and np.isfinite(rs).all():
                feats_sim.append(_log10(rs))
                feats_obs.append(_log10(ro))
                names.append("log10 half-light radius (statmorph on the same stamps)")
    except SectionUnavailable:
        pass
    if names and all(np.isfinite(f).all() for f in feats_sim):
        fo = np.stack(feats_obs, axis=1)
        keep = np.isfinite(fo).all(axis=1)
        fo, pool_k = fo[keep], pool[keep]
        if pool_k.size:
            std = fo.std(axis=0)
            std = np.where(std > 0, std, 1.0)
            fs = np.stack(feats_sim, axis=1)
            d = np.sqrt((((fs[:, None, :] - fo[None, :, :]) / std) ** 2).sum(axis=2))
            best = np.argmin(d, axis=1)
            return {"rows": pool_k[best], "distance": d[np.arange(len(best)), best],
                    "definition": (f"nearest in {' and '.join(names)}, each standardised by "
                                   f"its spread among {pool_note} (Euclidean distance)"),
                    "ids": obs_ids[pool_k[best]]}
    # pixel space: flux-normalised images, Euclidean distance
    pool = pool[:2000]
    sim_img = run.images("mocks", ranked["rows"][sim_pos])
    obs_img = run.images("observed", pool)
    if sim_img.shape[1:] != obs_img.shape[1:]:
        msg = "simulated and observed stamps differ in shape; no look-alikes can be matched"
        raise SectionUnavailable(msg)
    a = _normalised(sim_img)
    b = _normalised(obs_img)
    d = np.sqrt(np.maximum(
        (a**2).sum(1)[:, None] + (b**2).sum(1)[None, :] - 2.0 * a @ b.T, 0.0))
    best = np.argmin(d, axis=1)
    return {"rows": pool[best], "distance": d[np.arange(len(best)), best],
            "definition": (f"nearest in pixel space among {pool_note} (first 2000): "
                           "Euclidean distance between stamps each divided by its total flux"),
            "ids": obs_ids[pool[best]]}


def _lookalikes_by_appearance(run: _Run, sim_pos: np.ndarray) -> dict[str, Any]:
    arrays = run.appearance_arrays()
    info = run.appearance().get("lookalikes") or {}
    sim = _ranked(run)["sim"]
    sim_ids = np.asarray(arrays["sim_object_id"])
    where = _rows_for(sim["object_id"].to_numpy()[sim_pos], sim_ids, same_order=False)
    if (where < 0).any():
        msg = "the appearance arrays do not cover every simulated galaxy shown"
        raise SectionUnavailable(msg)
    obs_ids = np.asarray(run.catalog("observed")["object_id"])
    look_ids = np.asarray(arrays["lookalike_object_id"])[where, 0]
    rows = _rows_for(look_ids, obs_ids, same_order=False)
    if (rows < 0).any():
        msg = "a look-alike by appearance is not in the observed image set"
        raise SectionUnavailable(msg)
    return {"rows": rows, "ids": look_ids,
            "distance": np.asarray(arrays["lookalike_distance"])[where, 0],
            "definition": str(info.get("definition", "nearest by appearance")) + " (among "
                          + str(info.get("pool", "the observed galaxies")) + ")",
            "all_ids": np.asarray(arrays["lookalike_object_id"])[where],
            "all_distance": np.asarray(arrays["lookalike_distance"])[where]}


def _galleries(run: _Run, fig_dir: Path) -> dict[str, Any]:
    ranked = _ranked(run)
    header = run.header("mocks")
    bands = tuple(header.bands)
    sim, score, column = ranked["sim"], ranked["score"], ranked["column"]
    notes = []
    if ranked["n_unranked"]:
        notes.append(f"{ranked['n_unranked']} simulated galaxies with a non-finite score or no "
                     "image are not ranked")
    positions = np.concatenate([ranked["least"], ranked["most"]])
    try:
        look = _lookalikes(run, positions)
        obs_bands = tuple(run.header("observed").bands)
        if obs_bands != bands:
            msg = f"observed bands {list(obs_bands)} differ from simulated bands {list(bands)}"
            raise SectionUnavailable(msg)
        obs_img = run.images("observed", look["rows"])
        more_img = None
        if "all_ids" in look:
            obs_ids_all = np.asarray(run.catalog("observed")["object_id"])
            pairs = [(j, m) for j in range(look["all_ids"].shape[0])
                     for m in range(1, look["all_ids"].shape[1]) if look["all_ids"][j, m] >= 0]
            extra_rows = _rows_for(np.array([look["all_ids"][p] for p in pairs], np.int64),
                                   obs_ids_all, same_order=False)
            if pairs and (extra_rows >= 0).all():
                more_img = dict(zip(pairs, run.images("observed", extra_rows), strict=True))
    except SectionUnavailable as exc:
        look, obs_img, more_img = None, None, None
        notes.append(f"no observed look-alikes: {exc}")
    sim_img = run.images("mocks", ranked["rows"][positions])
    calib = obs_img if obs_img is not None and len(obs_img) else sim_img
    stamps = _stamp_writer(fig_dir, bands, calib)
    run.cache["stamps"] = stamps
    choice, stretch = stamps.choice, stamps.stretch
    ref_ids = None if ranked["ref"] is None else ranked["ref"]["object_id"].to_numpy()
    ref_scores = (None if ranked["ref"] is None or column not in ranked["ref"].columns
                  else ranked["ref"][column].to_numpy(float))
    groups = []
    for gid, title, pos_slice in (("least-typical", "least typical", slice(0, len(ranked["least"]))),
                                  ("most-typical", "most typical",
                                   slice(len(ranked["least"]), len(positions)))):
        items = []
        for j in range(pos_slice.start, pos_slice.stop):
            p = positions[j]
            rank = j - pos_slice.start + 1
            stem = f"{gid}_{rank:02d}"
            item = {"rank": rank, "object_id": int(sim["object_id"].iloc[p]),
                    "score": _num(score[p]),
                    "side": "above" if score[p] > ranked["centre"] else "below",
                    "percentile": (_num(sim["percentile"].iloc[p]) if "percentile" in sim.columns
                                   else "–"),
                    "sim": stamps.write(f"{stem}_sim", sim_img[j]), "obs": None, "more": []}
            if look is not None:
                oid = int(look["ids"][j])
                obs_score = "–"
                if ref_ids is not None and ref_scores is not None:
                    hit = np.flatnonzero(ref_ids == oid)
                    obs_score = _num(ref_scores[hit[0]]) if hit.size else "–"
                item["obs"] = {"object_id": oid, "distance": _num(look["distance"][j]),
                               "score": obs_score, **stamps.write(f"{stem}_obs", obs_img[j])}
                if "all_ids" in look and more_img is not None:
                    for m in range(1, look["all_ids"].shape[1]):
                        mid = int(look["all_ids"][j, m])
                        if mid < 0:
                            continue
                        item["more"].append({
                            "object_id": mid, "distance": _num(look["all_distance"][j, m]),
                            **stamps.write(f"{stem}_obs{m + 1}", more_img[(j, m)], bands=False)})
            items.append(item)
        groups.append({"id": gid, "title": title, "items": items})
    rgb = ("grey (mean of all bands)" if choice is None
           else f"R = {bands[choice[0]]}, G = {bands[choice[1]]}, B = {bands[choice[2]]}")
    return {
        "groups": groups, "notes": notes, "column": column, "centre": _num(ranked["centre"]),
        "definition": None if look is None else look["definition"],
        "stretch": {"rgb": rgb, "q": _num(stamps.q), "s": _num(stretch),
                    "unit": header.flux_unit,
                    "calibrated_on": ("the observed look-alike stamps" if obs_img is not None
                                      else "the simulated stamps shown")},
    }


def _mismatch(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """Occlusion maps of the least typical simulated galaxies (computed by the appearance stage)."""
    ranked = _ranked(run)
    info = run.appearance().get("maps") or {}
    arrays = run.appearance_arrays()
    ids = np.asarray(arrays["map_object_id"])
    if ids.size == 0:
        msg = str(info.get("note") or "the appearance stage wrote no mismatch maps")
        raise SectionUnavailable(msg)
    maps, base = np.asarray(arrays["maps"]), np.asarray(arrays["map_score"])
    patch = int(arrays["map_patch"])
    sim = ranked["sim"]
    sim_ids = sim["object_id"].to_numpy()
    mock_rows = _rows_for(ids, run.catalog("mocks")["object_id"], same_order=False)
    if (mock_rows < 0).any():
        msg = "a galaxy with a mismatch map is not in the mock image set"
        raise SectionUnavailable(msg)
    images = run.images("mocks", mock_rows)
    stamps = run.cache.get("stamps")
    if not isinstance(stamps, _Stamps):
        stamps = _stamp_writer(fig_dir, tuple(run.header("mocks").bands), images)
    items = []
    for j, oid in enumerate(ids.tolist()):
        stem = f"mismatch_{j + 1:02d}"
        stamps.write(f"{stem}_image", images[j], bands=False)
        m = maps[j]
        limit = float(np.nanmax(np.abs(m))) if np.isfinite(m).any() else 0.0
        big = np.kron(m, np.ones((patch, patch)))
        figures.write_png(fig_dir / f"{stem}_map.png", figures.diverging_rgb(big, limit=limit))
        hit = np.flatnonzero(sim_ids == oid)
        score = ranked["score"][hit[0]] if hit.size else np.nan
        peak = np.unravel_index(int(np.nanargmax(m)), m.shape) if np.isfinite(m).any() else (0, 0)
        items.append({
            "rank": j + 1, "object_id": int(oid),
            "image": f"figures/{stem}_image.png", "map": f"figures/{stem}_map.png",
            "score": _num(score), "recomputed": _num(base[j]),
            "side": "above" if score > ranked["centre"] else "below",
            "limit": _num(limit), "max": _num(float(np.nanmax(m))),
            "min": _num(float(np.nanmin(m))),
            "peak": f"x {peak[1] * patch}-{(peak[1] + 1) * patch - 1}, "
                    f"y {peak[0] * patch}-{(peak[0] + 1) * patch - 1}",
        })
    return {"items": items, "what": str(info.get("score") or "the score"),
            "grid": _num(info.get("grid")), "patch": _num(patch),
            "model": str((run.meta.get("paths") or {}).get("model"))}


def _appearance(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """The classifier axis in detail, the alignment fraction and the 2-D appearance map."""
    app = run.appearance()
    c2 = app.get("any_difference") or {}
    try:
        captured = ((run.summary().get("axes") or {}).get("any_difference") or {}).get("captured") or {}
    except SectionUnavailable:
        captured = {}
    null = c2.get("null") or {}
    align = app.get("alignment") or {}
    anull = align.get("null") or {}
    out: dict[str, Any] = {
        "auroc": _num(c2.get("value")), "ci": _ci(c2.get("ci")),
        "null": _num(null.get("value")), "null_ci": _ci(null.get("ci")),
        "null_note": str(null.get("skipped") or ""),
        "detected": "yes" if c2.get("detected") else "no",
        "method": str(c2.get("method", "")), "n": c2.get("n") or {},
        "options": _json(c2.get("options") or {}),
        "captured": [{"axis": name, "share": "–" if captured.get(key) is None
                      else f"{100 * float(captured[key]):.0f}%"}
                     for key, name in (("fine_structure", "fine structure (likelihood ratio)"),
                                       ("global_structure", "global structure (morphology)"))],
        "captured_definition": str(captured.get("definition", "")),
        "alignment": _num(align.get("value")), "alignment_ci": _ci(align.get("ci")),
        "alignment_null": _num(anull.get("value")), "alignment_null_ci": _ci(anull.get("ci")),
        "alignment_definition": str(align.get("definition", "")),
        "observed_share": _num(align.get("mean_observed_share")),
        "expected_share": _num(align.get("expected_rate")),
        "embedding": str((app.get("embedding") or {}).get("method", "")),
        "map_text": str((app.get("embedding") or {}).get("map", "")), "figure": None,
        "timings": _json(app.get("timings_s") or {}),
    }
    arrays = run.appearance_arrays()
    sim_xy, obs_xy = np.asarray(arrays["sim_xy"]), np.asarray(arrays["obs_xy"])
    if len(sim_xy) and len(obs_xy):
        xy = np.concatenate([sim_xy, obs_xy])
        lo, hi = np.percentile(xy, 2, axis=0), np.percentile(xy, 98, axis=0)
        n_grid = 5
        gx, gy = np.linspace(lo[0], hi[0], n_grid), np.linspace(lo[1], hi[1], n_grid)
        cell = (hi - lo) / max(n_grid - 1, 1)
        picks: list[tuple[str, int, float, float]] = []
        for yv in gy:
            for xv in gx:
                d = np.hypot((xy[:, 0] - xv) / max(cell[0], 1e-12), (xy[:, 1] - yv) / max(cell[1], 1e-12))
                k = int(np.argmin(d))
                if d[k] < 0.5:
                    side = "sim" if k < len(sim_xy) else "obs"
                    picks.append((side, k if side == "sim" else k - len(sim_xy), float(xv), float(yv)))
        stamps_rgb = []
        for key, cat_key, side in (("sim", "mocks", "sim"), ("obs", "observed", "obs")):
            chosen = [p for p in picks if p[0] == side]
            if not chosen:
                continue
            ids = np.asarray(arrays["sim_object_id" if side == "sim" else "obs_object_id"])
            rows = _rows_for(ids[[p[1] for p in chosen]], run.catalog(cat_key)["object_id"],
                             same_order=False)
            img = run.images(cat_key, rows)
            writer = run.cache.get("stamps")
            if not isinstance(writer, _Stamps):
                writer = _stamp_writer(fig_dir, tuple(run.header(cat_key).bands), img)
                run.cache["stamps"] = writer
            stamps_rgb += [(p[2], p[3], writer.composite(im), key) for p, im in zip(chosen, img, strict=True)]
        figures.embedding_map(sim_xy, obs_xy, stamps_rgb, cell=cell, path=fig_dir / "appearance_map.png")
        out["figure"] = "figures/appearance_map.png"
        out["n_stamps"] = len(stamps_rgb)
    return out


def _anomalies(run: _Run, fig_dir: Path) -> dict[str, Any]:
    """The held-out observed galaxies the density model finds least typical."""
    column = _score_column(run)
    ref = run.table("reference_scores")
    if column not in ref.columns:
        msg = f"the reference_scores table has no '{column}' column"
        raise SectionUnavailable(msg)
    rows, table = anomaly_rows(ref, column=column, n=GALLERY_SIZE)
    obs_rows = _rows_for(ref["object_id"].to_numpy()[rows], run.catalog("observed")["object_id"],
                         same_order=False)
    items = []
    if (obs_rows >= 0).all() and len(obs_rows):
        img = run.images("observed", obs_rows)
        stamps = run.cache.get("stamps")
        if not isinstance(stamps, _Stamps):
            stamps = _stamp_writer(fig_dir, tuple(run.header("observed").bands), img)
        for j, r in enumerate(table):
            items.append({**r, **stamps.write(f"anomaly_{j + 1:02d}", img[j], bands=False)})
    return {"items": items, "rows": table, "column": column, "n_ref": len(ref),
            "rule": ANOMALY_RULE}


def write_anomaly_page(out: Path, *, survey: str, rows: list[dict[str, Any]], images: np.ndarray,
                       bands: tuple[str, ...], column: str, rule: str, n_ranked: int) -> Path:
    """The gallery page of ``simcompare anomalies`` (``out/index.html`` and ``out/figures/``).

    Parameters
    ----------
    out : Path
        Output folder.
    survey : str
        Survey name (the title).
    rows : list of dict
        Display rows, least typical first (:func:`anomaly_rows`).
    images : ndarray, shape (N, B, H, W)
        The galaxies' stamps, in ``rows`` order.
    bands : tuple of str
        Band names of ``images``.
    column : str
        The score ranked.
    rule : str
        How the galaxies were ranked, in words.
    n_ranked : int
        Galaxies ranked.

    Returns
    -------
    Path
        ``out/index.html``.
    """
    import html as _html

    fig_dir = Path(out) / "figures"
    if fig_dir.is_dir():
        shutil.rmtree(fig_dir)
    fig_dir.mkdir(parents=True)
    cards, table = [], []
    if len(images):
        stamps = _stamp_writer(fig_dir, bands, images)
        for j, r in enumerate(rows):
            src = stamps.write(f"anomaly_{j + 1:02d}", images[j], bands=False)["src"]
            cards.append(f'<figure><img class="stamp" src="{src}" alt="anomalous observed galaxy '
                         f'{r["object_id"]}" width="124" height="124"><figcaption>#{r["rank"]} id '
                         f'{r["object_id"]}<br>score {r["score"]}</figcaption></figure>')
    if rows:
        keys = list(rows[0].keys())
        table.append("<tr>" + "".join(f"<th>{_html.escape(k)}</th>" for k in keys) + "</tr>")
        for r in rows:
            table.append("<tr>" + "".join(f"<td>{_html.escape(str(r[k]))}</td>" for k in keys) + "</tr>")
    esc = _html.escape
    text = (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Anomalies of "
            f"{esc(survey)}</title><style>figure{{display:inline-block;margin:4px;font-size:12px}}"
            f"td,th{{padding:2px 6px}}</style></head><body><h1>Anomalies of the sky: {esc(survey)}</h1>"
            f"<p>The {len(rows)} of {n_ranked} ranked galaxies with {esc(rule)} (score "
            f"<code>{esc(column)}</code>); table: <code>anomalies.parquet</code>.</p>"
            f"<div class=\"gallery\">{''.join(cards)}</div><table>{''.join(table)}</table>"
            "</body></html>\n")
    page = Path(out) / "index.html"
    _write_text(page, text)
    return page


#: How the anomalies of the sky are chosen (the report and ``simcompare anomalies``).
ANOMALY_RULE = ("the lowest scores among galaxies the density model did not train on: the "
                "galaxies the model finds least like the rest of the survey")


def anomaly_rows(table: Any, *, column: str, n: int) -> tuple[np.ndarray, list[dict[str, Any]]]:
    """Rows of the ``n`` lowest finite ``column`` values of a score table, and display rows.

    Parameters
    ----------
    table : DataFrame
        A score table.
    column : str
        The score to rank by (lowest first).
    n : int
        Rows to return.

    Returns
    -------
    (ndarray, list of dict)
        Row positions and one display row per galaxy.
    """
    v = table[column].to_numpy(float)
    good = np.flatnonzero(np.isfinite(v))
    rows = good[np.lexsort((good, v[good]))][:n]
    extra = [c for c in ("percentile", "p_simulated", "stellar_mass_msun", "redshift")
             if c in table.columns]
    out = []
    for rank, r in enumerate(rows, 1):
        out.append({"rank": rank, "object_id": int(table["object_id"].iloc[r]),
                    "score": _num(v[r]),
                    **{c: _num(table[c].iloc[r]) for c in extra}})
    return rows, out
