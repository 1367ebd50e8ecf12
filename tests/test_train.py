"""The training loop: learning, EMA, determinism, resume after SIGKILL, DDP equality, bad input."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.multiprocessing as mp

import probflux as pf
from probflux.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from probflux.objectives import KineticEnergy, NegativeLogLikelihood
from probflux.train import TrainConfig, _ema_fn, fit, lr_factor

ROOT = Path(__file__).resolve().parents[1]


def moving_points(n: int = 2048, seed: int = 0) -> SimpleNamespace:
    """A blob circling the origin: x ~ N((2 cos 3t, 2 sin 3t), 0.3^2 I), t ~ U(0, 1)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.rand(n, generator=g, dtype=torch.float64)
    centre = 2.0 * torch.stack([torch.cos(3 * t), torch.sin(3 * t)], 1)
    return SimpleNamespace(t=t, x=centre + 0.3 * torch.randn(n, 2, generator=g, dtype=torch.float64), context=None)


def tiny_dynamics(seed: int = 0) -> pf.Dynamics:
    torch.manual_seed(seed)
    return pf.Dynamics(pf.FactorizedMixture(2, components=3, hidden=16, layers=2), diffusion=0.1)


def tiny_config(**kw) -> TrainConfig:
    base = dict(steps=30, batch_size=64, lr=3e-3, warmup=5, ema=0.9, dtype="float64", device="cpu",
                eval_every=10, log_every=5, checkpoint_every=5)
    base.update(kw)
    return TrainConfig(**base)


def objective():
    return NegativeLogLikelihood() + KineticEnergy(0.01, samples=16)


def params(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_lr_schedule_warmup_then_cosine():
    assert lr_factor(0, 100, 10, 0.1) == pytest.approx(0.1)
    assert lr_factor(9, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(10, 100, 10, 0.1) == pytest.approx(1.0)
    assert lr_factor(55, 100, 10, 0.1) == pytest.approx(0.1 + 0.9 * 0.5)
    assert lr_factor(100, 100, 10, 0.1) == pytest.approx(0.1)


def test_fit_decreases_validation_nll(tmp_path):
    data, val = moving_points(4096, 0), moving_points(1024, 1)
    dyn = tiny_dynamics()
    with torch.no_grad():
        before = float(-dyn.to(torch.float64).log_prob(val.t, val.x).mean())
    res = fit(dyn, objective(), data, val=val, config=tiny_config(steps=150, eval_every=50), run_dir=tmp_path, progress=False)
    assert res.step == 150 and res.best_val_nll is not None
    assert res.best_val_nll < before - 1.0, (before, res.best_val_nll)
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == 150 // 5 and '"val_nll"' in lines[-1]
    assert (tmp_path / "checkpoints" / "latest.pt").is_file() and (tmp_path / "checkpoints" / "best.pt").is_file()


def test_ema_follows_the_warmed_up_recursion():
    data = moving_points(512)
    dyn = tiny_dynamics()
    seen: list[dict[str, torch.Tensor]] = []
    res = fit(dyn, objective(), data, config=tiny_config(steps=6, log_every=1, ema=0.8), progress=False,
              callback=lambda step, rec: seen.append(params(dyn)))
    # AveragedModel copies the parameters at the first update, then avg += (1 - d_n)(p - avg).
    expect = {k: v.clone() for k, v in seen[0].items()}
    for n, p in enumerate(seen[1:], start=1):
        d = min(0.8, (1 + n) / (10 + n))
        for k in expect:
            expect[k] = expect[k] + (1 - d) * (p[k] - expect[k])
    got = params(res.model)
    for k in expect:
        torch.testing.assert_close(got[k], expect[k], rtol=1e-12, atol=1e-14)
    assert any(not torch.equal(got[k], seen[-1][k]) for k in got if got[k].is_floating_point())  # EMA lags the weights
    avg = _ema_fn(0.5)(torch.zeros(1), torch.ones(1), torch.tensor(100))
    assert float(avg) == pytest.approx(0.5)


def test_same_seed_same_result_and_seed_matters():
    data = moving_points(512)
    a = fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=12), seed=3, progress=False)
    b = fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=12), seed=3, progress=False)
    c = fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=12), seed=4, progress=False)
    pa, pb, pc = params(a.model), params(b.model), params(c.model)
    assert all(torch.equal(pa[k], pb[k]) for k in pa)
    assert any(not torch.equal(pa[k], pc[k]) for k in pa if pa[k].is_floating_point())


def test_early_stopping_after_patience_evaluations():
    data = moving_points(512)
    res = fit(tiny_dynamics(), objective(), data, val=data, config=tiny_config(steps=200, lr=1e-30, eval_every=5, patience=2, ema=None),
              progress=False)
    # lr = 1e-30 (lr = 0 is refused): updates below float64 resolution, so the first evaluation sets the best and the
    # next two do not improve on it.
    assert res.stopped_early and res.step == 15 and res.best_step == 5


