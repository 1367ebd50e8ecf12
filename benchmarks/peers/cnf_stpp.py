"""The time-varying CNF of Neural STPP (Chen, Amos, Nickel, ICLR 2021), re-implemented as the baseline of the
spatio-temporal event benchmark.

Recipe (facebookresearch/neural_stpp, commit e2ee706, ``models/spatial/indepcnf.py``, ``models/spatial/cnf.py``,
``train_stpp.py`` defaults; ``--model tvcnf``):

* ``log p(x | t)``: integrate ``dx/dtau = f(tau, x)`` from ``tau = t + 2`` (``IndependentCNF.time_offset``) down
  to ``tau = 0`` with the change of variables ``d log p / dtau = -tr(df/dx)``; the base at ``tau = 0`` is a
  diagonal Gaussian with learnable mean and log-std. Times are in the data's own units (days, hours), exactly
  as there; every event of a batch is integrated at once by mapping its interval to ``s in [0, 1]``.
* ``f``: an MLP ``2 -> 64 -> 64 -> 64 -> 2`` whose every layer sees ``tau`` (``ConcatLinear_v2``:
  ``W x + b + w tau``), zero-initialised output layer; activation ``softplus`` (Neural STPP's default
  ``swish`` is a ``TimeDependentSwish`` with a learned, time-dependent slope; softplus is its other option).
* Solver: torchdiffeq ``dopri5`` with ``rtol = atol = 1e-4`` (``--tol 1e-4``). Trace: exact (two reverse-mode
  passes in 2-D) both in training and evaluation (Neural STPP uses Hutchinson in training, exact in evaluation).
* Regularisation: kinetic energy and Jacobian Frobenius norm, each ``1e-4`` (``--otreg_strength``), integrated
  along the path (exactly, from the two Jacobian rows).
* Optimiser: AdamW ``lr 1e-3``, ``weight_decay 1e-6``, ``betas (0.9, 0.98)``, cosine schedule to 0 (no
  warm-up, ``--warmup_itrs 0``), run over the wall-clock budget.

Backpropagation goes through the solver's operations (``odeint``), which on these small problems is faster than
the adjoint (``odeint_adjoint``, Neural STPP's choice, which costs an extra backward solve); ``adjoint=True``
selects it.
"""
from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Optional

import torch
from torch import Tensor, nn

try:
    from torchdiffeq import odeint, odeint_adjoint
except ImportError as e:  # pragma: no cover
    raise ImportError("the CNF baseline needs torchdiffeq: pip install torchdiffeq") from e

TIME_OFFSET = 2.0


class ConcatLinear(nn.Module):
    """``W x + b + w tau`` (Neural STPP's ``ConcatLinear_v2``)."""

    def __init__(self, d_in: int, d_out: int) -> None:
        super().__init__()
        self.layer = nn.Linear(d_in, d_out)
        self.time = nn.Linear(1, d_out, bias=False)

    def forward(self, tau: Tensor, x: Tensor) -> Tensor:
        return self.layer(x) + self.time(tau)


