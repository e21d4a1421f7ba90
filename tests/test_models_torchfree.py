"""The library never imports torch: not on import, not in ``load_model`` (a checkpoint folder or
the GGUF alias, tokenizer included). Tokenizers are the ones AutoTokenizer would give."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import pytest
from transformers import AutoTokenizer

from jaxsae.models import hub

MODULES = [
    "jaxsae", "jaxsae.models", "jaxsae.models.nnx", "jaxsae.models.__main__", "jaxsae.sae", "jaxsae.train",
    "jaxsae.features", "jaxsae.judge", "jaxsae.steer", "jaxsae.select", "jaxsae.autointerp", "jaxsae.analysis",
    "jaxsae.report", "jaxsae.launch",
]

_FRESH = textwrap.dedent(
    """
    import importlib, sys
    for m in sys.argv[2].split(","):
        importlib.import_module(m)
        assert "torch" not in sys.modules, "importing " + m + " imported torch"
    from jaxsae.models import load_model
    for source in (sys.argv[1], "smollm2-135m-instruct"):
        lm = load_model(source)
        lm.logits(lm.encode(["Hi there"])[0])
        assert "torch" not in sys.modules, "load_model(" + source + ") imported torch"
    print("TORCH-FREE", type(lm.tokenizer).__name__)
    # transformers' own state is untouched: torch models still load in this process afterwards
    import torch, transformers
    transformers.AutoModelForCausalLM.from_pretrained(sys.argv[1])
    print("OK")
    """
)


def test_import_and_load_model_do_not_import_torch(tiny_dirs, tmp_path):
    env = dict(os.environ, JAXSAE_CACHE=str(tmp_path / "cache"), JAX_PLATFORMS="cpu")  # fresh GGUF conversion
    r = subprocess.run([sys.executable, "-c", _FRESH, str(tiny_dirs("llama")), ",".join(MODULES)], env=env,
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and "TORCH-FREE" in r.stdout and "OK" in r.stdout, r.stdout[-2000:] + r.stderr[-3000:]


TEXTS = ["Hello world!", " two  spaces,\ttabs\n\nand newlines", "<|im_start|>user\nhi<|im_end|>", "日本語 émoji 🙂 1234"]


def _assert_same_tokenizer(ours, ref):
    assert type(ours) is type(ref)
    for t in TEXTS:
        assert ours(t)["input_ids"] == ref(t)["input_ids"]
        assert ours.decode(ref(t)["input_ids"]) == ref.decode(ref(t)["input_ids"])
    for k in ("bos_token", "eos_token", "pad_token", "unk_token", "eos_token_id", "all_special_tokens", "chat_template"):
        assert getattr(ours, k) == getattr(ref, k), k
    if ref.chat_template:
        msgs = [{"role": "user", "content": "Hi there"}]
        assert ours.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) == ref.apply_chat_template(
            msgs, tokenize=False, add_generation_prompt=True)


def test_gguf_tokenizer_equals_autotokenizer(tmp_path, monkeypatch):
    monkeypatch.setenv("JAXSAE_CACHE", str(tmp_path))
    path = hub.smollm2_gguf()
    ref = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    _assert_same_tokenizer(hub.load_tokenizer("gguf", path), ref)  # converted
    _assert_same_tokenizer(hub.load_tokenizer("gguf", path), ref)  # from the cache


@pytest.mark.parametrize("model_type,declared", [
    ("llama", None), ("llama", "GPT2Tokenizer"), ("llama", "LlamaTokenizerFast"), ("llama", "PreTrainedTokenizerFast"),
    ("qwen2", "GPT2Tokenizer"), ("qwen2", None), ("gemma2", "TokenizersBackend"), ("gemma2", None),
])
def test_folder_tokenizer_class_as_autotokenizer(tiny_dirs, tmp_path, model_type, declared):
    path = tmp_path / "m"
    shutil.copytree(tiny_dirs("llama"), path)
    cfg = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps(cfg | {"model_type": model_type}))
    tc = json.loads((path / "tokenizer_config.json").read_text())
    tc.pop("tokenizer_class", None)
    if declared:
        tc["tokenizer_class"] = declared
    (path / "tokenizer_config.json").write_text(json.dumps(tc))
    _assert_same_tokenizer(hub.load_tokenizer("hf", path), AutoTokenizer.from_pretrained(path))
