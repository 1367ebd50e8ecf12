"""OT-CFM, I-CFM and SF2M baselines from TorchCFM, behind a fit / transport API for snapshot benchmarks.

Install (no dependencies: TorchCFM's own requirements would pull a CUDA torch and torchdyn; its flow
matchers need only torch, numpy, scipy and POT, all already dependencies of probflux)::

    pip install --no-deps torchcfm        # tested with torchcfm 1.0.7

Recipe
------
This follows TorchCFM's multi-snapshot recipe (the single-cell notebook
``examples/single_cell/single-cell_example.ipynb`` and the paper runner ``runner/``), line references
being to ``torchcfm`` 1.0.7 as installed:

* **Networks.** ``torchcfm.models.MLP(dim, w=width, time_varying=True)`` (``models/models.py`` l. 4-21):
  input ``[x, t]``, three hidden layers of ``width`` (default 64) with SELU, linear output — the
  runner's ``VelocityNet hidden_dims: [64, 64, 64], activation: selu`` (``runner/configs/model/otcfm.yaml``).
  SF2M has a second, identical network for the score.
* **Optimiser.** ``AdamW(lr=1e-3, weight_decay=1e-5)`` over all parameters, the runner's setting
  (``runner/configs/model/{cfm,otcfm,sbcfm}.yaml``); ``weight_decay=0`` gives plain Adam.
* **Flow matchers.** ``"otcfm"``: ``ExactOptimalTransportConditionalFlowMatcher(sigma)``
  (``conditional_flow_matching.py`` l. 219-268; an exact EMD plan per minibatch, ``pot.emd`` with squared
  Euclidean cost, ``optimal_transport.py`` l. 48-49, 84), ``sigma = 0.1`` = the runner's ``sigma_min``.
  ``"icfm"``: ``ConditionalFlowMatcher(sigma)`` (l. 41-198, independent coupling). ``"sf2m"``:
  ``SchrodingerBridgeConditionalFlowMatcher(sigma, ot_method="exact")`` (l. 391-503: Brownian-bridge path
  ``N(t x1 + (1-t) x0, sigma^2 t(1-t))``, exact-OT minibatch coupling, the default the class recommends),
  ``sigma = 0.1`` = the default of the runner's ``SF2MLitModule(sigma_min=0.1)``
  (``runner/src/models/cfm_module.py``).
* **Batches over many snapshots.** Every step draws ``batch_size`` cells with replacement from *each*
  consecutive pair ``(k, k+1)``, couples them with the matcher, and concatenates all pairs into one batch,
  the network seeing time ``t + t_start`` (the notebook's ``get_batch``). Here ``t_start`` is the
  snapshot's own time: times are rescaled so that the smallest gap is one unit, and a pair ``Delta``
  units apart is seen at ``tau = tau_k + s * Delta`` with the velocity target ``u_s / Delta``. For evenly
  spaced snapshots this is exactly the notebook; when a snapshot is left out, the doubled gap is handled
  as the runner does (``CFMLitModule.calc_loc_and_target``: ``ut /= 2`` and ``t *= 2`` on the pair that
  straddles the left-out time).
* **Losses.** ``mean |v(tau, x_s) - u_s / Delta|^2``; SF2M adds the score loss of the notebook and of
  ``SF2MLitModule.step`` (score weight 1): ``mean |lambda_s * Delta * s(tau, x_s) + eps|^2`` with
  ``lambda_s = compute_lambda(s) = 2 sigma_s / sigma_pair^2`` (l. 200-216) and ``eps`` the path noise
  (``return_noise=True``). The score network thus learns ``(g^2/2) grad log p_t`` for the SDE
  ``dX = [v + s] dtau + g dW`` with constant diffusion ``g = sigma`` per time unit; a pair ``Delta`` units
  apart uses the bridge noise ``sigma_pair = sigma * sqrt(Delta)`` of that same SDE (the runner keeps
  ``sigma`` unchanged on the doubled gap; for evenly spaced snapshots the two agree).
* **Integration.** ODE: ``torchdiffeq.odeint`` with ``dopri5`` and ``atol = rtol = 1e-4`` (TorchCFM's
  examples build ``NeuralODE(torch_wrapper(model), solver="dopri5", atol=1e-4, rtol=1e-4)``; torchdyn is
  not used). SDE (SF2M): ``torchsde.sdeint`` with ``method="euler"`` (Euler–Maruyama), drift ``v + s``,
  diagonal diffusion ``sigma`` (``runner/src/models/components/solver.py``: ``forward_sde_drift = vt + st``,
  ``g = sigma``, ``sde_solver="euler"``, ``dt=0.01``); ``dt = (tau_1 - tau_0) / steps``, so the default
  ``steps=100`` over one snapshot gap is the runner's ``dt = 0.01``.

Randomness: ``torchcfm`` draws its couplings with numpy's global generator and its times and noise
with torch's; :meth:`CFMPeer.fit` seeds both from ``seed`` inside a sandbox and restores the caller's
generator states afterwards, so fits are reproducible and leave global state untouched (on the CPU;
CUDA kernels may add non-determinism).
"""
from __future__ import annotations

