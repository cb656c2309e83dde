"""The Universal Scalability Law: X(N) = γN / (1 + α(N−1) + βN(N−1)), fitted with scipy.

α is contention (the serial fraction: Amdahl's law when β = 0), β is coherency (the cost of keeping
workers in step, which makes throughput fall past a peak), γ is the throughput of one worker.
Bounded least squares keeps α, β ≥ 0; α above 1 is fitted, then marked invalid (`invalid_reason`).
Standard errors come from the fit's covariance, and the prediction band from the delta method
(gradient of X(N) with respect to the parameters).
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike
from scipy import optimize, stats


def usl(n: ArrayLike, alpha: float, beta: float, gamma: float) -> np.ndarray:
    n = np.asarray(n, dtype=float)
    return gamma * n / (1 + alpha * (n - 1) + beta * n * (n - 1))


def _amdahl(n: np.ndarray, alpha: float, gamma: float) -> np.ndarray:
    return usl(n, alpha, 0.0, gamma)


_TOLERANCE = 1e-6  # a fit through flat points lands on α = 1 only to rounding


@dataclass(frozen=True)
class USLFit:
    alpha: float
    beta: float
    gamma: float
    alpha_se: float
    beta_se: float
    gamma_se: float
    covariance: np.ndarray  # 3 x 3 over (alpha, beta, gamma); zeros for a fixed parameter
    model: str  # "usl", or "amdahl" when too few points to fit beta
    points: int
    dof: int  # residual degrees of freedom: 0 means an exact fit, no uncertainty

    @property
    def peak_workers(self) -> float:
        """N* = sqrt((1 − α) / β): where throughput peaks (infinite when β = 0; 1 when α ≥ 1, i.e.
        adding workers only ever slowed the run down)."""
        if self.alpha >= 1:
            return 1.0
        if self.beta <= 0:
            return math.inf
        return max(1.0, math.sqrt((1 - self.alpha) / self.beta))

    @property
    def invalid_reason(self) -> str:
        """Why the fitted parameters are outside the law's meaning (empty when they are inside it).

        Checked after fitting rather than bounded in the fit: a fit pushed against α ≤ 1 would
        sit at α = 1 and still not describe points where adding workers made the run slower.
        """
        name = "serial fraction" if self.model == "amdahl" else "contention"
        law = "Amdahl's law" if self.model == "amdahl" else "the USL"
        if self.alpha > 1 + _TOLERANCE:
            return (
                f"{name} α = {self.alpha:.2f} is above 1 (adding workers made it slower), which {law} cannot "
                "describe: α is a share of the work, 0 to 1"
            )
        if self.beta < -_TOLERANCE:
            return f"coherency β = {self.beta:.2e} is negative"
        if self.gamma <= 0:
            return f"one-worker throughput γ = {self.gamma:.3g} is not positive"
        return ""

    @property
    def valid(self) -> bool:
        return not self.invalid_reason

    def predict(self, n: float | np.ndarray) -> np.ndarray:
        return usl(np.asarray(n, dtype=float), self.alpha, self.beta, self.gamma)

    def interval(self, n: ArrayLike, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
        """A confidence band for X(N) (delta method, t quantile); NaN when the fit is exact."""
        n = np.atleast_1d(np.asarray(n, dtype=float))
        x = self.predict(n)
        if self.dof <= 0:
            nan = np.full_like(x, np.nan)
            return nan, nan
        d = 1 + self.alpha * (n - 1) + self.beta * n * (n - 1)
        grad = np.stack([-self.gamma * n * (n - 1) / d**2, -self.gamma * n * n * (n - 1) / d**2, n / d], axis=1)
        se = np.sqrt(np.einsum("ij,jk,ik->i", grad, self.covariance, grad))
        t = stats.t.ppf(0.5 + level / 2, self.dof)
        return x - t * se, x + t * se


def fit_usl(workers: np.ndarray | list[float], throughput: np.ndarray | list[float]) -> USLFit:
    """Fit the USL to measured (workers, throughput) points.

    Needs at least two distinct worker counts; with exactly two, β cannot be told apart from α and
    Amdahl's law (β = 0) is fitted instead, exactly.
    """
    n = np.asarray(workers, dtype=float)
    x = np.asarray(throughput, dtype=float)
    keep = np.isfinite(n) & np.isfinite(x) & (n > 0) & (x > 0)
    n, x = n[keep], x[keep]
    if len(np.unique(n)) < 2:
        raise ValueError("fitting a scaling law needs throughput at two or more worker counts")
    gamma0 = float(np.mean(x[n == n.min()]) / n.min())
    with warnings.catch_warnings():
        # An exact fit has no covariance: handled below (dof = 0, no band), not worth a warning.
        warnings.simplefilter("ignore", optimize.OptimizeWarning)
        return _fit(n, x, gamma0)


def _fit(n: np.ndarray, x: np.ndarray, gamma0: float) -> USLFit:
    if len(np.unique(n)) < 3:
        (alpha, gamma), cov2 = optimize.curve_fit(_amdahl, n, x, p0=[0.05, gamma0], bounds=([0, 0], [np.inf, np.inf]))
        cov = np.zeros((3, 3))
        dof = len(n) - 2
        if dof > 0 and np.all(np.isfinite(cov2)):
            cov[np.ix_([0, 2], [0, 2])] = cov2
        beta, model = 0.0, "amdahl"
    else:
        (alpha, beta, gamma), cov = optimize.curve_fit(
            usl, n, x, p0=[0.05, 0.001, gamma0], bounds=([0, 0, 0], [np.inf, np.inf, np.inf]), maxfev=20000
        )
        dof = len(n) - 3
        model = "usl"
        if dof <= 0 or not np.all(np.isfinite(cov)):
            cov = np.zeros((3, 3))
    se = np.sqrt(np.clip(np.diag(cov), 0, None))
    return USLFit(
        alpha=float(alpha),
        beta=float(beta),
        gamma=float(gamma),
        alpha_se=float(se[0]),
        beta_se=float(se[1]),
        gamma_se=float(se[2]),
        covariance=cov,
        model=model,
        points=len(n),
        dof=max(dof, 0),
    )
