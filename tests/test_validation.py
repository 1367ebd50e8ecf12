"""Input validation: bad input raises ``ValueError``/``TypeError`` whose message names the argument.

The shared helpers of ``probflux._validation`` are tested directly against every kind of bad input; each
public entry point (the density methods of ``FactorizedMixture`` and ``AutoregressiveMixture``, the
``Dynamics`` methods, ``simulate``, ``continuity_residual`` and the constructors) then gets one call per kind
of argument, to show that it runs the checks and names its own argument. Models are tiny and float64.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import pytest
import torch

import probflux as pf
from probflux import _validation

N, D, C = 5, 2, 3  # points, dimension, context size
F64 = torch.float64
T3 = torch.tensor([0.2, 0.5, 0.8], dtype=F64)  # a vector of three times (no global RNG at import)


# ---------------------------------------------------------------------------------------------- models
@functools.cache
def model(kind: str):
    """Small float64 models, built once. ``*_ctx`` variants have ``context_dim = C``."""
    with torch.random.fork_rng():  # leave the global RNG as other test files expect it
        torch.manual_seed(0)
        return _build(kind)


def _build(kind: str):
    ctx = C if kind.endswith("_ctx") else 0
    base = kind.removesuffix("_ctx")
    if base == "fm":
        m = pf.FactorizedMixture(D, components=2, hidden=16, layers=1, context_dim=ctx)
    elif base == "ar":
        m = pf.AutoregressiveMixture(D, components=2, hidden=16, layers=1, context_dim=ctx)
    elif base == "dyn":
        density = model("ar_ctx" if ctx else "ar")
        m = pf.Dynamics(density, diffusion=0.5, divergence_free=pf.DivergenceFree(D, hidden=16, context_dim=ctx))
    else:
        raise ValueError(kind)
    return m.double()


def names(arg: str, detail: str = "") -> str:
    """Regex: the message names ``arg`` (as a whole word), followed somewhere by ``detail``."""
    return rf"\b{arg}\b" + (f".*{detail}" if detail else "")


@pytest.fixture(autouse=True)
def _validation_on():
    """Every test starts, and leaves, with validation on, whatever happens inside it."""
    pf.set_validation(True)
    yield
    pf.set_validation(True)


@pytest.fixture
def validation_off():
    pf.set_validation(False)
    try:
        yield
    finally:
        pf.set_validation(True)


def points(arg: str = "x", n: int = N) -> torch.Tensor:
    """Valid float64 input: Gaussian points, or uniforms in (0, 1) for ``icdf``'s ``u``."""
    g = torch.Generator().manual_seed(1)
    if arg == "u":
        return 0.05 + 0.9 * torch.rand(n, D, generator=g, dtype=F64)
    return torch.randn(n, D, generator=g, dtype=F64)


# ------------------------------------------------------------------------------ entry points (t, x, ctx)
def _method(name):
    def call(m, t, x, context=None):
        return getattr(m, name)(t, x, context=context)

    return call


def _residual(m, t, x, context=None):
    return pf.continuity_residual(m, t, x, context)


DENSITY_METHODS = [("log_prob", "x"), ("velocity", "x"), ("flux", "x"), ("score", "x"), ("cdf", "x"), ("icdf", "u"),
                   ("reparameterize", "x_hat")]
DYNAMICS_METHODS = ["log_prob", "velocity", "flux", "score", "drift"]

# (model kind, call(model, t, x, context), name of the point argument)
ENTRIES = (
    [pytest.param(k, _method(m), a, id=f"{k}.{m}") for k in ("fm", "ar") for m, a in DENSITY_METHODS]
    + [pytest.param("dyn", _method(m), "x", id=f"dyn.{m}") for m in DYNAMICS_METHODS]
    + [pytest.param(k, _residual, "x", id=f"continuity_residual[{k}]") for k in ("fm", "ar", "dyn")]
)


def _with_nonfinite(row: int, value: float) -> torch.Tensor:
    x = points()
    x[row, 1] = value
    return x


