"""The step loop without host syncs: the prefetch thread (order, errors, no leaked threads), a
steady-state sweep step under ``jax.transfer_guard("disallow")``, NaN/inf found at the next check
(every ``log_every`` steps and before every checkpoint) with the first bad step named."""

from __future__ import annotations

import threading
import time

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.errors import UserError
from jaxsae.sae import ArchConfig
from jaxsae.train import ActivationArray, SAESpec, TrainSettings, train_sweep
from jaxsae.train.prefetch import Prefetcher
from test_train_sweep import PoisonedAt


def _prefetch_threads():
    return [t for t in threading.enumerate() if t.name == "jaxsae-prefetch"]


def test_prefetcher_yields_every_step_in_order_ahead_of_the_consumer():
    made = []

    def make(step):
        made.append(step)
        return np.full(3, step)

    with Prefetcher(make, range(5, 12), depth=2) as it:
        got = []
        for step, x in it:
            if step == 5:
                deadline = time.time() + 5
                while len(made) < 4 and time.time() < deadline:  # 5 taken, 2 queued, 1 being made
                    time.sleep(0.01)
                assert made == [5, 6, 7, 8]  # ahead, but never more than depth + 1
            got.append((step, x.tolist()))
    assert got == [(s, [s] * 3) for s in range(5, 12)]
    assert not _prefetch_threads()


def test_prefetcher_raises_the_error_at_its_step_and_leaks_no_thread():
    def make(step):
        if step == 3:
            raise OSError("disk gone")
        return step

    seen = []
    with pytest.raises(OSError, match="disk gone"):
        with Prefetcher(make, range(10)) as it:
            for step, _ in it:
                seen.append(step)
    assert seen == [0, 1, 2]
    assert not _prefetch_threads()
    # a consumer that stops early (an error of its own) stops the producer too
    with pytest.raises(RuntimeError):
        with Prefetcher(lambda s: s, range(10**6), depth=1) as it:
            for step, _ in it:
                if step == 2:
                    raise RuntimeError("consumer failed")
    assert not _prefetch_threads()


def test_a_steady_state_sweep_step_transfers_nothing_implicitly():
    from jaxsae.train.trainer import init_state, make_step

    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 16)).astype(np.float32)
    specs = [SAESpec("topk", 0, 4.0), SAESpec("topk", 1, 6.0), SAESpec("jumprelu", 0, 4.0), SAESpec("gated", 0, 0.03)]
    st = TrainSettings(d_sae=32, batch=64, steps=20).effective()
    cfg = ArchConfig(dead_tokens=64)  # latents can be dead: the AuxK branch runs too
    state = init_state(specs, 16, st, x, cfg)
    step = make_step(specs, st, cfg)
    x_dev = jax.device_put(x)
    state, _ = step(state, x_dev)  # compiles
    with jax.transfer_guard("disallow"):
        for _ in range(3):
            state, met = step(state, x_dev)
    assert np.isfinite(np.asarray(met["topk"]["loss"])).all()
    with pytest.raises(Exception, match="[Dd]isallowed"):  # the guard does catch a host read
        with jax.transfer_guard("disallow"):
            step(state, x)  # a numpy batch: an implicit host-to-device copy


def test_first_bad_step_names_the_earliest_step():
    from jaxsae.train.trainer import first_bad_step

    specs = [SAESpec("topk", 0, 4.0), SAESpec("relu", 0, 0.1)]

    def met(topk_loss, relu_ok=True):
        return {"topk": {"loss": jnp.asarray([topk_loss]), "_params_finite": jnp.asarray([True]), "l0": jnp.ones(1)},
                "relu": {"loss": jnp.ones(1), "_params_finite": jnp.asarray([relu_ok])}}

    assert first_bad_step([(7, met(1.0)), (8, met(2.0))], specs) is None
    assert first_bad_step([(7, met(1.0)), (8, met(1.0, relu_ok=False)), (9, met(np.nan))], specs) == (
        "relu-l10.1", "parameters", 8)
    assert first_bad_step([], specs) is None


def test_a_nan_between_checks_is_caught_before_the_next_checkpoint(tmp_path):
    """log_every longer than the run: the NaN of step 23 is found when the step-30 checkpoint is
    due, named with its own step, and that checkpoint is not written."""
    x = np.random.default_rng(4).normal(size=(2000, 16)).astype(np.float32)
    st = TrainSettings(d_sae=32, batch=128, steps=40, lr=1e-3, checkpoint_every=10, log_every=100,
                       warmup_steps=5, sparsity_warmup_steps=10)
    specs = [SAESpec("relu", 0, 0.03), SAESpec("topk", 0, 4.0)]
    with pytest.raises(UserError) as e:
        train_sweep(specs, PoisonedAt(x, 128, 23), st, tmp_path / "s", progress=False)
    msg = str(e.value)
    assert "at step 23" in msg and "checkpoint (step 20)" in msg, msg
    assert (tmp_path / "s" / "checkpoints" / "20").is_dir() and not (tmp_path / "s" / "checkpoints" / "30").exists()
    assert not _prefetch_threads()


def test_the_loop_reads_the_health_of_the_steps_once_per_log_interval(tmp_path, monkeypatch):
    import jaxsae.train.run as run

    calls = []
    real = run.first_bad_step

    def spy(pending, specs):
        calls.append([s for s, _ in pending])
        return real(pending, specs)

    monkeypatch.setattr(run, "first_bad_step", spy)
    x = np.random.default_rng(1).normal(size=(1000, 16)).astype(np.float32)
    st = TrainSettings(d_sae=32, batch=100, steps=25, checkpoint_every=0, log_every=10)
    train_sweep([SAESpec("topk", 0, 4.0)], ActivationArray(x, 100), st, tmp_path / "s", progress=False)
    assert calls == [list(range(0, 10)), list(range(10, 20)), list(range(20, 25))]
