"""Integrate the dynamics of a model — for evaluation and plots, never inside training."""
from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Optional, Union

import torch
from torch import Tensor

from ._validation import check_context, check_count, check_dtype, check_points, check_time_bound
from .densities.base import TimeDensity
from .dynamics import Dynamics

__all__ = ["simulate", "euler_maruyama", "SDE_METHODS", "ODE_METHODS", "KERNEL_METHODS"]

SDE_METHODS = ("euler_maruyama",)
ODE_METHODS = ("euler", "midpoint", "rk4", "dopri5", "dopri8", "bosh3", "adaptive_heun")
KERNEL_METHODS = ("kernel_flow", "kernel_paths")
"""Methods for an :class:`~probflux.densities.anchored.AnchoredMixture` that step along its kernels
(:meth:`~probflux.densities.anchored.AnchoredMixture.kernel_flow`: the ODE by steps exact for every kernel, or
kernel-path steps that map ``rho_t`` to ``rho_t'`` exactly in law)."""


def euler_maruyama(
    x0: Tensor,
    drift: Callable[[Tensor, Tensor], Tensor],
    diffusion: Callable[[Tensor], Tensor],
    t: Tensor,
    dt: Tensor,
    *,
    generator: Optional[torch.Generator] = None,
    observe: Optional[Callable[[Tensor, Tensor, Tensor, Tensor], None]] = None,
) -> Iterator[Tensor]:
    r"""Euler–Maruyama steps ``x_{k+1} = x_k + b(t_k, x_k) dt_k + g(t_k) sqrt|dt_k| xi_k``, ``xi_k ~ N(0, I)``.

    The package's one SDE integrator: :func:`simulate` steps through it, and so do the control
    evaluation and the simulation-based baseline (:mod:`probflux.control`). Gradients flow through it
    when the caller enables them.

    Args:
        x0: ``(N, D)`` start.
        drift: ``b(t, x)``: ``(N,), (N, D) -> (N, D)``, the drift applied at each step.
        diffusion: ``g(t)``: ``(N,) -> (N,)``.
        t: ``(K,)`` times of the ``K`` steps (left points).
        dt: ``(K,)`` their signed lengths; the noise scale is ``sqrt|dt|`` (``dt < 0`` runs backward).
        generator: ``torch.Generator`` for the increments ``xi_k``.
        observe: ``observe(t_k, x_k, b_k, dt_k)`` (``(N,), (N, D), (N, D), ()``), called at every step after the
            drift and before the increment is drawn (running costs; it may draw from ``generator`` too).

    Yields:
        ``x_{k+1}``: ``(N, D)`` after each step.
    """
    x = x0
    n = x0.shape[0]
    for k in range(t.shape[0]):
        tk, dtk = t[k].expand(n), dt[k]
        b = drift(tk, x)
        if observe is not None:
            observe(tk, x, b, dtk)
        g = diffusion(tk).unsqueeze(-1)
        noise = torch.randn(x.shape, dtype=x.dtype, device=x.device, generator=generator)
        x = x + b * dtk + g * dtk.abs().sqrt() * noise
        yield x


