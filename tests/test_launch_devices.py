"""The stages' models on a process's local devices: tensor parallel where asked (or by default on
accelerators), one device on CPUs by default, and the same numbers either way."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from conftest import fake_devices_flags

ROOT = Path(__file__).resolve().parents[1]

SCRIPT = r"""
import numpy as np
from jaxsae.errors import UserError
from jaxsae.launch.resources import load_lm, local_mesh

assert local_mesh(0) is None and local_mesh(1) is None  # CPU: one device unless asked
assert dict(local_mesh(2).shape) == {"data": 1, "model": 2}
try:
    local_mesh(3)
    raise SystemExit("3 of 2 devices accepted")
except UserError as e:
    assert "tensor_parallel = 3" in str(e), e
one, two = load_lm("tiny-random-llama", "float32", 1), load_lm("tiny-random-llama", "float32", 2)
assert len(two.params["layers"]["gate_ldm"].sharding.device_set) == 2
tokens = np.arange(3, 3 + 2 * 24, dtype=np.int32).reshape(2, 24)
np.testing.assert_allclose(np.asarray(two.residual(tokens, 1)), np.asarray(one.residual(tokens, 1)), atol=1e-5, rtol=1e-5)
prompts = ["The sea is", "Tell me about rivers."]
assert two.generate_ids(prompts, max_new_tokens=8) == one.generate_ids(prompts, max_new_tokens=8)
print("ok")
"""


def test_tensor_parallel_model_equals_one_device():
    env = dict(os.environ, HF_HUB_OFFLINE="1", PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu",
               XLA_FLAGS=fake_devices_flags(2))
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert r.returncode == 0 and r.stdout.strip().endswith("ok"), (r.stdout[-2000:], r.stderr[-3000:])