import contextlib
import math
import numbers
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Optional

import numpy as np
import torch
from torch import Tensor

try:
    from torchcfm.conditional_flow_matching import (
        ConditionalFlowMatcher,
        ExactOptimalTransportConditionalFlowMatcher,
        SchrodingerBridgeConditionalFlowMatcher,
    )
    from torchcfm.models import MLP
except ImportError as exc:  # pragma: no cover - exercised only without torchcfm
    raise ImportError(
        "benchmarks.peers.torchcfm_peer needs torchcfm: pip install --no-deps torchcfm"
    ) from exc

__all__ = ["CFMPeer", "METHODS"]

METHODS = ("otcfm", "sf2m", "icfm")
DEFAULT_SIGMA = {"otcfm": 0.1, "icfm": 0.1, "sf2m": 0.1}
ODE_METHOD = "dopri5"
ODE_ATOL = 1e-4
ODE_RTOL = 1e-4


@contextlib.contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's and numpy's global generators for the block, then restore the caller's states."""
    devices = [device] if device.type == "cuda" else []
    np_state = np.random.get_state()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        np.random.seed(seed % 2**32)
        try:
            yield
        finally:
            np.random.set_state(np_state)


def _real(v: Any, name: str) -> float:
    if isinstance(v, Tensor) and v.numel() == 1:
        v = v.item()
    if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(float(v)):
        raise ValueError(f"{name} must be a finite real number; got {v!r}")
    return float(v)


class _SDE(torch.nn.Module):
    """``dX = [v(tau, X) + s(tau, X)] dtau + sigma dW`` in torchsde's calling convention."""

    noise_type = "diagonal"
    sde_type = "ito"

    def __init__(self, flow: torch.nn.Module, score: torch.nn.Module, sigma: float):
        super().__init__()
        self.flow, self.score, self.sigma = flow, score, sigma

    def f(self, t: Tensor, y: Tensor) -> Tensor:
        z = torch.cat([y, t.reshape(1, 1).expand(y.shape[0], 1).to(y)], dim=1)
        return self.flow(z) + self.score(z)

    def g(self, t: Tensor, y: Tensor) -> Tensor:
        return torch.full_like(y, self.sigma)