class VectorField(nn.Module):
    def __init__(self, dim: int = 2, hidden: tuple[int, ...] = (64, 64, 64)) -> None:
        super().__init__()
        dims = (dim, *hidden, dim)
        self.layers = nn.ModuleList(ConcatLinear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        self.act = nn.Softplus()
        with torch.no_grad():
            self.layers[-1].layer.weight.zero_()
            self.layers[-1].layer.bias.zero_()
            self.layers[-1].time.weight.zero_()

    def forward(self, tau: Tensor, x: Tensor) -> Tensor:
        """``tau: (N, 1)``, ``x: (N, D)`` → ``(N, D)``."""
        h = x
        for i, layer in enumerate(self.layers):
            h = layer(tau, h)
            if i < len(self.layers) - 1:
                h = self.act(h)
        return h


class _Dynamics(nn.Module):
    """Augmented ODE in ``s in [0, 1]``: state ``(x, delta_logp, energy, jacnorm)``; ``tau = t0 + s (t1 - t0)``."""

    def __init__(self, field: VectorField) -> None:
        super().__init__()
        self.field = field
        self.t0: Optional[Tensor] = None
        self.ratio: Optional[Tensor] = None
        self.nfe = 0

    def forward(self, s: Tensor, state: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
        self.nfe += 1
        x = state[0]
        create = torch.is_grad_enabled() and self.training
        with torch.enable_grad():
            x = x if x.requires_grad else x.detach().requires_grad_(True)
            tau = (self.t0 + s * self.ratio).unsqueeze(-1)
            dx = self.field(tau, x) * self.ratio.unsqueeze(-1)
            rows = [torch.autograd.grad(dx[:, i].sum(), x, create_graph=create, retain_graph=True)[0] for i in range(x.shape[1])]
        div = sum(r[:, i] for i, r in enumerate(rows))
        energy = (dx * dx).sum() / x.shape[0]
        jac = sum((r * r).sum() for r in rows) / x.shape[0]
        if not create:
            dx, div = dx.detach(), div.detach()
        return dx, -div, energy.reshape(1), jac.reshape(1)


class TimeVaryingCNF(nn.Module):
    """``log p(x | t)`` of Neural STPP's time-varying CNF; ``t`` in data units (``>= 0``)."""

    def __init__(self, dim: int = 2, hidden: tuple[int, ...] = (64, 64, 64), *, tol: float = 1e-4, adjoint: bool = False,
                 reg: float = 1e-4) -> None:
        super().__init__()
        self.dyn = _Dynamics(VectorField(dim, hidden))
        self.z_mean = nn.Parameter(torch.zeros(dim))
        self.z_logstd = nn.Parameter(torch.zeros(dim))
        self.tol, self.adjoint, self.reg = tol, adjoint, reg

    def _integrate(self, t: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        t0 = t + TIME_OFFSET
        self.dyn.t0, self.dyn.ratio = t0, -t0  # tau: t + 2 -> 0
        zero = torch.zeros(x.shape[0], dtype=x.dtype)
        state = (x, zero, torch.zeros(1, dtype=x.dtype), torch.zeros(1, dtype=x.dtype))
        ss = torch.tensor([0.0, 1.0], dtype=x.dtype)
        solve = odeint_adjoint if self.adjoint else odeint
        kw = {"adjoint_params": tuple(self.parameters())} if self.adjoint else {}
        z, dlogp, energy, jac = (v[-1] for v in solve(self.dyn, state, ss, rtol=self.tol, atol=self.tol, method="dopri5", **kw))
        logpz = (-0.5 * ((z - self.z_mean) / self.z_logstd.exp()) ** 2 - self.z_logstd - 0.5 * math.log(2 * math.pi)).sum(-1)
        return logpz - dlogp, energy, jac

    def log_prob(self, t: Tensor, x: Tensor) -> Tensor:
        """``t: (N,)`` data-unit times, ``x: (N, D)`` → ``(N,)``."""
        return self._integrate(t, x)[0]

    def loss(self, t: Tensor, x: Tensor) -> Tensor:
        """Mean negative log-likelihood plus ``reg * (energy + jacnorm)``."""
        logp, energy, jac = self._integrate(t, x)
        # the CNF's own training loss (its algorithm), not an evaluation metric
        return -logp.mean() + self.reg * (energy.sum() + jac.sum())


def cnf_mean_log_likelihood(model: TimeVaryingCNF, t: Tensor, x: Tensor, chunk: int = 4096) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for a in range(0, t.shape[0], chunk):
            total += float(model.log_prob(t[a:a + chunk], x[a:a + chunk]).double().sum())
    model.train()
    return total / t.shape[0]


def fit_cnf(t: Tensor, x: Tensor, *, seconds: float, steps: int = 10**9, batch: int = 1024, seed: int = 0, lr: float = 1e-3,
            callback: Optional[Callable[[int, float, TimeVaryingCNF], None]] = None, callback_every: int = 20,
            clock: Callable[[], float] = time.perf_counter, **model_kw) -> tuple[TimeVaryingCNF, dict]:
    """Train on events ``t: (N,)`` (data units), ``x: (N, D)`` for ``steps`` steps or ``seconds`` of wall time.

    The cosine schedule runs over the wall-clock budget (the learning rate at training time ``c`` is
    ``lr (1 + cos(pi c / seconds)) / 2``), as ``probflux.train.fit(time_schedule=True)`` does for our models;
    ``clock`` measures the budget (``time.process_time``: CPU seconds of this process, robust to other load);
    ``callback(step, train_seconds, model)`` runs every
    ``callback_every`` steps outside the clock. Returns the model and ``{"steps", "seconds", "step_seconds"}``.
    """
    torch.manual_seed(seed)
    model = TimeVaryingCNF(x.shape[1], **model_kw).to(x.dtype)
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-6, betas=(0.9, 0.98))
    gen = torch.Generator().manual_seed(seed)
    spent, step = 0.0, 0
    while step < steps and spent < seconds:
        start = clock()
        idx = torch.randint(0, t.shape[0], (batch,), generator=gen)
        loss = model.loss(t[idx], x[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        for g in opt.param_groups:
            g["lr"] = lr * 0.5 * (1 + math.cos(math.pi * min(spent / seconds, 1.0)))
        opt.step()
        step += 1
        spent += clock() - start
        if callback is not None and step % callback_every == 0:
            callback(step, spent, model)
    return model, {"steps": step, "seconds": spent, "step_seconds": spent / max(step, 1), "nfe": model.dyn.nfe}