@torch.no_grad()
def simulate(
    dynamics: Union[Dynamics, TimeDensity],
    x0: Tensor,
    t0: float = 0.0,
    t1: float = 1.0,
    steps: int = 100,
    method: str = "euler_maruyama",
    context: Optional[Tensor] = None,
    *,
    rtol: float = 1e-5,
    atol: float = 1e-5,
    generator: Optional[torch.Generator] = None,
) -> Tensor:
    r"""Simulate ``dX = b_t(X) dt + g_t dW`` (or the probability-flow ODE ``dX = u_t(X) dt``) from ``x0``.

    Args:
        dynamics: a :class:`Dynamics` (a bare :class:`TimeDensity` means ``g = 0``).
        x0: ``(N, D)`` initial points, normally ``density.sample(t0, N)``.
        t0, t1: start and end in ``[0, 1]``; ``t1 < t0`` runs backward in time (the SDE then uses the
            time-reversed drift ``u - (g^2/2) grad log rho``, whose marginals are again ``rho_t``).
        steps: number of steps; the path is returned on ``steps + 1`` equally spaced times.
        method: ``"euler_maruyama"`` for the SDE (with ``g = 0`` it is Euler on the ODE), or an ODE
            method of ``torchdiffeq`` (``"euler"``, ``"rk4"``, ``"dopri5"``, ...) on the probability-flow
            ODE; adaptive methods use ``rtol``/``atol``. For an ``AnchoredMixture`` (and no diffusion or
            divergence-free term): ``"kernel_flow"`` (the probability-flow ODE by steps exact for every kernel, stable
            where Euler overshoots a stiff bandwidth rate) or ``"kernel_paths"`` (each step follows a kernel drawn by
            responsibility; exact in law for any step count), see :data:`KERNEL_METHODS`.
        context: optional conditioning, ``(N, C)`` or ``(C,)``.
        generator: ``torch.Generator`` for the Brownian increments.

    Returns:
        ``(steps + 1, N, D)`` path, detached.

    >>> import torch, probflux as pf
    >>> rho = pf.FactorizedMixture(2, 3, hidden=8).double()
    >>> path = pf.simulate(pf.Dynamics(rho, diffusion=0.5), rho.sample(0.0, 4), steps=10,
    ...                    generator=torch.Generator().manual_seed(0))
    >>> tuple(path.shape)
    (11, 4, 2)
    """
    if isinstance(dynamics, TimeDensity):
        dynamics = Dynamics(dynamics)
    if not isinstance(dynamics, Dynamics):
        raise TypeError(f"dynamics must be a probflux.Dynamics or TimeDensity; got {type(dynamics).__name__}")
    density = dynamics.density
    check_points(x0, dynamics.dim, "x0")
    check_dtype(x0, density.dtype, "x0")
    steps = check_count(steps, "steps")
    t0, t1 = check_time_bound(t0, "t0"), check_time_bound(t1, "t1")
    if method not in SDE_METHODS + ODE_METHODS + KERNEL_METHODS:
        raise ValueError(f"method must be one of {SDE_METHODS + ODE_METHODS + KERNEL_METHODS}; got {method!r}")
    ctx = check_context(context, dynamics.context_dim, x0.shape[0], x0.dtype)
    if method in KERNEL_METHODS:
        from .densities.anchored import AnchoredMixture

        if not isinstance(density, AnchoredMixture):
            raise ValueError(f"method={method!r} needs an AnchoredMixture density; got {type(density).__name__}")
        g = dynamics.diffusion(torch.tensor([float(t0), float(t1)], dtype=x0.dtype, device=x0.device))
        if dynamics.divergence_free is not None or bool((g != 0).any()):
            raise ValueError(f"method={method!r} moves along the density's kernels only; the dynamics has "
                             "a diffusion or divergence-free term (use 'euler_maruyama' or an ODE method)")
        return density.kernel_flow(x0, t0, t1, steps, stochastic=method == "kernel_paths", context=ctx, generator=generator)
    ts = torch.linspace(float(t0), float(t1), steps + 1, dtype=x0.dtype, device=x0.device)
    N = x0.shape[0]

    if method == "euler_maruyama":
        sign = -1.0 if t1 < t0 else 1.0

        def drift(t: Tensor, x: Tensor) -> Tensor:
            with torch.enable_grad():
                return dynamics._drift(t, x, ctx, sign=sign).detach()

        return torch.stack([x0, *euler_maruyama(x0, drift, dynamics.diffusion, ts[:-1], ts.diff(), generator=generator)])

    import torchdiffeq

    def field(t: Tensor, y: Tensor) -> Tensor:
        tv = t.to(y.dtype).clamp(0.0, 1.0).expand(N)
        with torch.enable_grad():
            return dynamics._velocity(tv, y, ctx).detach()

    options = {} if method in ("dopri5", "dopri8", "bosh3", "adaptive_heun") else None
    return torchdiffeq.odeint(field, x0, ts, method=method, rtol=rtol, atol=atol, options=options)
