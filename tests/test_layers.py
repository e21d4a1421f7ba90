"""The package's layers point down only: a module imports jaxsae modules of lower layers (or of its
own package), never of its own layer or above, so there is no import cycle. Command-line entry
points (``__main__.py``) sit on top of everything and are exempt. The README's "How the code is
laid out" draws these layers."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "jaxsae"

LAYERS: list[set[str]] = [
    {"errors"},  # UserError: the one-line errors
    {"io"},  # atomic writes, hashes
    {"distributed", "text", "templates", "chat"},  # processes, corpora, prompt files, the chat client
    {"models", "sae"},  # the LLM ports; the SAEs as pure functions (neither knows the other)
    {"metrics", "features", "select", "train", "analysis"},  # what runs SAEs on the LLM; statistics
    {"judge"},  # the AxBench rating judge (local or API)
    {"autointerp", "steer"},  # the two evaluations
    {"report"},
    {"launch"},  # the study: stages, run folder, configuration tree
]


def layer_of(name: str) -> int:
    for i, names in enumerate(LAYERS):
        if name in names:
            return i
    raise AssertionError(f"jaxsae.{name} is in no layer: add it to LAYERS (and to the README's drawing)")


def imported(path: Path) -> set[str]:
    """The top-level jaxsae modules ``path`` imports (also inside functions)."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and not node.level and node.module and node.module.startswith("jaxsae"):
            parts = node.module.split(".")
            out |= {parts[1]} if len(parts) > 1 else {a.name for a in node.names}
        elif isinstance(node, ast.Import):
            out |= {a.name.split(".")[1] for a in node.names if a.name.startswith("jaxsae.")}
    return out


def test_every_package_is_in_a_layer():
    names = {p.stem if p.is_file() else p.name for p in PKG.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p / "__init__.py").is_file()}
    for name in names:
        layer_of(name)


def test_imports_point_down_only():
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.name == "__main__.py" or rel == Path("__init__.py"):
            continue
        own = rel.parts[0].removesuffix(".py")
        for dep in imported(path) - {own}:
            if layer_of(dep) >= layer_of(own):
                wrong.append(f"jaxsae/{rel} imports jaxsae.{dep} (layer {layer_of(dep)} >= its own {layer_of(own)})")
    assert not wrong, "\n".join(wrong)


def test_models_are_entered_through_their_api():
    """Outside ``jaxsae.models``, code uses the package's public names (``LM``, ``forward``,
    ``prefix_cache`` ...), never its internal modules (the decoder's context, cache layout and
    generation loop stay free to change)."""
    wrong = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG)
        if rel.parts[0] == "models":
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            mods = [node.module] if isinstance(node, ast.ImportFrom) and node.module else \
                [a.name for a in node.names] if isinstance(node, ast.Import) else []
            for m in mods:
                if m.startswith(("jaxsae.models.decoder", "jaxsae.models.generate", "jaxsae.models.score")):
                    wrong.append(f"jaxsae/{rel}:{node.lineno} imports {m}")
    assert not wrong, "\n".join(wrong)