# (make bad points, expected exception, detail the message must contain after the argument's name)
BAD_POINTS = [
    pytest.param(lambda a: torch.zeros(N, dtype=F64), ValueError, "shape", id="1d"),
    pytest.param(lambda a: torch.zeros(N, D, 1, dtype=F64), ValueError, "shape", id="3d"),
    pytest.param(lambda a: torch.zeros(N, D + 1, dtype=F64), ValueError, "shape", id="dim+1"),
    pytest.param(lambda a: torch.zeros(N, D - 1, dtype=F64), ValueError, "shape", id="dim-1"),
    pytest.param(lambda a: points(a).numpy(), TypeError, "Tensor", id="numpy"),
    pytest.param(lambda a: points(a).tolist(), TypeError, "Tensor", id="list"),
    pytest.param(lambda a: torch.zeros(N, D, dtype=torch.int64), TypeError, "dtype", id="int64"),
    pytest.param(lambda a: points(a).float(), TypeError, "float32", id="float32-for-float64-model"),
    pytest.param(lambda a: _with_nonfinite(2, math.nan), ValueError, "NaN.*row 2", id="nan"),
    pytest.param(lambda a: _with_nonfinite(3, math.inf), ValueError, "inf.*row 3", id="inf"),
    pytest.param(lambda a: _with_nonfinite(0, -math.inf), ValueError, "inf.*row 0", id="-inf"),
]


@pytest.mark.parametrize("make_x, exc, detail", BAD_POINTS)
def test_bad_points_are_rejected(make_x, exc, detail):
    """The shared check (``prepare_inputs``: shape, type, dtype, finiteness) behind every entry point."""
    with pytest.raises(exc, match=names("x_hat", detail)):
        _validation.prepare_inputs(model("fm"), 0.5, make_x("x"), None, name="x_hat")


@pytest.mark.parametrize("kind, call, arg", ENTRIES)
def test_every_entry_point_checks_its_points(kind, call, arg):
    with pytest.raises(ValueError, match=names(arg, "NaN.*row 2")):
        call(model(kind), 0.5, _with_nonfinite(2, math.nan))
    with pytest.raises(TypeError, match=names(arg, "float32")):
        call(model(kind), 0.5, points(arg).float())


BAD_TIMES = [
    pytest.param(-0.1, ValueError, r"\[0, 1\]", id="-0.1"),
    pytest.param(1.5, ValueError, r"\[0, 1\]", id="1.5"),
    pytest.param(torch.tensor([0.2, 0.4, 1.5, 0.1, 0.0], dtype=F64), ValueError, r"\[0, 1\]", id="vector-with-1.5"),
    pytest.param(torch.tensor(-1e-3, dtype=F64), ValueError, r"\[0, 1\]", id="0d-negative"),
    pytest.param(math.nan, ValueError, "NaN", id="nan"),
    pytest.param(math.inf, ValueError, "inf", id="inf"),
    pytest.param(torch.tensor([0.2, 0.4, 0.3, math.nan, 0.0], dtype=F64), ValueError, "NaN.*index 3", id="vector-nan"),
    pytest.param(torch.full((N, 1), 0.5, dtype=F64), ValueError, "shape", id="2d"),
    pytest.param(torch.full((N - 1,), 0.5, dtype=F64), ValueError, "shape", id="length-N-1"),
    pytest.param(torch.full((1,), 0.5, dtype=F64), ValueError, "shape", id="length-1"),
    pytest.param("0.5", TypeError, "", id="str"),
    pytest.param(None, TypeError, "", id="None"),
    pytest.param(True, TypeError, "", id="bool"),
    pytest.param(torch.zeros(N, dtype=torch.bool), TypeError, "dtype", id="bool-tensor"),
]


@pytest.mark.parametrize("t, exc, detail", BAD_TIMES)
def test_bad_times_are_rejected(t, exc, detail):
    with pytest.raises(exc, match=names("t", detail)):
        _validation.as_times(t, N, F64, torch.device("cpu"))


