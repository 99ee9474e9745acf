"""Which segment of a segmentation map is the central galaxy.

Preprocessing (neighbour masking) and morphology both detect sources on a stamp and then
need the segment of the target galaxy: the one under the centre pixel, or, when the
centre pixel is background, the segment of the nearest labelled pixel within a search
radius. :func:`central_label` is that rule, in one place.
"""

from __future__ import annotations

import numpy as np

__all__ = ["central_label"]


def central_label(
    labels: np.ndarray, center: tuple[float, float], *, max_radius: float = float("inf"),
) -> int:
    """Label of the central segment of a segmentation map, 0 when there is none.

    Parameters
    ----------
    labels : ndarray of int, shape (H, W)
        Segmentation map: 0 is background, each source has its own positive label.
    center : (float, float)
        ``(x, y)`` pixel coordinates of the stamp centre; the pixel under it is the
        nearest one (clipped to the map).
    max_radius : float, optional
        When the centre pixel is background, the nearest labelled pixel counts only if it
        lies within this distance [pixels] of ``center`` (inclusive; default no limit).

    Returns
    -------
    int
        The label under the centre pixel, else the label of the nearest labelled pixel
        within ``max_radius``, else 0.
    """
    labels = np.asarray(labels)
    h, w = labels.shape
    cx, cy = float(center[0]), float(center[1])
    ix, iy = int(np.clip(round(cx), 0, w - 1)), int(np.clip(round(cy), 0, h - 1))
    label = int(labels[iy, ix])
    if label != 0:
        return label
    yy, xx = np.nonzero(labels)
    if yy.size == 0:
        return 0
    d2 = (xx - cx) ** 2 + (yy - cy) ** 2
    k = int(np.argmin(d2))
    if d2[k] > max_radius**2:
        return 0
    return int(labels[yy[k], xx[k]])
