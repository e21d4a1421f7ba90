"""Shape annotations follow the one alphabet written in jaxsae/__init__.py's docstring.

Every dtype-annotated shape in a docstring or comment of the library (``f32[B, T, D]``,
``i32[F, A]``, ``bool[B, S]``) may use, as single capital letters, only the letters of that table;
lowercase, word-like entries (``d_sae``, ``n_boot``, ``k'``, ``max_new``, digits) are free. The
params leaves' name suffixes use the same letters in lowercase.
"""

from __future__ import annotations

import ast
import io
import re
import tokenize
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "jaxsae"

DTYPES = ("f16", "f32", "f64", "bf16", "i8", "i32", "i64", "u8", "u32", "int", "int8", "int32", "int64",
          "uint8", "uint32", "float", "float16", "float32", "float64", "bool")
ANNOTATION = re.compile(r"(?<![\w.])(?:" + "|".join(sorted(DTYPES, key=len, reverse=True)) + r")\[([^\[\]]*)\]")
LETTER = re.compile(r"(?<![\w'])[A-Z](?![\w'])")
TABLE_ROW = re.compile(r"^  ([A-Z])  (\S.*)$")


def alphabet() -> dict[str, str]:
    """The shape table of jaxsae/__init__.py's docstring: letter -> meaning (the "Shapes" section's
    rows, two-space indented ``X  meaning``)."""
    doc = ast.get_docstring(ast.parse((PACKAGE / "__init__.py").read_text()))
    assert doc and "\nShapes:" in doc, "jaxsae/__init__.py's docstring has no Shapes section"
    table: dict[str, str] = {}
    for line in doc.split("\nShapes:", 1)[1].splitlines():
        m = TABLE_ROW.match(line)
        if m:
            assert m.group(1) not in table, f"letter {m.group(1)} is in the shape table twice"
            table[m.group(1)] = m.group(2)
    return table


def _texts(path: Path):
    """(line, text) of every comment and string-expression statement (docstrings, attribute
    docstrings) of a module."""
    src = path.read_text()
    for tok in tokenize.generate_tokens(io.StringIO(src).readline):
        if tok.type == tokenize.COMMENT:
            yield tok.start[0], tok.string
    for node in ast.walk(ast.parse(src)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            for i, line in enumerate(ast.get_source_segment(src, node).splitlines()):
                yield node.lineno + i, line


def strays(path: Path, letters) -> list[tuple[int, str, str]]:
    """(line, annotation, letter) of each annotation in ``path`` that uses a capital letter outside
    ``letters``."""
    return sorted((line, m.group(0), bad) for line, text in _texts(path) for m in ANNOTATION.finditer(text)
                  for entry in m.group(1).split(",") for bad in LETTER.findall(entry) if bad not in letters)


def test_the_table_is_written_once_with_one_meaning_per_letter():
    table = alphabet()  # a letter listed twice fails here
    assert len(table) > 10 and all(meaning.strip() for meaning in table.values()), table


def test_every_shape_annotation_uses_the_table():
    letters = set(alphabet())
    files = sorted(PACKAGE.rglob("*.py"))
    found = sum(len(ANNOTATION.findall(text)) for f in files for _, text in _texts(f))
    assert len(files) > 50 and found > 100, (len(files), found)  # the scan sees the annotations
    bad = [f"{f.relative_to(ROOT)}:{line}: {ann} ({letter} is not in the shape table)"
           for f in files for line, ann, letter in strays(f, letters)]
    assert not bad, "shape letters outside the table of jaxsae/__init__.py:\n" + "\n".join(bad)


def test_the_scan_finds_a_stray_letter(tmp_path):
    """The checker itself: a stray letter in a comment or a docstring is found, with its line; the
    table's letters and word-like entries are not."""
    probe = tmp_path / "probe.py"
    probe.write_text('def f(x):\n    """f32[B, T, D] and i32[F, A] and int32[N, {n}] and f32[d_sae, k\'].\n\n'
                     '    bf16[Y]."""\n    return x  # bool[B, S], then f32[Z, D]\n')
    assert strays(probe, set(alphabet())) == [(4, "bf16[Y]", "Y"), (5, "f32[Z, D]", "Z")]


def test_params_leaf_suffixes_use_the_table():
    """The decoder's params leaves are named ``<what>_<axes>``, one lowercase table letter per axis
    (the sharding rules read these suffixes)."""
    from jaxsae.models.config import ModelConfig
    from jaxsae.models.weights import SPLIT_LETTERS, param_shapes

    letters = {c.lower() for c in alphabet()}
    assert set(SPLIT_LETTERS) <= letters
    cfg = ModelConfig(family="gemma2", vocab_size=32, d_model=8, n_layers=2, n_heads=4, n_kv_heads=2, head_dim=2,
                      d_ff=16, rope_theta=1e4, rms_eps=1e-6, query_scale=0.5, windows=(4, 8), tie_embeddings=False,
                      qkv_bias=True, sandwich_norms=True)
    shapes = param_shapes(cfg)
    leaves = {k: v for k, v in shapes.items() if k != "layers"} | shapes["layers"]
    assert len(leaves) == 17
    for name, shape in leaves.items():
        suffix = name.rsplit("_", 1)[1]
        assert len(suffix) == len(shape) and set(suffix) <= letters, (name, shape)