@pytest.mark.parametrize("kind, call, arg", ENTRIES)
def test_every_entry_point_checks_its_times(kind, call, arg):
    with pytest.raises(ValueError, match=names("t", r"\[0, 1\]")):
        call(model(kind), 1.5, points(arg))
    with pytest.raises(ValueError, match=names("t", "shape")):
        call(model(kind), torch.full((N - 1,), 0.5, dtype=F64), points(arg))


@pytest.mark.parametrize("kind", ["fm", "ar", "dyn"])
def test_time_forms_agree(kind):
    """``t`` as a python float, a 0-d tensor and an ``(N,)`` tensor give the same log-density."""
    m, x = model(kind), points()
    ref = m.log_prob(0.3, x)
    assert ref.shape == (N,) and torch.isfinite(ref).all()
    torch.testing.assert_close(m.log_prob(torch.tensor(0.3, dtype=F64), x), ref, rtol=0, atol=0)
    torch.testing.assert_close(m.log_prob(torch.full((N,), 0.3, dtype=F64), x), ref, rtol=0, atol=0)
    # per-point times: row i of a vector-t evaluation equals a scalar-t evaluation at t_i
    tv = torch.linspace(0.0, 1.0, N, dtype=F64)
    per_point = m.log_prob(tv, x)
    for i in range(N):
        torch.testing.assert_close(per_point[i], m.log_prob(float(tv[i]), x)[i])


@pytest.mark.parametrize("kind", ["fm", "ar", "dyn"])
@pytest.mark.parametrize("t", [0, 1])
def test_integer_times_are_accepted(kind, t):
    m, x = model(kind), points()
    ref = m.log_prob(float(t), x)
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(m.log_prob(t, x), ref, rtol=0, atol=0)
    torch.testing.assert_close(m.log_prob(torch.tensor(t), x), ref, rtol=0, atol=0)  # 0-d int64 tensor
    torch.testing.assert_close(m.log_prob(torch.full((N,), t, dtype=torch.int32), x), ref, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------- context
def _ctx(rows: int = N, width: int = C) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, rows * width, dtype=F64).reshape(rows, width)


@pytest.mark.parametrize("kind, call, arg", ENTRIES)
def test_context_given_to_model_without_context(kind, call, arg):
    with pytest.raises(ValueError, match=names("context", "context_dim=0")):
        call(model(kind), 0.5, points(arg), context=_ctx())


BAD_CONTEXTS = [
    pytest.param(None, ValueError, "required", id="missing"),
    pytest.param(_ctx(N, C - 1), ValueError, "shape", id="width-C-1"),
    pytest.param(_ctx(1, C + 1).reshape(-1), ValueError, "shape", id="vector-width-C+1"),
    pytest.param(_ctx(N, C).unsqueeze(-1), ValueError, "shape", id="3d"),
    pytest.param(_ctx(N - 1, C), ValueError, "rows", id="rows-N-1"),
    pytest.param(_ctx(N, C).numpy(), TypeError, "Tensor", id="numpy"),
    pytest.param(torch.full((N, C), math.nan, dtype=F64), ValueError, "NaN", id="nan"),
]


@pytest.mark.parametrize("context, exc, detail", BAD_CONTEXTS)
def test_bad_context_is_rejected(context, exc, detail):
    with pytest.raises(exc, match=names("context", detail)):
        _validation.check_context(context, C, N, F64)


@pytest.mark.parametrize("kind, call, arg", ENTRIES)
def test_every_entry_point_checks_its_context(kind, call, arg):
    with pytest.raises(ValueError, match=names("context", "required")):
        call(model(kind + "_ctx"), 0.5, points(arg))
    with pytest.raises(ValueError, match=names("context", "rows")):
        call(model(kind + "_ctx"), 0.5, points(arg), context=_ctx(N - 1, C))


