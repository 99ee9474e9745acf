"""The smooth background: Sersic fits of the observed galaxies, re-rendered with noise.

Each galaxy is fitted with one elliptical Sersic profile convolved with the ImageSet's
effective PSF, then re-rendered in every band with fresh noise drawn from the image's
variance. A density model of these renderings is the background for the likelihood
ratio: it shares sky, noise, PSF, size and profile with the observed galaxies and lacks
only their structure beyond a smooth profile.

Method (vectorised over all galaxies, torch, float32):

* **Profile**: a Sersic profile of index n is approximated by a mixture of concentric
  Gaussians with fixed variances (13 components: 12 log-spaced from 1e-5 to
  30 r_e^2, plus the exact n = 0.5 Gaussian) whose amplitudes are non-negative
  least-squares fits to the exact profile on a grid of n (0.5 ... 6); amplitudes
  are interpolated linearly in n in between. The enclosed-flux error is below about
  0.5 % of the total within 4 r_e (see the tests); the mixture is truncated at
  about 8 r_e, as the wings of high-n profiles usually are.
* **Rendering** is in Fourier space: the analytic transform of the elliptical
  Gaussians, times a phase ramp for the centre, times the DFT of the *effective*
  PSF, then an inverse FFT, i.e. ``(profile * PSF_eff)`` sampled at pixel centres. The
  pixel response is in PSF_eff and is counted once (no extra pixel convolution), as
  galsim's ``method="no_pixel"`` does.
* **Fit**: a moments-based first guess (Gaussian-weighted centroid and second
  moments of the band-summed image), then Levenberg-Marquardt iterations with a
  finite-difference Jacobian on (x0, y0, ln r_e, g1, g2, n) of the band-summed image,
  with the flux solved linearly at each step (variable projection) and inverse-variance
  weights. Per-band fluxes are then linear least-squares fits with each band's PSF
  (clipped at zero).

Observing conditions (:class:`ObservingConditions`). With ``SURVEY_CONDITIONS`` every
fit is re-rendered with the survey's own PSF and noise, as in the published
likelihood-ratio test: the two flows then see identical noise, so the ratio cancels it,
and with it any error in the noise or PSF of the images being scored (with one seed a
set with doubled noise scored a higher ratio than held-out observed galaxies, with
another a lower one). With ``BROAD_CONDITIONS`` (the default) each rendering
independently gets, with probability 1/3, its noise scaled by a factor drawn
log-uniformly from [0.5, 2.5], and with probability 1/3 its PSF widened or narrowed by
a factor from [0.7, 1.5] (4/9 of the renderings keep the survey's conditions exactly).
The background then covers smooth galaxies under a range of conditions while the main
model knows only the survey's, so the ratio still cancels the noise and smoothness of
images taken under the survey's conditions (the background's density there is lower by
at most about ln(9/4) = 0.8 nats plus what the flow spends on the wider range) and is
low for images whose noise or PSF departs from the survey's.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import ConfigError, DataFormatError
from ..imageset import ImageSet

__all__ = ["BROAD_CONDITIONS", "CONDITIONS", "N_GRID", "SURVEY_CONDITIONS",
           "ObservingConditions", "fit_sersic", "render_sersic", "scaled_psf",
           "sersic_background_images", "sersic_bn", "sersic_mixture"]

log = logging.getLogger(__name__)

N_GRID = np.array([0.5, 0.65, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0, 6.0])
# in units of r_e^2; 1/(2 ln 2) makes n = 0.5 (a Gaussian) exact
_VARIANCES = np.sort(np.append(np.logspace(-5, math.log10(30.0), 12), 0.5 / math.log(2.0)))
N_MIN, N_MAX = 0.5, 6.0


@dataclass(frozen=True)
class ObservingConditions:
    """How the background renderings vary the survey's noise and PSF.

    Parameters
    ----------
    noise_probability : float
        Probability that a rendering's noise sigma is scaled.
    noise_scale : (float, float)
        Range of the noise-sigma factor (drawn log-uniformly).
    psf_probability : float
        Probability (independent of the noise) that a rendering's PSF is rescaled.
    psf_scale : (float, float)
        Range of the PSF width factor (drawn log-uniformly), see :func:`scaled_psf`.
    """

    noise_probability: float = 1 / 3
    noise_scale: tuple[float, float] = (0.5, 2.5)
    psf_probability: float = 1 / 3
    psf_scale: tuple[float, float] = (0.7, 1.5)

    def __post_init__(self) -> None:
        for name in ("noise", "psf"):
            prob = getattr(self, f"{name}_probability")
            lo, hi = getattr(self, f"{name}_scale")
            if not 0.0 <= prob <= 1.0 or not 0.0 < lo <= hi:
                msg = (f"{name}_probability must lie in [0, 1] and {name}_scale be a range "
                       f"0 < lo <= hi; got {prob} and ({lo}, {hi})")
                raise ConfigError(msg)

    def draw(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """Noise and PSF factors for ``n`` renderings (1 where unchanged).

        The same random numbers are drawn whatever the probabilities, so renderings
        under different conditions with the same seed share their noise realisations.
        """
        out = []
        for prob, (lo, hi) in ((self.noise_probability, self.noise_scale),
                               (self.psf_probability, self.psf_scale)):
            use = rng.random(n) < prob
            factor = np.exp(rng.uniform(math.log(lo), math.log(hi), n))
            out.append(np.where(use, factor, 1.0))
        return out[0], out[1]

    def describe(self) -> dict[str, Any]:
        """JSON record (stored in training.json)."""
        return {"noise_probability": self.noise_probability,
                "noise_scale": list(self.noise_scale),
                "psf_probability": self.psf_probability, "psf_scale": list(self.psf_scale)}


#: The survey's own PSF and noise for every rendering (the published test's background).
SURVEY_CONDITIONS = ObservingConditions(noise_probability=0.0, psf_probability=0.0)
#: The default: a third of the renderings with other noise, a third with another PSF.
BROAD_CONDITIONS = ObservingConditions()
#: Names accepted by ``train(background_conditions=...)`` and ``--background-conditions``.
CONDITIONS = {"broad": BROAD_CONDITIONS, "survey": SURVEY_CONDITIONS}


def scaled_psf(psf: np.ndarray, scale: float, size: int | None = None) -> np.ndarray:
    """A PSF stamp (P, P) widened (``scale`` > 1) or narrowed about its centre pixel.

    ``psf_s(r) = psf(r / scale) / scale^2``, sampled by bilinear interpolation on a
    ``size`` x ``size`` stamp (default P; odd sizes keep the centre), clipped at zero and
    normalised to unit sum.

    Parameters
    ----------
    psf : ndarray, shape (P, P)
        Effective PSF, odd size, centred.
    scale : float
        Width factor (> 1 widens).
    size : int, optional
        Output side (default P).

    Returns
    -------
    ndarray, shape (size, size)
        The scaled PSF, summing to 1.
    """
    from scipy.ndimage import map_coordinates

    p = psf.shape[-1]
    m = p if size is None else int(size)
    c_in, c_out = p // 2, m // 2
    yy, xx = np.mgrid[0:m, 0:m].astype(np.float64)
    coords = [c_in + (yy - c_out) / scale, c_in + (xx - c_out) / scale]
    out = np.clip(map_coordinates(np.asarray(psf, np.float64), coords, order=1,
                                  mode="constant", cval=0.0), 0.0, None)
    return (out / out.sum()).astype(np.float32)


def sersic_bn(n: float) -> float:
    """``b_n`` such that r_e encloses half the light (exact, via the gamma function)."""
    from scipy.special import gammaincinv

    return float(gammaincinv(2 * n, 0.5))


@functools.cache
def sersic_mixture(n: float) -> tuple[np.ndarray, np.ndarray]:
    """Amplitudes and variances (units r_e^2) of the Gaussian mixture for index ``n``.

    The amplitudes are total fluxes of unit-flux 2-D Gaussians; they sum to about 1.
    """
    from scipy.optimize import nnls
    from scipy.special import gamma

    b = sersic_bn(n)
    r = np.logspace(-3.5, math.log10(8.0), 400)
    prof = b ** (2 * n) / (2 * math.pi * n * gamma(2 * n)) * np.exp(-b * r ** (1 / n))
    v = _VARIANCES
    basis = np.exp(-r[:, None] ** 2 / (2 * v[None])) / (2 * math.pi * v[None])
    # relative error weighted by the light in each log-radius bin (sqrt of r^2 I)
    wt = np.sqrt(r**2 * prof) / prof
    amp, _ = nnls(basis * wt[:, None], prof * wt)
    return amp, v


def _tables() -> tuple[Any, Any]:
    import torch

    table = torch.as_tensor(np.stack([sersic_mixture(float(g))[0] for g in N_GRID]),
                            dtype=torch.float32)
    return table, torch.as_tensor(N_GRID, dtype=torch.float32)


def _amplitudes(n: Any) -> tuple[Any, Any]:
    """Interpolated mixture amplitudes and their n-derivative for indices ``n`` -> (N, K)."""
    import torch

    table, grid = _tables()
    n = n.clamp(N_MIN, N_MAX)
    i = torch.searchsorted(grid, n.contiguous(), right=True).clamp(1, len(grid) - 1)
    dn = (grid[i] - grid[i - 1]).unsqueeze(-1)
    t = (n - grid[i - 1]).unsqueeze(-1) / dn
    return (1 - t) * table[i - 1] + t * table[i], (table[i] - table[i - 1]) / dn


def _fft_size(h: int, p: int) -> int:
    m = h + max(8, 2 * (p // 2))
    return m + (m % 2)


def _psf_hat(psf: np.ndarray, nf: int) -> Any:
    """rfft2 of PSF stamps (..., P, P) embedded centred on the origin of an nf grid."""
    import torch

    p = psf.shape[-1]
    buf = np.zeros((*psf.shape[:-2], nf, nf), np.float32)
    buf[..., :p, :p] = psf
    buf = np.roll(buf, (-(p // 2), -(p // 2)), axis=(-2, -1))
    return torch.fft.rfft2(torch.from_numpy(buf))


def _freq(nf: int) -> tuple[Any, Any]:
    import torch

    ky = torch.fft.fftfreq(nf).view(-1, 1)
    kx = torch.fft.rfftfreq(nf).view(1, -1)
    return kx, ky


def _shape(params: Any) -> tuple[Any, ...]:
    import torch

    x0, y0, ln_re, g1, g2, n = params[..., :6].unbind(-1)
    g = torch.sqrt(g1 * g1 + g2 * g2 + 1e-12)
    e = torch.tanh(g)
    q = (1 - e) / (1 + e)
    phi = 0.5 * torch.atan2(g2, g1)
    return x0, y0, torch.exp(ln_re), q, phi, n


def _abc(g1: Any, g2: Any) -> Any:
    """Coefficients (a, b, c) of ``k^T A k = a kx^2 + 2 b kx ky + c ky^2`` (r_e = 1), (N, 3)."""
    import torch

    g = torch.sqrt(g1 * g1 + g2 * g2 + 1e-12)
    e = torch.tanh(g)
    q = (1 - e) / (1 + e)
    phi = 0.5 * torch.atan2(g2, g1)
    c, s = torch.cos(phi), torch.sin(phi)
    return torch.stack([c * c / q + s * s * q, c * s * (1 / q - q), s * s / q + c * c * q], -1)


def _fourier(params: Any, psf_hat: Any, nf: int, *, jacobian: bool) -> tuple[Any, Any]:
    """Fourier transform of the unit-flux model and (optionally) of its 6 derivatives."""
    import torch

    kx, ky = _freq(nf)
    kxx, kxy, kyy = kx * kx, 2 * kx * ky, ky * ky
    p64 = params.double()
    abc = _abc(p64[:, 3], p64[:, 4])
    re2 = torch.exp(2 * params[:, 2]).view(-1, 1, 1)
    a, b, c = (t.float().view(-1, 1, 1) for t in abc.unbind(-1))
    quad = re2 * (a * kxx + b * kxy + c * kyy)                     # (N, F1, F2)
    coef = torch.as_tensor(-2 * math.pi**2 * _VARIANCES, dtype=torch.float32)
    amp, damp = _amplitudes(params[:, 5])
    arg = quad.unsqueeze(-1) * coef                                # (N, F1, F2, K)
    arg.clamp_(min=-40.0)                                          # avoid slow denormals
    ex = torch.exp(arg)
    n, f1, f2, k = ex.shape
    g = torch.bmm(ex.view(n, -1, k), amp.unsqueeze(-1)).view(n, f1, f2)
    x0 = params[:, 0].view(-1, 1, 1)
    y0 = params[:, 1].view(-1, 1, 1)
    two_pi = 2 * math.pi
    ph_x = torch.polar(torch.ones_like(kx * x0), -two_pi * kx * x0)   # (N, 1, F2)
    ph_y = torch.polar(torch.ones_like(ky * y0), -two_pi * ky * y0)   # (N, F1, 1)
    base = (ph_y * ph_x) * psf_hat
    ft = g * base
    if not jacobian:
        return ft, None
    gn = torch.bmm(ex.view(n, -1, k), damp.unsqueeze(-1)).view(n, f1, f2)   # dG/dn
    ex.mul_(arg)
    g1 = torch.bmm(ex.view(n, -1, k), amp.unsqueeze(-1)).view(n, f1, f2)   # sum a e arg
    del ex
    inv_q = 1.0 / (a * kxx + b * kxy + c * kyy).clamp(min=1e-12)
    h = 1e-5
    derivs = [ft * (-two_pi * 1j * kx), ft * (-two_pi * 1j * ky), (2 * g1) * base]
    for j in (3, 4):
        pj = p64.clone()
        pj[:, j] += h
        da, db, dc = (t.float().view(-1, 1, 1) for t in ((_abc(pj[:, 3], pj[:, 4]) - abc) / h)
                      .unbind(-1))
        ratio = (da * kxx + db * kxy + dc * kyy) * inv_q
        derivs.append((g1 * ratio) * base)
    derivs.append(gn * base)
    return ft, torch.stack(derivs, 1)


def render_sersic(params: Any, psf_hat: Any, *, size: int, nf: int) -> Any:
    """Unit-flux Sersic images (profile convolved with the effective PSF), (N, size, size).

    Parameters
    ----------
    params : Tensor (N, 6)
        ``x0, y0`` (pixels, array index of the centre), ``ln r_e`` (pixels; r_e is the
        geometric-mean half-light radius), ``g1, g2`` (ellipticity e = tanh|g|, axis
        ratio q = (1-e)/(1+e), position angle atan2(g2, g1)/2), Sersic ``n``.
    psf_hat : Tensor (N or 1, nf, nf//2+1)
        From the PSF's rfft2 on the same nf grid.
    size, nf : int
        Stamp side and FFT size (pixels).
    """

    ft, _ = _fourier(params, psf_hat, nf, jacobian=False)
    return _crop_irfft2(ft, nf, size)


def _crop_irfft2(ft: Any, nf: int, size: int) -> Any:
    """``irfft2(ft)[..., :size, :size]`` without transforming the rows that are cropped."""
    import torch

    rows = torch.fft.ifft(ft, dim=-2)[..., :size, :]
    return torch.fft.irfft(rows, n=nf, dim=-1)[..., :size]


def _render_with_jacobian(params: Any, psf_hat: Any, *, size: int, nf: int) -> tuple[Any, Any]:

    ft, dft = _fourier(params, psf_hat, nf, jacobian=True)
    m = _crop_irfft2(ft, nf, size)
    dm = _crop_irfft2(dft, nf, size)
    return m, dm


def _initial_guess(img: np.ndarray) -> np.ndarray:
    """Gaussian-weighted moments of band-summed stamps (N, H, W) -> params (N, 6)."""
    n, h, w = img.shape
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    cx = np.full(n, (w - 1) / 2, np.float32)
    cy = np.full(n, (h - 1) / 2, np.float32)
    s = np.full(n, max(2.0, h / 10), np.float32)
    pos = np.clip(img, 0, None)
    for _ in range(4):
        dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
        wgt = pos * np.exp(-(dx**2 + dy**2) / (2 * s[:, None, None] ** 2))
        tot = wgt.sum((1, 2)) + 1e-12
        cx = np.clip((wgt * xx[None]).sum((1, 2)) / tot, 1, w - 2)
        cy = np.clip((wgt * yy[None]).sum((1, 2)) / tot, 1, h - 2)
        dx, dy = xx[None] - cx[:, None, None], yy[None] - cy[:, None, None]
        mxx = (wgt * dx * dx).sum((1, 2)) / tot
        myy = (wgt * dy * dy).sum((1, 2)) / tot
        mxy = (wgt * dx * dy).sum((1, 2)) / tot
        # weighted second moments of a Gaussian of variance v under weight s^2: v s^2/(v+s^2)
        m = np.sqrt(np.clip(mxx * myy - mxy**2, 1e-6, None))
        v = np.where(m < s**2 * 0.95, m * s**2 / np.maximum(s**2 - m, 1e-3), 4 * s**2)
        s = np.clip(np.sqrt(v), 1.0, h / 3).astype(np.float32)
    e1 = (mxx - myy) / (mxx + myy + 1e-12)
    e2 = 2 * mxy / (mxx + myy + 1e-12)
    emag = np.clip(np.hypot(e1, e2), 0, 0.9)
    # moments ellipticity (a^2-b^2)/(a^2+b^2) -> axis ratio -> (1-q)/(1+q)
    qq = np.sqrt((1 - emag) / (1 + emag))
    e_red = (1 - qq) / (1 + qq)
    gmag = np.arctanh(np.clip(e_red, 0, 0.95))
    ang = np.arctan2(e2, e1)
    re = np.clip(1.1774 * s, 0.5, h / 3)
    return np.stack([cx, cy, np.log(re), gmag * np.cos(ang), gmag * np.sin(ang),
                     np.full(n, 1.5)], axis=1).astype(np.float32)


def _clip_params(p: Any, size: int) -> Any:
    import torch

    lo = torch.tensor([0.0, 0.0, math.log(0.3), -3.0, -3.0, N_MIN])
    hi = torch.tensor([size - 1.0, size - 1.0, math.log(size / 1.5), 3.0, 3.0, N_MAX])
    return torch.maximum(torch.minimum(p, hi), lo)


def _profile_flux(m: Any, d: Any, w: Any) -> tuple[Any, Any]:
    """Best non-negative flux and chi^2 for templates m, data d, weights w (N, H, W)."""
    f = ((w * d * m).sum((1, 2)) / ((w * m * m).sum((1, 2)) + 1e-20)).clamp(min=0)
    r = d - f.view(-1, 1, 1) * m
    return f, (w * r * r).sum((1, 2))


def fit_sersic(
    images: np.ndarray, weights: np.ndarray, psf: np.ndarray, *, iterations: int = 8,
    chunk: int = 256,
) -> np.ndarray:
    """Fit one Sersic profile per stamp (N, H, W) with inverse-variance ``weights``.

    ``psf`` is (P, P) or (N, P, P) (effective PSF, sums to 1). Returns (N, 7):
    ``x0, y0, ln r_e, g1, g2, n, flux`` (see :func:`render_sersic`) and
    reduced chi^2 is not included; call :func:`render_sersic` to rebuild the model.

    Parameters
    ----------
    images : ndarray, shape (N, H, W)
        Stamps in flux units.
    weights : ndarray, shape (N, H, W)
        Inverse-variance weights (0 for masked pixels).
    psf : ndarray, shape (P, P) or (N, P, P)
        Effective PSF, summing to 1.
    iterations : int, optional
        Levenberg-Marquardt iterations (default 8).
    chunk : int, optional
        Stamps fitted together (default 256).
    """
    import torch

    n, h, _ = images.shape
    nf = _fft_size(h, psf.shape[-1])
    out = np.empty((n, 7), np.float32)
    p0 = _initial_guess(images)
    for a in range(0, n, chunk):
        sl = slice(a, min(n, a + chunk))
        d = torch.from_numpy(np.ascontiguousarray(images[sl], np.float32))
        w = torch.from_numpy(np.ascontiguousarray(weights[sl], np.float32))
        ph = _psf_hat(psf[sl] if psf.ndim == 3 else psf[None], nf)
        sw = torch.sqrt(w).flatten(1)
        p = torch.from_numpy(p0[sl])
        m = render_sersic(p, ph, size=h, nf=nf)
        f, chi = _profile_flux(m, d, w)
        lam = torch.full((len(p),), 1e-2, dtype=torch.float64)
        for _ in range(iterations):
            m, dm = _render_with_jacobian(p, ph, size=h, nf=nf)
            r0 = sw * (d - f.view(-1, 1, 1) * m).flatten(1)
            dm.mul_(f.view(-1, 1, 1, 1))
            jac = torch.cat([dm.flatten(2), m.flatten(1).unsqueeze(1)], 1)
            jac.mul_(sw[:, None])                                  # (N, 7, D)
            jtj = (jac @ jac.transpose(1, 2)).double()             # (N, 7, 7)
            jtr = (jac @ r0.unsqueeze(-1)).squeeze(-1).double()
            diag = torch.diagonal(jtj, dim1=1, dim2=2)
            a_mat = jtj + torch.diag_embed(lam.unsqueeze(-1) * (diag + 1e-9))
            delta = torch.nan_to_num(torch.linalg.solve(a_mat, jtr).float())
            delta[:, :6] = delta[:, :6].clamp(-1.5, 1.5)
            pt = _clip_params(p + delta[:, :6], h)
            mt = render_sersic(pt, ph, size=h, nf=nf)
            ft, chit = _profile_flux(mt, d, w)
            better = chit < chi
            p = torch.where(better[:, None], pt, p)
            f = torch.where(better, ft, f)
            chi = torch.where(better, chit, chi)
            lam = torch.where(better, lam / 3, lam * 4).clamp(1e-6, 1e6)
        out[sl, :6] = p.numpy()
        out[sl, 6] = f.numpy()
    return out


def sersic_background_images(
    s: ImageSet, filled: np.ndarray, *, rng: np.random.Generator, iterations: int = 8,
    conditions: ObservingConditions = SURVEY_CONDITIONS, chunk: int = 512,
) -> tuple[np.ndarray, Any]:
    """Sersic re-renderings of every image of ``s`` with fresh noise.

    Parameters
    ----------
    s : ImageSet
        Needs a PSF; the variance (if present) sets the noise of the re-renderings,
        otherwise the band's robust sky sigma is used.
    filled : ndarray (N, B, H, W)
        The images with masked pixels filled (flux units).
    rng : numpy.random.Generator
        For the noise and the observing conditions.
    conditions : ObservingConditions
        How the renderings vary noise and PSF (default: the survey's own for all; the
        training default is :data:`BROAD_CONDITIONS`).
    chunk : int
        Images rendered at once.

    Returns
    -------
    images : ndarray float32 (N, B, H, W)
    fits : pandas.DataFrame
        object_id, x0, y0 (pixels), r_e_pixels, sersic_n, axis_ratio, pa_rad,
        flux_<band> (flux units), reduced_chi2, and the rendering's ``noise_scale`` and
        ``psf_scale`` (1 = the survey's).
    """
    import pandas as pd
    import torch

    from .data import pixel_variance

    if s.psf is None:
        msg = "the background model needs the image set's PSF; re-ingest with PSFs or use background='none'"
        raise DataFormatError(msg)
    n, nb, h, _ = filled.shape
    var = pixel_variance(filled, variance=s.variance, mask=s.mask)
    good = np.ones(filled.shape, np.float32) if s.mask is None else (s.mask == 0).astype(
        np.float32)
    psf = np.asarray(s.psf, np.float32)
    summed = filled.sum(1)
    w_sum = good.min(1) / var.sum(1)
    flux_b = np.clip(filled.sum((2, 3)), 0, None) + 1e-12            # (N, B)
    frac = flux_b / flux_b.sum(1, keepdims=True)
    psf_sum = np.einsum("nb,bpq->npq", frac, psf) if psf.ndim == 3 else np.einsum(
        "nb,nbpq->npq", frac, psf)
    pars = fit_sersic(summed, w_sum, psf_sum, iterations=iterations)
    noise_scale, psf_scale = conditions.draw(n, rng)
    p_in = psf.shape[-1]
    p_out = max(p_in, math.ceil(p_in * float(psf_scale.max())) | 1)
    nf = _fft_size(h, p_out)
    p = torch.from_numpy(pars[:, :6])
    out = np.empty_like(filled, dtype=np.float32)
    fluxes = np.empty((n, nb), np.float32)
    chi2 = np.zeros(n)
    changed = np.flatnonzero(psf_scale != 1.0)
    for b in range(nb):
        # flux and chi^2 against the data with the survey's PSF
        ph = _psf_hat(psf[:, b] if psf.ndim == 4 else psf[b][None], nf)
        m = render_sersic(p, ph, size=h, nf=nf)
        d = torch.from_numpy(np.ascontiguousarray(filled[:, b]))
        w = torch.from_numpy(np.ascontiguousarray(good[:, b] / var[:, b]))
        f, c = _profile_flux(m, d, w)
        fluxes[:, b] = f.numpy()
        chi2 += c.double().numpy()
        model = (f.view(-1, 1, 1) * m).numpy()
        for a in range(0, len(changed), chunk):
            sel = changed[a:a + chunk]
            stamps = np.stack([scaled_psf(psf[i, b] if psf.ndim == 4 else psf[b],
                                          float(psf_scale[i]), p_out) for i in sel])
            m_sel = render_sersic(p[sel], _psf_hat(stamps, nf), size=h, nf=nf)
            model[sel] = (f[sel].view(-1, 1, 1) * m_sel).numpy()
        noise = rng.standard_normal(model.shape).astype(np.float32) * np.sqrt(var[:, b])
        out[:, b] = model + noise * noise_scale.astype(np.float32)[:, None, None]
    _, _, re, q, phi, nn = (t.numpy() for t in _shape(p))
    dof = max(1.0, float(good.sum() / n) - 6 - nb)
    fits = pd.DataFrame({"object_id": s.object_id.astype(np.int64), "x0": pars[:, 0],
                         "y0": pars[:, 1], "r_e_pixels": re, "sersic_n": nn, "axis_ratio": q,
                         "pa_rad": phi, "reduced_chi2": chi2 / dof,
                         **{f"flux_{band}": fluxes[:, k] for k, band in enumerate(s.bands)},
                         "noise_scale": noise_scale, "psf_scale": psf_scale})
    return out, fits