KILL_SCRIPT = """
import os, signal, sys, torch
sys.path.insert(0, {tests!r})
torch.set_num_threads(1)
from test_train import moving_points, tiny_dynamics, tiny_config, objective
from probflux.train import fit
def die(step, record):
    if step == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
fit(tiny_dynamics(), objective(), moving_points(512), val=moving_points(256, 1), config=tiny_config(log_every=1),
    run_dir={run!r}, seed=7, progress=False, callback=die)
"""


def test_resume_after_sigkill_matches_uninterrupted_run(tmp_path):
    run = tmp_path / "killed"
    script = KILL_SCRIPT.format(tests=str(ROOT / "tests"), kill_at=17, run=str(run))
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == -9, proc.stderr
    assert load_checkpoint(run / "checkpoints" / "latest.pt")["trainer"]["step"] == 15
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 17  # lines past the checkpoint exist...
    data, val = moving_points(512), moving_points(256, 1)
    resumed = fit(tiny_dynamics(seed=99), objective(), data, val=val, config=tiny_config(log_every=1), run_dir=run, seed=7,
                  resume=True, progress=False)
    full = fit(tiny_dynamics(), objective(), data, val=val, config=tiny_config(log_every=1), run_dir=tmp_path / "full", seed=7,
               progress=False)
    pr, pf_ = params(resumed.model), params(full.model)
    for k in pf_:
        assert torch.equal(pr[k], pf_[k]), k
    assert resumed.history == full.history
    # ...and were replaced: the metrics read as if the run had never stopped.
    assert (run / "metrics.jsonl").read_text() .count('"step": 16,') == 1
    assert len((run / "metrics.jsonl").read_text().splitlines()) == 30


def _ddp_worker(rank: int, world: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    import torch.distributed as dist

    # file rendezvous: no TCP port to race for (fit() uses an existing process group as torchrun's would be)
    dist.init_process_group("gloo", init_method=f"file://{os.path.join(out, 'rendezvous')}", rank=rank, world_size=world)
    res = fit(tiny_dynamics(), objective(), moving_points(512), val=moving_points(128, 1), config=tiny_config(steps=8, checkpoint_every=4),
              seed=5, progress=False, run_dir=out if rank == 0 else None)
    torch.save({"model": params(res.model), "rank": rank}, os.path.join(out, f"rank{rank}.pt"))
    dist.destroy_process_group()


def test_ddp_two_processes_equal_single_process(tmp_path):
    mp.spawn(_ddp_worker, args=(2, str(tmp_path)), nprocs=2, join=True)
    single = fit(tiny_dynamics(), objective(), moving_points(512), val=moving_points(128, 1), config=tiny_config(steps=8), seed=5,
                 progress=False)
    ref = params(single.model)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")["model"]
        for k in ref:
            torch.testing.assert_close(got[k], ref[k], rtol=1e-9, atol=1e-11, msg=f"rank {rank} {k}")
    assert (tmp_path / "checkpoints" / "latest.pt").is_file()  # written by rank 0


def test_corrupt_and_mismatched_checkpoints_give_clear_errors(tmp_path):
    data = moving_points(256)
    run = tmp_path / "run"
    fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=5), run_dir=run, progress=False)
    latest = run / "checkpoints" / "latest.pt"
    bigger = pf.Dynamics(pf.FactorizedMixture(2, components=5, hidden=16, layers=2))
    with pytest.raises(CheckpointError, match="shape mismatch.*components|does not match"):
        fit(bigger, objective(), data, config=tiny_config(steps=10), run_dir=run, resume=True, progress=False)
    latest.write_bytes(latest.read_bytes()[:100])
    with pytest.raises(CheckpointError, match="corrupt"):
        fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=10), run_dir=run, resume=True, progress=False)
    with pytest.raises(CheckpointError, match="does not exist"):
        fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=10), run_dir=tmp_path / "none", resume=True, progress=False)
    other = tmp_path / "other.pt"
    torch.save({"weights": 1}, other)
    with pytest.raises(CheckpointError, match="not a probflux checkpoint"):
        load_checkpoint(other)
    save_checkpoint(other, {"model": {}})
    assert load_checkpoint(other)["format"] == "probflux-checkpoint"
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda d: d.x.__setitem__((37, 1), float("nan")), "x contains NaN or inf at row 37"),
        (lambda d: d.t.__setitem__(12, 1.5), r"t = 1.5 at row 12 is outside the model interval \[0, 1\]"),
        (lambda d: setattr(d, "x", d.x[:, :1]), "x has 1 columns but the model has dim=2"),
        (lambda d: setattr(d, "context", torch.zeros(len(d.t), 3)), "takes no context"),
    ],
)
def test_bad_training_data_is_named(mutate, match):
    data = moving_points(256)
    mutate(data)
    with pytest.raises(ValueError, match=match):
        fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=2), progress=False)