def _assert_same(a, b):
    if isinstance(a, tuple):  # continuity_residual's Residual
        for ai, bi in zip(a, b):
            torch.testing.assert_close(ai, bi)
    else:
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("kind, call, arg", ENTRIES)
def test_context_vector_is_broadcast(kind, call, arg):
    """A context of shape ``(C,)`` (or ``(1, C)``) is the same as that row repeated ``N`` times."""
    m, x, c = model(kind + "_ctx"), points(arg), _ctx(1, C)[0]
    full = call(m, 0.5, x, context=c.expand(N, C).clone())
    _assert_same(call(m, 0.5, x, context=c), full)
    _assert_same(call(m, 0.5, x, context=c.unsqueeze(0)), full)


# ----------------------------------------------------------------------------------- sample / rsample
SAMPLERS = [pytest.param(k, s, id=f"{k}.{s}") for k in ("fm", "ar") for s in ("sample", "rsample")]


@pytest.mark.parametrize("kind, sampler", SAMPLERS)
def test_sampler_shapes(kind, sampler):
    m = model(kind)
    assert getattr(m, sampler)(0.5, 4).shape == (4, D)
    assert getattr(m, sampler)(torch.tensor(0.5, dtype=F64), 4).shape == (4, D)
    assert getattr(m, sampler)(T3).shape == (3, D)  # one sample per time
    assert getattr(m, sampler)(T3, 3).shape == (3, D)  # n may repeat len(t)
    m_ctx = model(kind + "_ctx")
    with torch.random.fork_rng():
        torch.manual_seed(3)
        a = getattr(m_ctx, sampler)(0.5, 4, context=_ctx(1, C)[0])
        torch.manual_seed(3)
        b = getattr(m_ctx, sampler)(0.5, 4, context=_ctx(1, C).expand(4, C))
    torch.testing.assert_close(a, b)  # a (C,) context is broadcast to every sample


BAD_SAMPLE_ARGS = [
    # (t, n, expected exception, argument named, detail)
    pytest.param(0.5, None, ValueError, "n", "required", id="n-missing-float-t"),
    pytest.param(torch.tensor(0.5, dtype=F64), None, ValueError, "n", "required", id="n-missing-0d-t"),
    pytest.param(0.5, 0, ValueError, "n", "positive", id="n=0"),
    pytest.param(0.5, -2, ValueError, "n", "positive", id="n=-2"),
    pytest.param(T3, 0, ValueError, "n", "positive", id="n=0-vector-t"),
    pytest.param(0.5, 2.5, (ValueError, TypeError), "n", "", id="n=2.5"),
    pytest.param(0.5, True, (ValueError, TypeError), "n", "", id="n=True"),
    pytest.param(T3, 5, ValueError, "n", r"5.*\bt\b.*\(3,\)", id="n-mismatch-vector-t"),
    pytest.param(1.5, 4, ValueError, "t", r"\[0, 1\]", id="t=1.5"),
    pytest.param(-0.1, 4, ValueError, "t", r"\[0, 1\]", id="t=-0.1"),
    pytest.param(math.nan, 4, ValueError, "t", "NaN", id="t=nan"),
    pytest.param(torch.tensor([0.1, math.inf], dtype=F64), None, ValueError, "t", "inf", id="t-vector-inf"),
    pytest.param("0.5", 4, TypeError, "t", "", id="t-str"),
    pytest.param(torch.full((2, 2), 0.5, dtype=F64), 4, ValueError, "t", "shape", id="t-2d"),
    # without n, a bad t must still be reported as a bad t (not as "n is required")
    pytest.param("0.5", None, TypeError, "t", "", id="t-str-no-n"),
    pytest.param([0.1, 0.2], None, TypeError, "t", "", id="t-list-no-n"),
    pytest.param(torch.full((2, 2), 0.5, dtype=F64), None, ValueError, "t", "shape", id="t-2d-no-n"),
]


