"""benchmarks/scale.py's HLO reading: collective bytes of known programs (a hand-written module
with a while loop and a conditional; a compiled all-reduce of known size on 4 fake devices)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))

from scale import collective_bytes, shape_bytes  # noqa: E402
from conftest import fake_devices_flags  # noqa: E402

HLO = textwrap.dedent(
    """
    HloModule m, entry_computation_layout={(f32[8,4]{1,0})->f32[8,4]{1,0}}

    %add (a: f32[], b: f32[]) -> f32[] {
      %a = f32[] parameter(0)
      %b = f32[] parameter(1)
      ROOT %s = f32[] add(%a, %b)
    }

    %body (p: (s32[], f32[8,4])) -> (s32[], f32[8,4]) {
      %p = (s32[], f32[8,4]{1,0}) parameter(0)
      %x = f32[8,4]{1,0} get-tuple-element(%p), index=1
      %ar = f32[8,4]{1,0} all-reduce(%x), channel_id=1, replica_groups={{0,1,2,3}}, use_global_device_ids=true, to_apply=%add
      %i = s32[] get-tuple-element(%p), index=0
      ROOT %t = (s32[], f32[8,4]{1,0}) tuple(%i, %ar)
    }

    %cond (p: (s32[], f32[8,4])) -> pred[] {
      %p = (s32[], f32[8,4]{1,0}) parameter(0)
      ROOT %c = pred[] constant(true)
    }

    %small (x: f32[8,4]) -> f32[8,4] {
      %x = f32[8,4]{1,0} parameter(0)
      %g = f32[32,4]{1,0} all-gather(%x), channel_id=2, replica_groups=[1,4]<=[4], dimensions={0}
      ROOT %r = f32[8,4]{1,0} slice(%g), slice={[0:8], [0:4]}
    }

    %big (x: f32[8,4]) -> f32[8,4] {
      %x = f32[8,4]{1,0} parameter(0)
      ROOT %ar2 = (f32[8,4]{1,0}, bf16[16]{0}) all-reduce(%x, %x), channel_id=3, replica_groups={{0,1},{2,3}}, to_apply=%add
    }

    ENTRY %main (x: f32[8,4]) -> f32[8,4] {
      %x = f32[8,4]{1,0} parameter(0)
      %w = (s32[], f32[8,4]{1,0}) while(%t0), condition=%cond, body=%body, backend_config={"known_trip_count":{"n":"3"}}
      %k = (f32[8,4]{1,0}) conditional(%pr, %x, %x), branch_computations={%small, %big}
      ROOT %y = f32[8,4]{1,0} copy(%x)
    }
    """
)


def test_shape_bytes_reads_arrays_and_tuples():
    assert shape_bytes("f32[8,4]{1,0}") == 128
    assert shape_bytes("(f32[8,4]{1,0}, bf16[16]{0}, pred[])") == 128 + 32 + 1
    assert shape_bytes("s32[]") == 4


def test_while_bodies_count_per_trip_and_conditionals_by_the_larger_branch():
    got = collective_bytes(HLO)
    # while: 3 trips x f32[8,4] (128 B) over groups of 4 -> wire 2*3/4 each
    # conditional: the all-gather branch (f32[32,4] = 512 B) beats the all-reduce one (128 + 32 B)
    assert got["all-reduce"] == {"bytes": 3 * 128, "wire": 3 * 128 * 1.5}
    assert got["all-gather"] == {"bytes": 512, "wire": 512 * 0.75}
    assert got["reduce-scatter"]["bytes"] == 0 and got["collective-permute"]["bytes"] == 0


_REAL = textwrap.dedent(
    """
    import sys, jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, sys.argv[1])
    from scale import collective_bytes
    from jax.sharding import Mesh, NamedSharding, PartitionSpec as P
    mesh = Mesh(np.array(jax.devices()), ("feat",))
    a = jax.ShapeDtypeStruct((128, 64), jnp.float32, sharding=NamedSharding(mesh, P(None, "feat")))
    w = jax.ShapeDtypeStruct((64, 32), jnp.float32, sharding=NamedSharding(mesh, P("feat", None)))
    c = jax.jit(lambda a, w: a @ w, out_shardings=NamedSharding(mesh, P())).lower(a, w).compile()
    print(collective_bytes(c.as_text())["all-reduce"])
    """
)


def test_a_compiled_latent_sharded_matmul_all_reduces_its_partial_sums():
    env = dict(os.environ, XLA_FLAGS=fake_devices_flags(4), JAX_PLATFORMS="cpu")
    r = subprocess.run([sys.executable, "-c", _REAL, str(ROOT / "benchmarks")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    # [128, 32] f32 partial sums over 4 devices: 16 KiB, ring wire 2 * 3/4 of it
    assert r.stdout.strip().splitlines()[-1] == str({"bytes": 128 * 32 * 4.0, "wire": 128 * 32 * 4 * 1.5})


def test_the_tpu_target_without_libtpu_names_the_install(monkeypatch, tmp_path):
    import importlib.util

    import pytest
    import scale

    monkeypatch.setattr(scale, "ROOT", tmp_path)  # no .venv/libtpu there
    monkeypatch.setenv("JAXSAE_LIBTPU", str(tmp_path / "nowhere"))
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None)
    with pytest.raises(SystemExit, match=r"needs libtpu .*pip install --no-deps --target \.venv/libtpu 'libtpu"):
        scale.libtpu_path()
    (tmp_path / "site" / "libtpu").mkdir(parents=True)
    monkeypatch.setenv("JAXSAE_LIBTPU", str(tmp_path / "site"))
    assert scale.libtpu_path() == str(tmp_path / "site")
