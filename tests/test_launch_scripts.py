"""launch/ scripts: they parse, and (with fake gcloud / Slurm / python on PATH) hand
`python -m jaxsae.launch` the right arguments and jax.distributed environment."""

from __future__ import annotations

import os
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = ["single_gpu.sh", "multi_gpu.sh", "slurm.sbatch", "tpu_pod.sh"]


def fake(path: Path, body: str) -> None:
    path.write_text("#!/usr/bin/env bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IEXEC)


@pytest.fixture
def fakes(tmp_path):
    """A bin/ with fake gcloud, scontrol, srun and a fake venv python; every call is logged."""
    log = tmp_path / "calls.log"
    bin_ = tmp_path / "bin"
    bin_.mkdir()
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    rec = (f'echo "$(basename "$0") $* | coord=${{JAXSAE_COORDINATOR:-}} n=${{JAXSAE_NUM_PROCESSES:-}} '
           f'id=${{JAXSAE_PROCESS_ID:-}} gpu=${{CUDA_VISIBLE_DEVICES:-}}" >> {log}\n')
    fake(bin_ / "gcloud", rec)
    fake(bin_ / "nvidia-smi", 'printf "GPU 0: H100 (UUID: a)\\nGPU 1: H100 (UUID: b)\\n"\n')
    fake(bin_ / "scontrol", 'printf "gpu-node-7\\ngpu-node-8\\n"\n')
    fake(bin_ / "srun", 'shift; SLURM_PROCID=1 exec "$@"\n')  # drops --kill-on-bad-exit, runs rank 1
    fake(venv / "python", rec)
    env = dict(os.environ, PATH=f"{bin_}:{os.environ['PATH']}", VENV=str(venv.parent), SLURM_JOB_NODELIST="x",
               SLURM_NTASKS="2", SLURM_SUBMIT_DIR=str(ROOT))
    return env, log


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_parses_and_is_executable(name):
    path = ROOT / "launch" / name
    assert os.access(path, os.X_OK)
    subprocess.run(["bash", "-n", str(path)], check=True)


def test_slurm_sets_up_jax_distributed(fakes):
    env, log = fakes
    subprocess.run(["bash", str(ROOT / "launch" / "slurm.sbatch")], check=True, env=dict(env, SWEEP="debug"), timeout=60)
    line = log.read_text().strip()
    assert "python -m jaxsae.launch --sweep debug --out runs/debug" in line
    assert "coord=gpu-node-7:12355 n=2 id=1" in line


def test_tpu_pod_runs_on_every_worker(fakes):
    env, log = fakes
    subprocess.run(["bash", str(ROOT / "launch" / "tpu_pod.sh"), "run", "full", "--train.tokens", "1000"],
                   check=True, env=env, timeout=60)
    line = log.read_text().strip()
    assert line.startswith("gcloud compute tpus tpu-vm ssh jaxsae") and "--worker=all" in line
    assert "JAXSAE_DISTRIBUTED=auto" in line and "-m jaxsae.launch --sweep full --out runs/full --train.tokens 1000" in line
    r = subprocess.run(["bash", str(ROOT / "launch" / "tpu_pod.sh"), "bogus"], env=env, capture_output=True, text=True)
    assert r.returncode == 2 and "usage:" in r.stderr


def test_single_gpu_installs_then_runs(fakes):
    env, log = fakes
    subprocess.run(["bash", str(ROOT / "launch" / "single_gpu.sh"), "debug", "--out", "runs/x"], check=True,
                   env=dict(env, JAX_EXTRA="cuda12"), timeout=60)
    calls = log.read_text().strip().splitlines()
    assert calls[0].startswith("python -m pip install -q -e .")
    assert any("jax[cuda12]" in c for c in calls)
    assert calls[-1].startswith("python -m jaxsae.launch --sweep debug --out runs/x")


def test_multi_gpu_starts_one_process_per_gpu(fakes, tmp_path):
    env, log = fakes
    subprocess.run(["bash", str(ROOT / "launch" / "multi_gpu.sh"), "debug", "--out", "runs/x"], check=True,
                   env=dict(env, LOG_DIR=str(tmp_path / "logs")), timeout=60)
    calls = sorted(log.read_text().strip().splitlines())
    assert len(calls) == 2
    for i, line in enumerate(calls):
        assert line.startswith("python -m jaxsae.launch --sweep debug --out runs/x")
        assert f"coord=localhost:12355 n=2 id={i} gpu={i}" in line
    r = subprocess.run(["bash", str(ROOT / "launch" / "multi_gpu.sh")], env=dict(env, NGPU="0"), capture_output=True, text=True)
    assert r.returncode == 2 and "no GPU" in r.stderr


def test_multi_gpu_stops_the_others_when_one_process_fails(fakes, tmp_path):
    """Process 1 dies at once; process 0 would run for a minute: the script kills it, and returns
    non-zero well before that, with process 1's message in its log."""
    import time

    env, _ = fakes
    venv_python = Path(env["VENV"]) / "bin" / "python"
    pid0 = tmp_path / "pid0"
    fake(venv_python, f'if [ "$JAXSAE_PROCESS_ID" = 1 ]; then sleep 1; echo "process 1: boom" >&2; exit 3; fi\n'
                      f'echo $$ > {pid0}\nexec sleep 60\n')
    t0 = time.monotonic()
    r = subprocess.run(["bash", str(ROOT / "launch" / "multi_gpu.sh"), "debug"], env=dict(env, LOG_DIR=str(tmp_path / "logs")),
                       capture_output=True, text=True, timeout=50)
    assert r.returncode == 1 and time.monotonic() - t0 < 30
    assert "process 1: boom" in (tmp_path / "logs" / "process-1.log").read_text()
    pid = int(pid0.read_text())
    time.sleep(0.2)
    with pytest.raises(ProcessLookupError):  # process 0 was stopped (not left running)
        os.kill(pid, 0)