@pytest.mark.parametrize("t, n, exc, arg, detail", BAD_SAMPLE_ARGS)
def test_bad_sample_arguments(t, n, exc, arg, detail):
    """The shared check of ``(t, n)`` behind every sampler (``TimeDensity._prepare_times``)."""
    with pytest.raises(exc, match=names(arg, detail)):
        model("fm").sample(t, n)


@pytest.mark.parametrize("kind, sampler", SAMPLERS + [pytest.param(k, "kinetic_energy", id=f"{k}.kinetic_energy") for k in ("fm", "ar")])
def test_every_sampler_checks_its_arguments(kind, sampler):
    for t, n, exc, arg, detail in ((0.5, None, ValueError, "n", "required"), (0.5, 0, ValueError, "n", "positive"),
                                   (T3, 5, ValueError, "n", r"5.*\bt\b.*\(3,\)"), (1.5, 4, ValueError, "t", r"\[0, 1\]")):
        with pytest.raises(exc, match=names(arg, detail)):
            getattr(model(kind), sampler)(t, n)


@pytest.mark.parametrize("kind, sampler", SAMPLERS)
def test_sampler_context(kind, sampler):
    with pytest.raises(ValueError, match=names("context", "context_dim=0")):
        getattr(model(kind), sampler)(0.5, 4, context=_ctx(4, C))
    m = model(kind + "_ctx")
    with pytest.raises(ValueError, match=names("context", "required")):
        getattr(m, sampler)(0.5, 4)
    with pytest.raises(ValueError, match=names("context", "rows")):
        getattr(m, sampler)(0.5, 4, context=_ctx(3, C))
    with pytest.raises(ValueError, match=names("context", "shape")):
        getattr(m, sampler)(0.5, 4, context=_ctx(4, C + 1))


# --------------------------------------------------------------------------------------------- simulate
BAD_SIMULATE = [
    # (keyword overrides, expected exception, argument named, detail)
    pytest.param(dict(t0=-0.1), ValueError, "t0", r"\[0, 1\]", id="t0=-0.1"),
    pytest.param(dict(t0=1.5), ValueError, "t0", r"\[0, 1\]", id="t0=1.5"),
    pytest.param(dict(t0=math.nan), ValueError, "t0", "", id="t0=nan"),
    pytest.param(dict(t1=-0.1), ValueError, "t1", r"\[0, 1\]", id="t1=-0.1"),
    pytest.param(dict(t1=1.5), ValueError, "t1", r"\[0, 1\]", id="t1=1.5"),
    pytest.param(dict(t1=math.inf), ValueError, "t1", "", id="t1=inf"),
    pytest.param(dict(method="rk5"), ValueError, "method", "rk5", id="method=rk5"),
    pytest.param(dict(method="Euler-Maruyama"), ValueError, "method", "", id="method=Euler-Maruyama"),
    pytest.param(dict(steps=0), ValueError, "steps", "", id="steps=0"),
    pytest.param(dict(steps=-3), ValueError, "steps", "", id="steps=-3"),
    pytest.param(dict(steps=2.5), (ValueError, TypeError), "steps", "", id="steps=2.5"),
    pytest.param(dict(x0=torch.zeros(N, dtype=F64)), ValueError, "x0", "shape", id="x0-1d"),
    pytest.param(dict(x0=torch.zeros(N, D, 1, dtype=F64)), ValueError, "x0", "shape", id="x0-3d"),
    pytest.param(dict(x0=torch.zeros(N, D + 1, dtype=F64)), ValueError, "x0", "shape", id="x0-dim+1"),
    pytest.param(dict(x0=np.zeros((N, D))), TypeError, "x0", "Tensor", id="x0-numpy"),
    pytest.param(dict(x0=torch.zeros(N, D, dtype=torch.int64)), TypeError, "x0", "dtype", id="x0-int64"),
    pytest.param(dict(x0=_with_nonfinite(1, math.nan)), ValueError, "x0", "NaN.*row 1", id="x0-nan"),
    pytest.param(dict(x0=points().float()), TypeError, "x0", "float32", id="x0-float32-for-float64-model"),
    pytest.param(dict(context=_ctx()), ValueError, "context", "context_dim=0", id="context-for-context_dim=0"),
]


