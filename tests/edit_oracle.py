"""The ideal denoiser of a Gaussian with correlation across frames, for the editing checks
(../shared/editing-spec.md section 6, rebuilt here; the project does not read ../shared).

Data x0 [B, 1, F] ~ N(0, Sigma) with Sigma_ij = rho^|i-j| (AR(1)), or its periodic version
(rho^d + rho^(F-d)) / (1 + rho^F) with d = |i-j| (circular=True). The ideal eps is closed form:
x0_hat = a Sigma (a^2 Sigma + s^2 I)^-1 x_t with a = sqrt(ab), s^2 = 1 - ab, eps = (x_t - a x0_hat) / s.
Sigma is built for whatever frame count eps_fn is called with, so windows get their own prior.
"""
from __future__ import annotations

import functools

import torch

RHO = 0.9


@functools.lru_cache(maxsize=None)
def covariance(frames: int, rho: float = RHO, circular: bool = False) -> torch.Tensor:
    d = (torch.arange(frames)[:, None] - torch.arange(frames)[None, :]).abs().double()
    if circular:
        return (rho ** d + rho ** (frames - d)) / (1 + rho ** frames)
    return rho ** d


@functools.lru_cache(maxsize=4096)
def _denoiser(frames: int, ab: float, rho: float, circular: bool) -> torch.Tensor:
    """M with x0_hat = x_t @ M.T."""
    cov = covariance(frames, rho, circular)
    a = ab ** 0.5
    return a * cov @ torch.linalg.inv(ab * cov + (1 - ab) * torch.eye(frames, dtype=torch.float64))


def eps_fn(schedule, rho: float = RHO, circular: bool = False, calls: list | None = None):
    """eps_fn(x [B, 1, F], t [B]) of the ideal denoiser (one t per batch, as samplers call it).
    calls, when given, counts the evaluations (one entry per call: the frame count)."""
    def fn(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        assert (t == t[0]).all()
        if calls is not None:
            calls.append(x.shape[-1])
        ab = float(schedule.alpha_bar_at(t[:1]).double())
        m = _denoiser(x.shape[-1], ab, rho, circular)
        xd = x.double()
        x0 = xd @ m.T
        return ((xd - ab ** 0.5 * x0) / (1 - ab) ** 0.5).float()
    return fn


def sample_prior(batch: int, frames: int, generator: torch.Generator, rho: float = RHO,
                 circular: bool = False) -> torch.Tensor:
    """x0 [B, 1, F] drawn from the prior."""
    chol = torch.linalg.cholesky(covariance(frames, rho, circular))
    z = torch.randn(batch, 1, frames, generator=generator, dtype=torch.float64)
    return (z @ chol.T).float()


def inpaint_scores(x: torch.Tensor, gap: slice, rho: float = RHO) -> dict:
    """coupling, var ratio and seam of inpainted samples x [B, 1, F] whose frames `gap` were generated.

    coupling = ||Cov(r, x_known)||_2 / ||Sigma_uk||_2 with r = x_gap - E[x_gap | x_known] (0 ideal);
    var ratio = tr Cov(r) / tr(Sigma_uu - Sigma_uk Sigma_kk^-1 Sigma_ku) (1 ideal);
    seam = E(dx)^2 at the two gap boundaries / 2(1 - rho) (1 ideal).
    """
    frames = x.shape[-1]
    cov = covariance(frames, rho)
    u = torch.zeros(frames, dtype=torch.bool)
    u[gap] = True
    k = ~u
    s_uk, s_kk, s_uu = cov[u][:, k], cov[k][:, k], cov[u][:, u]
    gain = s_uk @ torch.linalg.inv(s_kk)
    xd = x.double().squeeze(1)  # [B, F]
    r = xd[:, u] - xd[:, k] @ gain.T
    r_c, k_c = r - r.mean(0), xd[:, k] - xd[:, k].mean(0)
    cross = r_c.T @ k_c / (len(xd) - 1)
    cond = s_uu - gain @ s_uk.T
    dx2 = (xd[:, 1:] - xd[:, :-1]).pow(2).mean(0)
    seam = torch.stack([dx2[gap.start - 1], dx2[gap.stop - 1]]).mean() / (2 * (1 - rho))
    return {"coupling": float(torch.linalg.matrix_norm(cross, 2) / torch.linalg.matrix_norm(s_uk, 2)),
            "var_ratio": float(r_c.pow(2).sum(0).div(len(xd) - 1).sum() / cond.trace()),
            "seam": float(seam)}


def step_profile(x: torch.Tensor, wrap: bool = False) -> torch.Tensor:
    """E(dx)^2 at every frame step of x [B, 1, F] (with the wrap step last when wrap=True)."""
    xd = x.double().squeeze(1)
    if wrap:
        xd = torch.cat([xd, xd[:, :1]], 1)
    return (xd[:, 1:] - xd[:, :-1]).pow(2).mean(0)
