"""Initial and target laws of a control problem: samples, a log-density, a Gaussian or a Gaussian mixture."""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Optional, Union

import torch
from torch import Tensor
from torch.distributions import Categorical, MixtureSameFamily, MultivariateNormal

from .._random import draw_seed, seeded

__all__ = ["Law", "Gaussian", "GaussianMixture", "Samples", "LogDensity", "as_law", "fit_gaussian_mixture"]


def _matrix(cov: Any, dim: int, name: str) -> Tensor:
    """A covariance given as a scalar (``c I``), a vector (diagonal) or a ``(D, D)`` matrix → ``(D, D)``."""
    c = torch.as_tensor(cov, dtype=torch.float64)
    if c.dim() == 0:
        c = c * torch.eye(dim, dtype=torch.float64)
    elif c.dim() == 1:
        if c.shape[0] != dim:
            raise ValueError(f"{name}: a diagonal covariance needs {dim} entries; got {c.shape[0]}")
        c = torch.diag(c)
    elif c.shape != (dim, dim):
        raise ValueError(f"{name}: covariance must be a scalar, ({dim},) or ({dim}, {dim}); got {tuple(c.shape)}")
    if not bool(torch.isfinite(c).all()) or not torch.allclose(c, c.T):
        raise ValueError(f"{name}: covariance must be finite and symmetric")
    if float(torch.linalg.eigvalsh(c).min()) <= 0:
        raise ValueError(f"{name}: covariance must be positive definite")
    return c