@pytest.mark.parametrize("overrides, exc, arg, detail", BAD_SIMULATE)
@pytest.mark.parametrize("kind", ["dyn"])
def test_bad_simulate_arguments(kind, overrides, exc, arg, detail):
    kwargs = dict(x0=points(), t0=0.0, t1=1.0, steps=2, method="euler_maruyama") | overrides
    with pytest.raises(exc, match=names(arg, detail)):
        pf.simulate(model(kind), **kwargs)


def test_simulate_rejects_other_objects_and_bad_context():
    with pytest.raises(TypeError, match=names("dynamics")):
        pf.simulate(torch.nn.Linear(D, D).double(), points(), steps=2)
    with pytest.raises(ValueError, match=names("context", "required")):
        pf.simulate(model("dyn_ctx"), points(), steps=2)
    with pytest.raises(ValueError, match=names("context", "rows")):
        pf.simulate(model("dyn_ctx"), points(), steps=2, context=_ctx(N - 1, C))


@pytest.mark.parametrize("t0, t1", [(0, 1), (1.0, 0.0), (0.25, 0.75)])
@pytest.mark.parametrize("method", ["euler_maruyama", "euler"])
def test_simulate_accepts_valid_arguments(t0, t1, method):
    path = pf.simulate(model("dyn"), points(), t0=t0, t1=t1, steps=3, method=method)
    assert path.shape == (4, N, D) and torch.isfinite(path).all()
    torch.testing.assert_close(path[0], points())
    path = pf.simulate(model("dyn_ctx"), points(), t0=t0, t1=t1, steps=3, method=method, context=_ctx(1, C)[0])
    assert path.shape == (4, N, D) and torch.isfinite(path).all()


# -------------------------------------------------------------------------------------------- diffusion
@pytest.mark.parametrize("g", [-0.5, -1, -1e-12, math.nan, math.inf, -math.inf], ids=str)
def test_diffusion_must_be_finite_and_nonnegative(g):
    with pytest.raises(ValueError, match=names("diffusion")):
        pf.Dynamics(model("fm"), diffusion=g)


@pytest.mark.parametrize("g", ["0.5", [0.5], None, True], ids=repr)
def test_diffusion_of_wrong_type(g):
    with pytest.raises(TypeError, match=names("diffusion")):
        pf.Dynamics(model("fm"), diffusion=g)


@pytest.mark.parametrize(
    "g",
    [
        pytest.param(lambda t: -0.5, id="negative-float"),
        pytest.param(lambda t: -torch.ones_like(t), id="negative-tensor"),
        pytest.param(lambda t: 0.5 - t, id="negative-for-t>0.5"),
        pytest.param(lambda t: torch.full_like(t, math.nan), id="nan"),
        pytest.param(lambda t: torch.full_like(t, math.inf), id="inf"),
        pytest.param(lambda t: torch.ones(t.shape[0] + 1, dtype=t.dtype), id="wrong-shape"),
    ],
)
def test_bad_diffusion_callable_raises_when_drift_is_evaluated(g):
    dyn = pf.Dynamics(model("fm"), diffusion=g)  # a callable cannot be checked before it is called
    t = torch.linspace(0.0, 1.0, N, dtype=F64)
    with pytest.raises(ValueError, match=names("diffusion")):
        dyn.drift(t, points())
    with pytest.raises(ValueError, match=names("diffusion")):
        dyn.diffusion(t)
    with pytest.raises(ValueError, match=names("diffusion")):
        pf.simulate(dyn, points(), steps=4)  # evaluates g at t = 0, 0.25, 0.5, 0.75


