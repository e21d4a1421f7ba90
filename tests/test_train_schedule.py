"""The LR and sparsity-coefficient schedules against hand-computed values and a transcription of
dictionary_learning's ``get_lr_schedule`` / ``get_sparsity_warmup_fn`` (``trainers/trainer.py``;
its ``LambdaLR`` is stepped after each update, so the update of step t uses the value at t)."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxsae.train import SAESpec, TrainSettings
from jaxsae.train.trainer import lr_at, sparsity_scale_at


def reference_lr(step: int, total: int, warmup: int, decay_start: int | None) -> float:
    """dictionary_learning's lr_schedule(step) (no resampling), written out."""
    if step < warmup:
        return step / warmup
    if decay_start is not None and step >= decay_start:
        return (total - step) / (total - decay_start)
    return 1.0


def reference_sparsity(step: int, warmup: int | None) -> float:
    return 1.0 if not warmup else min(step / warmup, 1.0)


def lrs(st: TrainSettings, steps) -> np.ndarray:
    return np.asarray(jax.vmap(lambda s: lr_at(s, st))(jnp.asarray(steps)))


def test_lr_warmup_constant_and_decay_from_80_percent_by_hand():
    st = TrainSettings(steps=100, lr=2.0, warmup_steps=10, decay_start=0.8)
    got = dict(zip(range(100), lrs(st, np.arange(100))))
    want = {0: 0.0, 1: 0.2, 5: 1.0, 9: 1.8,  # warmup: lr * step / 10, 0 at the first update
            10: 2.0, 50: 2.0, 79: 2.0,  # constant
            80: 2.0, 81: 1.9, 90: 1.0, 99: 0.1}  # decay: lr * (100 - step) / 20 from step 80
    for step, lr in want.items():
        assert got[step] == pytest.approx(lr, rel=1e-6, abs=1e-7), step


@pytest.mark.parametrize("steps,warmup,frac", [(100, 10, 0.8), (37, 3, 0.8), (10, 1, 0.75), (50, 0, 0.5),
                                               (40, 4, 1.0), (1000, 100, 0.29)])
def test_lr_schedule_equals_dictionary_learning(steps, warmup, frac):
    st = TrainSettings(steps=steps, lr=1.0, warmup_steps=warmup, decay_start=frac)
    decay = int(steps * frac) if frac < 1.0 else None  # the demo config's int(steps * fraction)
    want = [reference_lr(t, steps, warmup, decay) for t in range(steps)]
    np.testing.assert_allclose(lrs(st, np.arange(steps)), want, rtol=1e-6, atol=1e-7)


def test_sparsity_warmup_by_hand_and_against_dictionary_learning():
    st = TrainSettings(sparsity_warmup_steps=20)
    got = [float(sparsity_scale_at(t, st)) for t in (0, 1, 5, 19, 20, 21, 500)]
    assert got == pytest.approx([0.0, 0.05, 0.25, 0.95, 1.0, 1.0, 1.0])
    for w in (0, 3, 7):
        st = TrainSettings(sparsity_warmup_steps=w)
        assert [float(sparsity_scale_at(t, st)) for t in range(12)] == pytest.approx(
            [reference_sparsity(t, w) for t in range(12)])


def test_the_first_update_has_lr_0_and_moves_nothing():
    """LR 0 at step 0 (not lr / warmup): a ReLU SAE's parameters are unchanged by the first update,
    and the trainer logs the schedule's LR."""
    from jaxsae.sae import ArchConfig
    from jaxsae.train.trainer import init_state, make_step

    x = np.random.default_rng(0).normal(size=(64, 16)).astype(np.float32)
    st = TrainSettings(d_sae=24, batch=64, steps=20, lr=1e-2, warmup_steps=4, sparsity_warmup_steps=4)
    specs = [SAESpec("relu", 0, 0.1)]
    state = init_state(specs, 16, st, x, ArchConfig())
    before = jax.tree.map(np.asarray, state["groups"]["relu"]["params"])
    step = make_step(specs, st, ArchConfig())
    state, met = step(state, jnp.asarray(x))
    after = jax.tree.map(np.asarray, state["groups"]["relu"]["params"])
    for k in before:
        np.testing.assert_array_equal(before[k], after[k], err_msg=k)
    assert float(met["relu"]["lr"][0]) == 0.0
    state, met = step(state, jnp.asarray(x))
    assert float(met["relu"]["lr"][0]) == pytest.approx(1e-2 / 4)
    assert not np.array_equal(before["W_enc"], np.asarray(state["groups"]["relu"]["params"]["W_enc"]))