def test_bad_training_settings_are_named():
    data = moving_points(100)
    with pytest.raises(ValueError, match="batch_size=128 exceeds the 100 training points"):
        fit(tiny_dynamics(), objective(), data, config=tiny_config(batch_size=128), progress=False)
    with pytest.raises(ValueError, match="train.device"):
        fit(tiny_dynamics(), objective(), data, config=tiny_config(device="tpu"), progress=False)
    with pytest.raises(TypeError, match="probflux.Dynamics"):
        fit(pf.FactorizedMixture(2), objective(), data, config=tiny_config(), progress=False)


def test_non_finite_loss_stops_with_a_message():
    data = moving_points(256)
    with pytest.raises(FloatingPointError, match="loss is (nan|inf) at step"):
        fit(tiny_dynamics(), lambda dyn, batch: {"loss": dyn.log_prob(batch.t, batch.x).sum() * float("nan")}, data,
            config=tiny_config(steps=3), progress=False)


def test_max_seconds_stops_with_a_final_checkpoint(tmp_path):
    data = moving_points(512)
    res = fit(tiny_dynamics(), objective(), data, val=data, config=tiny_config(steps=10**6, eval_every=10**5, checkpoint_every=10**5),
              run_dir=tmp_path, max_seconds=0.5, progress=False)
    assert 1 <= res.step < 10**6 and res.stopped_early
    assert load_checkpoint(tmp_path / "checkpoints" / "latest.pt")["trainer"]["step"] == res.step
    assert res.history and res.history[-1]["step"] == res.step


def test_max_seconds_from_the_config_and_a_finite_loss_blow_up():
    data = moving_points(256)
    res = fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=10**6, eval_every=10**5, max_seconds=0.3), progress=False)
    assert 1 <= res.step < 10**6 and res.stopped_early
    grow = {"n": 0}

    def exploding(dyn, batch):  # finite everywhere, but 1e7 x the first loss at the third step
        grow["n"] += 1
        return {"loss": dyn.log_prob(batch.t, batch.x).mean() * 0 + (2.0 if grow["n"] < 3 else 2e7)}

    with pytest.raises(FloatingPointError, match=r"loss is 2e\+07 at step 2 .*divergence_factor = 1e\+06"):
        fit(tiny_dynamics(), exploding, data, config=tiny_config(steps=5), progress=False)
    grow["n"] = 0
    assert fit(tiny_dynamics(), exploding, data, config=tiny_config(steps=5, divergence_factor=None), progress=False).step == 5


def test_threads_apply_during_fit_only():
    before, seen = torch.get_num_threads(), []
    fit(tiny_dynamics(), objective(), moving_points(128), config=tiny_config(steps=2, threads=2, log_every=1), progress=False,
        callback=lambda step, rec: seen.append(torch.get_num_threads()))
    assert seen and set(seen) == {2} and torch.get_num_threads() == before


def test_time_schedule_anneals_over_the_budget():
    """With time_schedule=True the cosine reaches its floor when max_seconds runs out, whatever the step rate."""
    data = moving_points(512)
    cfg = tiny_config(steps=10**6, warmup=10**4, eval_every=10**7, checkpoint_every=10**7, log_every=1)
    lrs = []
    res = fit(tiny_dynamics(), objective(), data, config=cfg, max_seconds=1.0, time_schedule=True, progress=False,
              callback=lambda step, rec: lrs.append(rec["lr"]))
    assert res.step < 10**6 and len(lrs) > 10
    assert max(lrs) > 0.9 * cfg.lr  # warm-up done after 1% of the time, then the peak
    assert lrs[-1] < (cfg.min_lr_ratio + 0.05) * cfg.lr  # annealed at the end of the budget
    with pytest.raises(ValueError, match="time_schedule=True needs max_seconds"):
        fit(tiny_dynamics(), objective(), data, config=tiny_config(steps=3), time_schedule=True, progress=False)


def test_fit_budget_follows_the_given_clock():
    """max_seconds is measured on `clock` (e.g. time.process_time for CPU budgets); a fake clock makes it exact."""
    ticks = [0.0]

    def fake_clock() -> float:
        ticks[0] += 1.0
        return ticks[0]

    res = fit(tiny_dynamics(), objective(), moving_points(256),
              config=tiny_config(steps=10**6, eval_every=10**7, checkpoint_every=10**7, log_every=10**7),
              max_seconds=50.0, clock=fake_clock, progress=False)
    assert res.step == 50  # one tick at the start and one per step: after step 50 the clock reads start + 50
    assert res.wall_seconds == pytest.approx(50.0, abs=3.0)  # + the final log record and the result


def test_ema_copies_non_float_buffers():
    """A module with a bool/int buffer (e.g. a coupling mask) trains with EMA; the buffer is copied, not averaged."""
    dyn = tiny_dynamics()
    dyn.density.register_buffer("mask", torch.tensor([True, False]))
    dyn.density.register_buffer("count", torch.tensor(3))
    res = fit(dyn, objective(), moving_points(256), config=tiny_config(steps=5, ema=0.9), progress=False)
    assert torch.equal(res.model.density.mask, torch.tensor([True, False])) and int(res.model.density.count) == 3