class Law:
    """A probability law on ``R^D`` as used by :class:`ControlProblem` for ``initial`` and ``target``."""

    dim: int
    can_sample: bool = True
    has_log_prob: bool = True

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        """``(n, D)`` float64 samples."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """``x: (N, D) -> (N,)``."""
        raise NotImplementedError


class _Torch(Law):
    dist: torch.distributions.Distribution

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        with seeded(draw_seed(generator)):
            return self.dist.sample((n,))

    def log_prob(self, x: Tensor) -> Tensor:
        return self.dist.log_prob(x.to(torch.float64)).to(x.dtype)


class Gaussian(_Torch):
    """``N(mean, cov)``; ``cov`` a scalar (``c I``), a diagonal vector or a full ``(D, D)`` covariance *matrix*."""

    def __init__(self, mean: Sequence[float], cov: Any = 1.0) -> None:
        self.mean = torch.as_tensor(mean, dtype=torch.float64).reshape(-1)
        self.dim = self.mean.shape[0]
        self.cov = _matrix(cov, self.dim, "Gaussian")
        self.dist = MultivariateNormal(self.mean, self.cov)

    @property
    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        """Weights ``(1,)``, means ``(1, D)``, covariances ``(1, D, D)``."""
        return torch.ones(1, dtype=torch.float64), self.mean[None], self.cov[None]

    def __repr__(self) -> str:
        return f"Gaussian(mean={self.mean.tolist()}, cov=diag{torch.diagonal(self.cov).tolist()})"


class GaussianMixture(_Torch):
    """``sum_k w_k N(mean_k, cov_k)``; ``means: (K, D)``; ``covs`` one covariance spec shared or a list of K."""

    def __init__(self, means: Any, covs: Any = 1.0, weights: Optional[Sequence[float]] = None) -> None:
        m = torch.as_tensor(means, dtype=torch.float64)
        if m.dim() != 2:
            raise ValueError(f"GaussianMixture: means must be (K, D); got shape {tuple(m.shape)}")
        K, D = m.shape
        self.dim = D
        if isinstance(covs, (list, tuple)) and len(covs) == K and K > 1:
            C = torch.stack([_matrix(c, D, f"GaussianMixture component {k}") for k, c in enumerate(covs)])
        else:
            C = _matrix(covs, D, "GaussianMixture").expand(K, D, D).clone()
        w = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if w.shape != (K,) or bool((w <= 0).any()):
            raise ValueError(f"GaussianMixture: weights must be {K} positive numbers; got {w.tolist()}")
        self.weights, self.means, self.covs = w / w.sum(), m, C
        self.dist = MixtureSameFamily(Categorical(probs=self.weights), MultivariateNormal(m, C))

    @property
    def components(self) -> tuple[Tensor, Tensor, Tensor]:
        return self.weights, self.means, self.covs

    def __repr__(self) -> str:
        return f"GaussianMixture(K={self.means.shape[0]}, dim={self.dim})"


class Samples(Law):
    """An empirical law: ``x: (N, D)``; ``sample`` draws rows with replacement. No log-density."""

    has_log_prob = False

    def __init__(self, x: Any) -> None:
        x = torch.as_tensor(x, dtype=torch.float64)
        if x.dim() != 2 or x.shape[0] < 1:
            raise ValueError(f"Samples: need an (N, D) array with N >= 1; got shape {tuple(x.shape)}")
        if not bool(torch.isfinite(x).all()):
            raise ValueError("Samples: contains NaN or inf")
        self.x, self.dim = x, x.shape[1]

    def sample(self, n: int, generator: Optional[torch.Generator] = None) -> Tensor:
        return self.x[torch.randint(self.x.shape[0], (n,), generator=generator)]

    def __repr__(self) -> str:
        return f"Samples(n={self.x.shape[0]}, dim={self.dim})"


class LogDensity(Law):
    """A (possibly unnormalised) log-density ``fn: (N, D) -> (N,)``; it cannot be sampled, so it enters
    the objective as ``KL(rho || q) = E_rho[log rho - log q]`` (exact samples of the model)."""

    can_sample = False

    def __init__(self, fn: Callable[[Tensor], Tensor], dim: int) -> None:
        if not callable(fn):
            raise TypeError(f"LogDensity: fn must be callable; got {type(fn).__name__}")
        self.fn, self.dim = fn, int(dim)
        out = fn(torch.zeros(2, self.dim, dtype=torch.float64))
        if not isinstance(out, Tensor) or out.shape != (2,):
            raise ValueError(f"LogDensity: fn must map (N, {self.dim}) to (N,); got {getattr(out, 'shape', type(out))} for N=2")

    def log_prob(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def __repr__(self) -> str:
        return f"LogDensity(dim={self.dim})"


LawLike = Union[Law, Tensor, Callable[[Tensor], Tensor]]


def as_law(spec: Any, dim: int, name: str) -> Law:
    """Turn ``initial=``/``target=`` into a :class:`Law` of dimension ``dim`` (precise errors name ``name``)."""
    if isinstance(spec, Law):
        law = spec
    elif isinstance(spec, Tensor) or (hasattr(spec, "shape") and hasattr(spec, "dtype")):
        law = Samples(spec)
    elif callable(spec):
        try:
            law = LogDensity(spec, dim)
        except (ValueError, RuntimeError) as e:
            raise ValueError(f"{name}: {e}") from None
    else:
        raise TypeError(f"{name} must be samples (N, D), a log-density callable, Gaussian or GaussianMixture; got {type(spec).__name__}")
    if law.dim != dim:
        raise ValueError(f"{name} has dimension {law.dim} but the problem has dim={dim}")
    return law


def fit_gaussian_mixture(x: Any, components: int = 1, *, iterations: int = 200, seed: int = 0,
                         min_variance: float = 1e-6) -> GaussianMixture:
    """A diagonal :class:`GaussianMixture` fitted to samples ``x: (N, D)`` by EM (k-means++-style start), so a law
    given by samples can be pinned exactly by a bridge: the bridge then pins *this fitted density*, not the
    empirical law. ``components = 1`` is the moment match."""
    x = Samples(x).x
    N, D = x.shape
    if isinstance(components, bool) or not isinstance(components, int) or not 1 <= components <= N:
        raise ValueError(f"components must be an int in [1, {N}] (the number of samples); got {components!r}")
    g = torch.Generator().manual_seed(seed)
    centers = [x[torch.randint(N, (1,), generator=g)][0]]
    for _ in range(components - 1):  # k-means++ seeding
        d2 = torch.cdist(x, torch.stack(centers)).pow(2).min(-1).values
        prob = d2 if float(d2.sum()) > 0 else torch.ones_like(d2)
        centers.append(x[torch.multinomial(prob, 1, generator=g)][0])
    mu = torch.stack(centers)
    var = x.var(0, unbiased=False).clamp_min(min_variance).expand(components, D).clone()
    logw = torch.full((components,), -torch.log(torch.tensor(float(components))).item(), dtype=torch.float64)
    for _ in range(iterations):
        logp = -0.5 * (((x[:, None] - mu) ** 2 / var) + var.log() + torch.log(torch.tensor(2 * torch.pi))).sum(-1) + logw
        r = torch.softmax(logp, -1)  # (N, K)
        nk = r.sum(0).clamp_min(1e-12)
        new_mu = (r.T @ x) / nk[:, None]
        var = ((r.T @ x.pow(2)) / nk[:, None] - new_mu.pow(2)).clamp_min(min_variance)
        logw = (nk / N).log()
        if float((new_mu - mu).abs().max()) < 1e-10:
            mu = new_mu
            break
        mu = new_mu
    return GaussianMixture(mu, [v.tolist() for v in var] if components > 1 else var[0].tolist(), weights=logw.exp().tolist())
