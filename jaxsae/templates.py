"""Prompt templates from a user's file, for the steering judge (``judge.templates``) and the
AutoInterp explainer/detector (``autointerp.templates``), so that a user can run AxBench's or
SAEBench's own wording instead of ours.

File format: TOML (or JSON), one string per prompt, written with Python ``str.format``
placeholders (double a literal brace: ``{{``). Any subset of the prompts may be given; the others
keep our wording. Unknown prompt names, unknown placeholders and missing required placeholders are
errors. The file's SHA-256 is recorded in the results and is part of the judge's identity (and of
the API request cache key, which hashes the rendered prompt).
"""

from __future__ import annotations

import hashlib
import json
import string
import tomllib
from pathlib import Path
from typing import Mapping

from jaxsae.errors import UserError

Fields = Mapping[str, tuple[tuple[str, ...], tuple[str, ...]]]
"""prompt name -> (required placeholders, optional placeholders)."""


def file_sha256(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_templates(path: str | Path | None, fields: Fields, setting: str) -> dict[str, str]:
    """The templates of ``path`` ({} for an empty path), checked against ``fields``; any problem is
    a one-line :class:`UserError` naming ``setting`` (e.g. "judge.templates")."""
    if not path:
        return {}
    p = Path(path)
    if not p.is_file():
        raise UserError(f"{setting} = {str(path)!r} is not a file; pass a TOML or JSON file of prompt templates or ''")
    text = p.read_text(encoding="utf-8")
    try:
        data = json.loads(text) if p.suffix == ".json" else tomllib.loads(text)
    except (json.JSONDecodeError, tomllib.TOMLDecodeError) as e:
        raise UserError(f"{setting}: {p} does not parse ({str(e).splitlines()[0]}); fix the file") from None
    if not isinstance(data, dict):
        raise UserError(f"{setting}: {p} must map prompt names to strings")
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise UserError(f"{setting}: {p} names unknown prompt(s) {', '.join(unknown)}; valid: {', '.join(fields)}")
    out = {}
    for name, tpl in data.items():
        if not isinstance(tpl, str):
            raise UserError(f"{setting}: {p}: {name} must be a string, got {type(tpl).__name__}")
        required, optional = fields[name]
        try:
            used = {f for _, f, _, _ in string.Formatter().parse(tpl) if f is not None}
        except ValueError as e:
            raise UserError(f"{setting}: {p}: {name} is not a valid template ({e}); double literal braces as {{{{ }}}}") from None
        bad = sorted(used - set(required) - set(optional))
        if bad:
            raise UserError(f"{setting}: {p}: {name} uses unknown placeholder(s) {', '.join('{' + b + '}' for b in bad)}; "
                            f"allowed: {', '.join('{' + f + '}' for f in (*required, *optional))}")
        missing = [f for f in required if f not in used]
        if missing:
            raise UserError(f"{setting}: {p}: {name} lacks the placeholder(s) {', '.join('{' + m + '}' for m in missing)}")
        out[name] = tpl
    return out


def describe(path: str | Path | None) -> dict | None:
    """{"path", "sha256"} of a template file for the results (None: our own prompts)."""
    return {"path": str(path), "sha256": file_sha256(path)} if path else None