class CFMPeer:
    """A TorchCFM baseline fitted to population snapshots and used to push cells between times.

    Args:
        method: ``"otcfm"`` (exact minibatch-OT CFM), ``"icfm"`` (independent-coupling CFM) or ``"sf2m"``
            (simulation-free score and flow matching: a flow and a score network, sampled as an SDE).
        dim: dimension ``D`` of the cells.
        sigma: the matcher's noise level (path width for OT-/I-CFM; diffusion per time unit for SF2M);
            default 0.1 for every method (the runner's ``sigma_min``).
        width: hidden width of the MLP(s) (three hidden layers, SELU).
        lr: AdamW learning rate. weight_decay: AdamW weight decay (1e-5 as the runner; 0 = Adam).
        batch_size: cells drawn from *each* consecutive snapshot pair per step (so a step sees
            ``batch_size * (K - 1)`` pairs for ``K`` snapshots).
        seed: seeds the network initialisation, the minibatches and the couplings.
        device: torch device for training and transport.
    """

    def __init__(
        self,
        method: str,
        dim: int,
        *,
        sigma: Optional[float] = None,
        width: int = 64,
        lr: float = 1e-3,
        weight_decay: float = 1e-5,
        batch_size: int = 256,
        seed: int = 0,
        device: Any = "cpu",
    ) -> None:
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        for name, v in (("dim", dim), ("width", width), ("batch_size", batch_size)):
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise ValueError(f"{name} must be a positive integer; got {v!r}")
        if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer; got {seed!r}")
        sigma = DEFAULT_SIGMA[method] if sigma is None else _real(sigma, "sigma")
        if sigma < 0 or (method == "sf2m" and sigma == 0):
            raise ValueError(f"sigma must be {'> 0' if method == 'sf2m' else '>= 0'} for {method}; got {sigma!r}")
        lr = _real(lr, "lr")
        weight_decay = _real(weight_decay, "weight_decay")
        if lr <= 0 or weight_decay < 0:
            raise ValueError(f"lr must be > 0 and weight_decay >= 0; got lr={lr!r}, weight_decay={weight_decay!r}")
        self.method = method
        self.dim = int(dim)
        self.sigma = float(sigma)
        self.width = int(width)
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.device = torch.device(device)
        self.flow: Optional[torch.nn.Module] = None
        self.score: Optional[torch.nn.Module] = None
        self._t_first = 0.0
        self._unit = 1.0

    # ----------------------------------------------------------------------------------------- helpers
    def _tau(self, t: float) -> float:
        """Caller's time -> internal time (snapshot 0 at 0, smallest training gap = 1)."""
        return (t - self._t_first) / self._unit

    def _matcher(self, delta: float):
        if self.method == "otcfm":
            return ExactOptimalTransportConditionalFlowMatcher(sigma=self.sigma)
        if self.method == "icfm":
            return ConditionalFlowMatcher(sigma=self.sigma)
        return SchrodingerBridgeConditionalFlowMatcher(sigma=self.sigma * math.sqrt(delta), ot_method="exact")

    def _check_cells(self, x: Any, name: str) -> Tensor:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, Tensor):
            raise TypeError(f"{name} must be a torch.Tensor or numpy array of shape (n, {self.dim}); got {type(x).__name__}")
        if not x.is_floating_point():
            raise TypeError(f"{name} must have a floating dtype; got {x.dtype}")
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise ValueError(f"{name} must have shape (n, {self.dim}); got {tuple(x.shape)}")
        if x.shape[0] == 0:
            raise ValueError(f"{name} is empty")
        bad = ~torch.isfinite(x)
        if bool(bad.any()):
            row = int(torch.nonzero(bad.any(dim=1))[0, 0])
            raise ValueError(f"{name} contains NaN or inf (first at row {row})")
        return x

    # --------------------------------------------------------------------------------------------- fit
    def fit(
        self,
        times: Sequence[float],
        samples: Sequence[Tensor],
        *,
        steps: Optional[int] = None,
        wall_seconds: Optional[float] = None,
        clock: Callable[[], float] = time.perf_counter,
    ) -> dict:
        """Train from scratch on consecutive snapshot pairs.

        Args:
            times: ``K >= 2`` strictly increasing snapshot times, in the caller's units.
            samples: ``K`` tensors (or arrays) of shape ``(n_k, D)``; sizes may differ. For leave-one-out,
                simply omit the held-out snapshot: its neighbours become one (longer) pair.
            steps: stop after this many optimiser steps.
            wall_seconds: stop once this many seconds of ``clock`` have passed (checked before every step, so
                the overrun is at most one step). At least one of ``steps`` / ``wall_seconds`` is required;
                with both, whichever comes first.
            clock: the clock of ``wall_seconds`` and of the returned ``wall_seconds`` (default: wall time,
                ``time.perf_counter``). ``time.process_time`` budgets this process's CPU time instead, as
                ``probflux.train.fit(clock=...)`` does, so a peer and a probflux model given the same budget on a
                shared machine get the same CPU time. The budget counts the optimiser steps only (batch
                drawing, coupling, forward, backward, update); there are no validation passes.

        Returns:
            ``{"steps": int, "wall_seconds": float, "loss": float}`` — seconds of ``clock`` spent in the
            training loop and the last step's loss (flow loss, plus the score loss for SF2M).
        """
        if steps is None and wall_seconds is None:
            raise ValueError("give steps, wall_seconds or both")
        if not callable(clock):
            raise TypeError(f"clock must be a callable returning seconds (e.g. time.process_time); got {clock!r}")
        if steps is not None and (isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0):
            raise ValueError(f"steps must be a non-negative integer; got {steps!r}")
        if wall_seconds is not None:
            wall_seconds = _real(wall_seconds, "wall_seconds")
            if wall_seconds < 0:
                raise ValueError(f"wall_seconds must be >= 0; got {wall_seconds!r}")
        ts = [_real(t, f"times[{i}]") for i, t in enumerate(times)]
        if len(ts) < 2:
            raise ValueError(f"times must hold at least 2 snapshot times; got {len(ts)}")
        if len(samples) != len(ts):
            raise ValueError(f"samples must hold one tensor per time: {len(ts)} times but {len(samples)} samples")
        gaps = np.diff(ts)
        if not (gaps > 0).all():
            k = int(np.nonzero(gaps <= 0)[0][0])
            raise ValueError(f"times must be strictly increasing; times[{k}] = {ts[k]} >= times[{k + 1}] = {ts[k + 1]}")
        xs = [self._check_cells(x, f"samples[{k}]").detach().to(self.device, torch.float32) for k, x in enumerate(samples)]

        self._t_first, self._unit = ts[0], float(gaps.min())
        taus = [self._tau(t) for t in ts]
        deltas = [taus[k + 1] - taus[k] for k in range(len(ts) - 1)]
        matchers = [self._matcher(d) for d in deltas]
        bs = self.batch_size

        with _seeded(self.seed, self.device):
            self.flow = MLP(dim=self.dim, w=self.width, time_varying=True).to(self.device)
            params = list(self.flow.parameters())
            if self.method == "sf2m":
                self.score = MLP(dim=self.dim, w=self.width, time_varying=True).to(self.device)
                params += list(self.score.parameters())
            else:
                self.score = None
            opt = torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)
            self.flow.train()

            start = clock()
            done, last = 0, float("nan")
            while True:
                if steps is not None and done >= steps:
                    break
                if wall_seconds is not None and clock() - start >= wall_seconds:
                    break
                tau_l, x_l, u_l, eps_l, lam_l = [], [], [], [], []
                for k, (fm, d) in enumerate(zip(matchers, deltas)):
                    # the notebook's get_batch: np.random.randint, with replacement, from each snapshot
                    i0 = torch.from_numpy(np.random.randint(xs[k].shape[0], size=bs)).to(self.device)
                    i1 = torch.from_numpy(np.random.randint(xs[k + 1].shape[0], size=bs)).to(self.device)
                    x0, x1 = xs[k][i0], xs[k + 1][i1]
                    if self.method == "sf2m":
                        s, xt, ut, eps = fm.sample_location_and_conditional_flow(x0, x1, return_noise=True)
                        eps_l.append(eps)
                        lam_l.append(fm.compute_lambda(s) * d)
                    else:
                        s, xt, ut = fm.sample_location_and_conditional_flow(x0, x1)
                    tau_l.append(taus[k] + s * d)
                    x_l.append(xt)
                    u_l.append(ut / d)
                tau, xt, ut = torch.cat(tau_l), torch.cat(x_l), torch.cat(u_l)
                z = torch.cat([xt, tau[:, None]], dim=-1)
                opt.zero_grad(set_to_none=True)
                # the peer's own training loss (its algorithm), not an evaluation metric
                loss = torch.mean((self.flow(z) - ut) ** 2)
                if self.method == "sf2m":
                    lam, eps = torch.cat(lam_l), torch.cat(eps_l)
                    loss = loss + torch.mean((lam[:, None] * self.score(z) + eps) ** 2)
                loss.backward()
                opt.step()
                done += 1
                last = float(loss.detach())
            elapsed = clock() - start
        self.flow.eval()
        if self.score is not None:
            self.score.eval()
        return {"steps": done, "wall_seconds": elapsed, "loss": last}

    # --------------------------------------------------------------------------------------- transport
    def velocity(self, t: float, x: Tensor) -> Tensor:
        """The learned ODE velocity ``dx/dt`` at time ``t`` (caller's units) for cells ``x: (N, D)``."""
        self._require_fit()
        x = self._check_cells(x, "x")
        tau = self._tau(_real(t, "t"))
        with torch.no_grad():
            z = x.to(self.device, torch.float32)
            v = self.flow(torch.cat([z, torch.full((z.shape[0], 1), tau, device=self.device)], dim=1))
        return (v / self._unit).to(x.device, x.dtype)

    def transport(self, x0: Tensor, t0: float, t1: float, *, sde: bool = False, steps: int = 100, seed: Optional[int] = None) -> Tensor:
        """Push cells ``x0: (N, D)`` from time ``t0`` to ``t1`` (caller's units); returns ``(N, D)``.

        ``sde=False``: the learned ODE ``dx/dt = v``, integrated with dopri5 (``atol = rtol = 1e-4``,
        adaptive, so ``steps`` is not used); ``t1 < t0`` integrates backwards. ``sde=True`` (SF2M only,
        ``t1 > t0``): the SDE ``dX = [v + s] dt + sigma dW`` by Euler–Maruyama (``torchsde``, ``method="euler"``)
        with ``steps`` equal steps; ``seed`` fixes its Brownian path (default: the peer's seed).
        The result has ``x0``'s dtype and device.
        """
        self._require_fit()
        x0 = self._check_cells(x0, "x0")
        tau0, tau1 = self._tau(_real(t0, "t0")), self._tau(_real(t1, "t1"))
        if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 1:
            raise ValueError(f"steps must be a positive integer; got {steps!r}")
        if sde and self.method != "sf2m":
            raise ValueError(f"sde=True needs a score network: only method='sf2m' has one (this peer is {self.method!r})")
        y0 = x0.detach().to(self.device, torch.float32)
        if tau0 == tau1:
            return x0.detach().clone()
        if not sde:
            import torchdiffeq

            def f(t: Tensor, y: Tensor) -> Tensor:
                return self.flow(torch.cat([y, t.reshape(1, 1).expand(y.shape[0], 1).to(y)], dim=1))

            with torch.no_grad():
                ts = torch.tensor([tau0, tau1], dtype=torch.float32, device=self.device)
                out = torchdiffeq.odeint(f, y0, ts, method=ODE_METHOD, atol=ODE_ATOL, rtol=ODE_RTOL)[-1]
            return out.to(x0.device, x0.dtype)
        if tau1 < tau0:
            raise ValueError(f"sde=True integrates forwards only; got t0={t0!r} > t1={t1!r}")
        import torchsde

        seed = self.seed if seed is None else int(seed)
        sdefn = _SDE(self.flow, self.score, self.sigma)
        bm = torchsde.BrownianInterval(
            t0=tau0, t1=tau1, size=tuple(y0.shape), dtype=y0.dtype, device=self.device, entropy=seed
        )
        with torch.no_grad():
            ts = torch.tensor([tau0, tau1], dtype=torch.float32, device=self.device)
            out = torchsde.sdeint(sdefn, y0, ts, bm=bm, method="euler", dt=(tau1 - tau0) / steps)[-1]
        return out.to(x0.device, x0.dtype)

    def _require_fit(self) -> None:
        if self.flow is None:
            raise RuntimeError("CFMPeer.fit must be called before transport / velocity")