@pytest.mark.parametrize("g", [0, 1, 0.0, 0.7, lambda t: 0.3, lambda t: 1.0 - t],
                         ids=["0", "1", "0.0", "0.7", "callable-float", "callable-tensor"])
def test_valid_diffusions(g):
    dyn = pf.Dynamics(model("fm"), diffusion=g)
    t = torch.linspace(0.0, 1.0, N, dtype=F64)
    gt = dyn.diffusion(t)
    assert gt.shape == (N,) and (gt >= 0).all()
    b = dyn.drift(t, points())
    assert b.shape == (N, D) and torch.isfinite(b).all()
    if g == 0:
        torch.testing.assert_close(b, dyn.velocity(t, points()))


# ----------------------------------------------------------------------------------------- constructors
BAD_CONSTRUCTORS = [
    # (constructor, expected exception, argument named)
    pytest.param(lambda: pf.FactorizedMixture(0), ValueError, "dim", id="fm-dim=0"),
    pytest.param(lambda: pf.FactorizedMixture(-2), ValueError, "dim", id="fm-dim=-2"),
    pytest.param(lambda: pf.FactorizedMixture(2.0), (ValueError, TypeError), "dim", id="fm-dim=2.0"),
    pytest.param(lambda: pf.FactorizedMixture(2, components=0), ValueError, "components", id="fm-components=0"),
    pytest.param(lambda: pf.FactorizedMixture(2, components=-1), ValueError, "components", id="fm-components=-1"),
    pytest.param(lambda: pf.FactorizedMixture(2, family="student"), ValueError, "family", id="fm-family=student"),
    pytest.param(lambda: pf.FactorizedMixture(2, family="Gaussian"), ValueError, "family", id="fm-family=Gaussian"),
    pytest.param(lambda: pf.FactorizedMixture(2, context_dim=-1), ValueError, "context_dim", id="fm-context_dim=-1"),
    pytest.param(lambda: pf.AutoregressiveMixture(0), ValueError, "dim", id="ar-dim=0"),
    pytest.param(lambda: pf.AutoregressiveMixture(2, components=0), ValueError, "components", id="ar-components=0"),
    pytest.param(lambda: pf.AutoregressiveMixture(2, flux="rk"), ValueError, "flux", id="ar-flux=rk"),
    pytest.param(lambda: pf.AutoregressiveMixture(2, flux="KR"), ValueError, "flux", id="ar-flux=KR"),
    pytest.param(lambda: pf.AutoregressiveMixture(2, flux=None), ValueError, "flux", id="ar-flux=None"),
    pytest.param(lambda: pf.AutoregressiveMixture(2, context_dim=-3), ValueError, "context_dim", id="ar-context_dim=-3"),
    pytest.param(lambda: pf.DivergenceFree(1), ValueError, "dim", id="divfree-dim=1"),
    pytest.param(lambda: pf.DivergenceFree(0), ValueError, "dim", id="divfree-dim=0"),
    pytest.param(lambda: pf.DivergenceFree(2, context_dim=-1), ValueError, "context_dim", id="divfree-context_dim=-1"),
    pytest.param(lambda: pf.Dynamics(torch.nn.Linear(2, 2)), TypeError, "density", id="dynamics-density=Linear"),
    pytest.param(lambda: pf.Dynamics(None), TypeError, "density", id="dynamics-density=None"),
    pytest.param(lambda: pf.Dynamics(pf.DivergenceFree(2)), TypeError, "density", id="dynamics-density=DivergenceFree"),
    pytest.param(lambda: pf.Dynamics(model("fm"), divergence_free=pf.DivergenceFree(3)), ValueError, "divergence_free",
                 id="dynamics-divfree-dim=3"),
    pytest.param(
        lambda: pf.Dynamics(model("fm"), divergence_free=pf.DivergenceFree(2, context_dim=C)), ValueError, "divergence_free",
        id="dynamics-divfree-context_dim"
    ),
    pytest.param(lambda: pf.Dynamics(model("fm"), divergence_free=model("ar")), TypeError, "divergence_free",
                 id="dynamics-divfree=density"),
]


