"""Anchors against the reference libraries (the ``anchors`` extra: sae-lens, dictionary-learning).

- every architecture the trainer exports loads in SAELens (``SAE.load_from_disk``) with the same
  codes and reconstructions as ``jaxsae.sae.load``;
- a folder SAELens itself wrote (each inference architecture, random weights) loads in jaxsae with
  the same codes and reconstructions.

Without the extra the module is skipped on a workstation and fails under CI (``CI=true``), where
``.ci/run`` installs it.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import in_ci

pytestmark = pytest.mark.anchors


def _need(module: str):
    try:
        return __import__(module)
    except ImportError as e:
        msg = f"{module} is not installed ({e}); install the anchors extra: pip install -e '.[test,anchors]'"
        if in_ci():
            pytest.fail(msg, pytrace=False)
        pytest.skip(msg, allow_module_level=True)


torch = _need("torch")
sae_lens = _need("sae_lens")

import jaxsae.sae as S  # noqa: E402
from jaxsae.train import ActivationArray, train_sweep  # noqa: E402
from test_train_sweep import SMALL, SPECS, planted  # noqa: E402


def _saelens_codes(sl, x_nd: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.no_grad():
        f = sl.encode(torch.from_numpy(x_nd))
        return f.numpy(), sl.decode(f).numpy()


def _close(got, want, what):
    scale = max(float(np.abs(want).max()), 1e-6)
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5 * scale, err_msg=what)


def test_every_exported_architecture_loads_in_saelens_with_equal_codes(tmp_path):
    x, _ = planted(n=2000, seed=3)
    train_sweep(SPECS, ActivationArray(x, 128), SMALL, tmp_path / "s", progress=False)
    probe = x[:256]
    kinds = set()
    for spec in SPECS:
        ours = S.load(tmp_path / "s" / spec.name)
        sl = sae_lens.SAE.load_from_disk(str(tmp_path / "s" / spec.name), device="cpu")
        f_sl, xh_sl = _saelens_codes(sl, probe)
        f = np.asarray(ours.encode(probe))
        assert (f != 0).sum() > 0 and (f_sl != 0).sum() == (f != 0).sum(), spec.name
        _close(f, f_sl, f"{spec.name} codes")
        _close(np.asarray(ours.decode(f)), xh_sl, f"{spec.name} reconstruction")
        kinds.add(ours.arch)
    assert kinds == {"standard", "topk", "jumprelu", "gated"}


def _random_state(sl, seed: int):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sl.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * (0.3 if p.ndim > 1 else 0.1))
            if name in ("threshold",):
                p.copy_(p.abs() * 0.5)
            if name == "r_mag":
                p.mul_(0.5)


@pytest.mark.parametrize("arch", ["standard", "topk", "jumprelu", "gated"])
def test_a_folder_saelens_wrote_loads_in_jaxsae(tmp_path, arch):
    d_in, d_sae = 24, 40
    configs = {"standard": sae_lens.StandardSAEConfig, "topk": sae_lens.TopKSAEConfig,
               "jumprelu": sae_lens.JumpReLUSAEConfig, "gated": sae_lens.GatedSAEConfig}
    extra = {"k": 5} if arch == "topk" else {}
    sl = sae_lens.SAE.from_dict({**configs[arch](d_in=d_in, d_sae=d_sae, **extra).to_dict()})
    _random_state(sl, seed=len(arch))
    sl.save_model(str(tmp_path / arch))
    ours = S.load(tmp_path / arch)
    assert ours.arch == arch and (ours.d_in, ours.d_sae) == (d_in, d_sae)
    x = np.random.default_rng(0).normal(size=(64, d_in)).astype(np.float32)
    f_sl, xh_sl = _saelens_codes(sl, x)
    f = np.asarray(ours.encode(x))
    assert (f != 0).any() and ((f != 0) == (f_sl != 0)).all()
    _close(f, f_sl, f"{arch} codes")
    _close(np.asarray(ours.decode(f)), xh_sl, f"{arch} reconstruction")


def test_relu_steps_equal_dictionary_learning_standard_trainer_april_update():
    """Three steps of the ReLU SAE (LR warmup 0 -> 1/2 -> 1, sparsity warmup, clipping, Adam) from
    dictionary_learning's own initialisation and the same batches equal its
    ``StandardTrainerAprilUpdate.update`` to 1e-5 relative."""
    import jax.numpy as jnp

    _need("dictionary_learning")
    from dictionary_learning.trainers.standard import StandardTrainerAprilUpdate

    from jaxsae.sae import ArchConfig
    from jaxsae.train import SAESpec, TrainSettings
    from jaxsae.train.trainer import init_state, make_step

    d, f, steps, l1 = 16, 32, 100, 0.1
    torch.manual_seed(0)
    ref = StandardTrainerAprilUpdate(steps=steps, activation_dim=d, dict_size=f, layer=0, lm_name="x", lr=1e-2,
                                     l1_penalty=l1, warmup_steps=2, sparsity_warmup_steps=3, decay_start=80,
                                     device="cpu", seed=0)
    ae = ref.ae
    st = TrainSettings(d_sae=f, batch=64, steps=steps, lr=1e-2, warmup_steps=2, sparsity_warmup_steps=3,
                       decay_start=0.8, checkpoint_every=0)
    spec = SAESpec("relu", 0, l1)
    r = np.random.default_rng(0)
    xs = [(r.normal(size=(64, d)) + 0.5).astype(np.float32) for _ in range(3)]
    state = init_state([spec], d, st, xs[0], ArchConfig())

    def theirs():
        return {"W_enc": ae.encoder.weight.detach().numpy().T, "b_enc": ae.encoder.bias.detach().numpy(),
                "W_dec": ae.decoder.weight.detach().numpy().T, "b_dec": ae.bias.detach().numpy()}

    start = {k: v.copy() for k, v in theirs().items()}
    state["groups"]["relu"]["params"] = {k: jnp.asarray(v[None].copy()) for k, v in start.items()}
    step = make_step([spec], st, ArchConfig())
    for i, x in enumerate(xs):
        ref.update(i, torch.from_numpy(x))
        state, _ = step(state, jnp.asarray(x))
    want = theirs()
    for k, v in want.items():
        got = np.asarray(state["groups"]["relu"]["params"][k][0])
        assert np.abs(v - start[k]).max() > 1e-3, k  # the steps moved every tensor
        np.testing.assert_allclose(got - start[k], v - start[k], rtol=1e-4, atol=1e-6, err_msg=f"relu {k} update")
        _close(got, v, f"relu {k} after 3 steps")