@pytest.mark.parametrize("build, exc, arg", BAD_CONSTRUCTORS)
def test_bad_constructor_arguments(build, exc, arg):
    with pytest.raises(exc, match=names(arg)):
        build()


def test_valid_constructors():
    assert pf.FactorizedMixture(1, components=1, hidden=4, layers=1, family="gaussian").dim == 1
    assert pf.AutoregressiveMixture(3, components=1, hidden=4, layers=1, flux="sigmoid", context_dim=2).context_dim == 2
    assert pf.DivergenceFree(2, hidden=4).dim == 2
    dyn = pf.Dynamics(model("ar"), diffusion=0, divergence_free=pf.DivergenceFree(D, hidden=4).double())
    assert dyn.dim == D and dyn.context_dim == 0


# --------------------------------------------------------------------------------------- set_validation
def test_set_validation_off_skips_value_checks(validation_off):
    m = model("fm")
    x = _with_nonfinite(2, math.nan)
    lp = m.log_prob(0.5, x)  # no ValueError any more
    assert torch.isnan(lp[2]) and torch.isfinite(lp[[0, 1, 3, 4]]).all()
    assert m.log_prob(1.5, points()).shape == (N,)  # t out of range
    assert m.log_prob(math.nan, points()).shape == (N,)  # t NaN
    assert model("fm_ctx").log_prob(0.5, points(), torch.full((C,), math.nan, dtype=F64)).shape == (N,)
    assert pf.Dynamics(m, diffusion=lambda t: -1.0).drift(0.5, points()).shape == (N, D)


@pytest.mark.parametrize(
    "call, exc, arg",
    [
        pytest.param(lambda: model("fm").log_prob(0.5, torch.zeros(N, dtype=F64)), ValueError, "x", id="x-1d"),
        pytest.param(lambda: model("ar").velocity(0.5, torch.zeros(N, D + 1, dtype=F64)), ValueError, "x", id="x-dim+1"),
        pytest.param(lambda: model("fm").log_prob(0.5, points().numpy()), TypeError, "x", id="x-numpy"),
        pytest.param(lambda: model("fm").log_prob(0.5, torch.zeros(N, D, dtype=torch.int64)), TypeError, "x", id="x-int64"),
        pytest.param(lambda: model("dyn").drift(0.5, points().float()), TypeError, "x", id="x-float32"),
        pytest.param(lambda: model("fm").log_prob(torch.full((N, 1), 0.5), points()), ValueError, "t", id="t-2d"),
        pytest.param(lambda: model("fm").log_prob(torch.full((N - 1,), 0.5), points()), ValueError, "t", id="t-length"),
        pytest.param(lambda: model("fm").log_prob("0.5", points()), TypeError, "t", id="t-str"),
        pytest.param(lambda: model("fm_ctx").log_prob(0.5, points()), ValueError, "context", id="context-missing"),
        pytest.param(lambda: model("fm").sample(0.5), ValueError, "n", id="n-missing"),
        pytest.param(lambda: pf.simulate(model("fm"), points(), steps=0), ValueError, "steps", id="steps=0"),
        pytest.param(lambda: pf.Dynamics(model("fm"), diffusion=-1.0), ValueError, "diffusion", id="diffusion=-1"),
    ],
)
def test_set_validation_off_keeps_shape_and_type_checks(validation_off, call, exc, arg):
    with pytest.raises(exc, match=names(arg)):
        call()


def test_set_validation_round_trip():
    x = _with_nonfinite(1, math.nan)
    assert _validation.validation_enabled()
    pf.set_validation(False)
    try:
        assert not _validation.validation_enabled()
        model("ar").log_prob(0.5, x)
    finally:
        pf.set_validation(True)
    assert _validation.validation_enabled()
    with pytest.raises(ValueError, match=names("x", "NaN.*row 1")):
        model("ar").log_prob(0.5, x)
