"""report/features.html from a synthetic run folder in the stages' formats: its rows and values,
escaping of model text, forgiving reads, and, rendered in headless Chromium (Debian's
``chromium``; installed when missing under CI=true, else the test is skipped), the table read
back from the DOM in its default order and sorted by a score."""

from __future__ import annotations

import html.parser
import io
import json
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from jaxsae.report.features import COLUMNS, FeaturesPageSettings, features_page, render_page, sae_rows

EVIL = '<img src=x onerror="document.title=\'pwned\'"><script>document.title="pwned"</script> & co'
SAES = ("m/sweep/relu-a", "m/sweep/topk-b")


def _sae(run: Path, rel: str, latents: dict[int, float], dtc: dict[int, float], steered: dict[int, float]):
    d = run / rel
    (d / "steering").mkdir(parents=True)
    recs = [{"latent": f, "in_concept100": True, "explanation": EVIL if f == 7 else f"things {f}", "score": s,
             "generation": [{"kind": "top", "max_act": 3.0 - k, "text": f"a <<b{f}>> c{k} <<d>>"} for k in range(7)]}
            for f, s in latents.items()]
    (d / "autointerp.json").write_text(json.dumps({"summary": {"mu": 0.5}, "concept100": sorted(latents),
                                                   "latents": recs}))
    feats = np.arange(16)
    buf = io.BytesIO()
    np.savez(buf, features=feats, delta_tc=np.array([dtc.get(int(f), 0.0) for f in feats], np.float32),
             output_score=np.full(16, 0.25, np.float32))
    (d / "dtc.npz").write_bytes(buf.getvalue())
    lines = []
    for f, hm in steered.items():
        gens = [{"split": "dev", "factor": 1.0, "instruction": "dev q", "output": "dev out", "concept_score": 0.0,
                 "instruction_score": 0.0, "fluency_score": 0.0, "hm": 0.0},
                {"split": "test", "factor": 4.0, "instruction": "Say hi", "output": EVIL if f == 7 else f"out {f}",
                 "concept_score": 1.5, "instruction_score": 1.0, "fluency_score": 0.5, "hm": hm}]
        lines.append(json.dumps({"feature": f, "concept": f"concept {f}", "factor": 4.0, "test_score": hm,
                                 "generations": gens}))
    (d / "steering" / "concepts.jsonl").write_text("\n".join(lines) + "\n")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    run = tmp_path_factory.mktemp("run")
    _sae(run, SAES[0], {3: 0.5, 7: 0.9, 9: 0.2}, {3: 0.1, 7: -0.4, 9: 0.3}, {3: 1.2, 7: 0.4})
    _sae(run, SAES[1], {2: 0.7, 5: 0.6}, {2: 0.05, 5: 0.2}, {5: 1.8, 11: 0.9})  # 11: steered, not in CONCEPT
    (run / "results.json").write_text(json.dumps({"sweep": "synthetic", "records": [
        {"model": "m", "architecture": "relu", "level_label": "L0≈20", "sae_dir": SAES[0]},
        {"model": "m", "architecture": "topk", "level_label": "L0=8", "sae_dir": SAES[1]},
        {"model": "m", "architecture": "gone", "sae_dir": "m/sweep/missing"}]}))
    return run


def test_rows(run_dir):
    rows = sae_rows(run_dir, {"sae_dir": SAES[1]}, run_dir / SAES[1], FeaturesPageSettings(n_windows=3))
    assert [r["latent"] for r in rows] == [2, 5, 11]
    r5 = rows[1]
    assert (r5["autointerp"], r5["dtc"], r5["output_score"], r5["factor"], r5["steer_score"]) == pytest.approx((0.6, 0.2, 0.25, 4.0, 1.8))
    assert (r5["concept"], r5["instruction"], r5["fluency"], r5["generation"]) == (1.5, 1.0, 0.5, "out 5")
    assert len(r5["windows"]) == 3 and r5["windows"][0] == ("a <<b5>> c0 <<d>>", 3.0)
    assert rows[0]["factor"] is None and rows[0]["generation"] is None  # not steered
    assert rows[2]["explanation"] is None and rows[2]["autointerp"] is None and rows[2]["steer_score"] == 0.9
    no_steered = sae_rows(run_dir, {"sae_dir": SAES[1]}, run_dir / SAES[1], FeaturesPageSettings(include_steered=False))
    assert [r["latent"] for r in no_steered] == [2, 5]


def test_page_is_self_contained_and_escaped(run_dir, tmp_path):
    path = features_page(run_dir)
    assert path == run_dir / "report" / "features.html"
    text = path.read_text()
    assert "<script>document" not in text and "<img" not in text and "&lt;script&gt;" in text
    assert "<mark>b7</mark>" in text and "&lt;&lt;" not in text  # highlight marks become <mark>
    assert not any(s in text for s in ("http://", "https://", "src=\"", "<link"))  # nothing fetched
    assert text.count("<tr data-i=") == 6
    # a folder without results.json, files missing or broken: empty cells, no error
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / SAES[0], bare / "x")
    (bare / "x" / "dtc.npz").write_bytes(b"broken")
    (bare / "x" / "steering" / "concepts.jsonl").write_text("{torn")
    page = features_page(bare).read_text()
    assert page.count("<tr data-i=") == 3 and 'data-v=""' in page
    assert render_page([]).count("<tr data-i=") == 0


# ------------------------------------------------------------------------------ headless Chromium

def _chromium() -> str:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None and os.environ.get("CI") == "true":
        subprocess.run(["apt-get", "update"], check=True, capture_output=True)
        subprocess.run(["apt-get", "install", "-y", "chromium"], check=True, capture_output=True)
        exe = shutil.which("chromium")
    if exe is None:
        pytest.skip("headless Chromium not found: `apt-get install -y chromium` (CI=true installs it)")
    return exe


class _Table(html.parser.HTMLParser):
    """Rows of table#features: (data-sae, data-latent, {column key: data-v}), and the table's attributes."""

    def __init__(self):
        super().__init__()
        self.rows, self.table, self.col, self.title, self._in_title = [], {}, 0, "", False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "table" and a.get("id") == "features":
            self.table = a
        elif tag == "tr" and "data-i" in a:
            self.rows.append((a["data-sae"], int(a["data-latent"]), {}))
            self.col = 0
        elif tag == "td" and self.rows:
            if "data-v" in a:
                self.rows[-1][2][COLUMNS[self.col][0]] = float(a["data-v"]) if a["data-v"] else None
            self.col += 1
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag):
        self._in_title = self._in_title and tag != "title"

    def handle_data(self, data):
        if self._in_title:
            self.title += data


def _dom(exe: str, path: Path, query: str = "") -> _Table:
    r = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", path.as_uri() + query],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    t = _Table()
    t.feed(r.stdout)
    return t


def test_page_in_chromium(run_dir):
    exe = _chromium()
    path = features_page(run_dir)
    t = _dom(exe, path)
    assert t.title == "Features of synthetic"  # the injected script did not run
    assert [(s, f) for s, f, _ in t.rows] == [(SAES[0], 3), (SAES[0], 7), (SAES[0], 9),
                                              (SAES[1], 2), (SAES[1], 5), (SAES[1], 11)]
    assert "data-sorted" not in t.table
    assert t.rows[1][2]["dtc"] == pytest.approx(-0.4) and t.rows[4][2]["steer_score"] == 1.8

    t = _dom(exe, path, "?sort=dtc&dir=desc")
    assert t.table.get("data-sorted") == "dtc:desc"
    dtc = [v["dtc"] for _, _, v in t.rows if v["dtc"] is not None]
    assert dtc == sorted(dtc, reverse=True) and len(dtc) == 6
    assert [f for _, f, _ in t.rows][:2] == [9, 5]

    t = _dom(exe, path, "?sort=steer_score&dir=asc")
    scores = [v["steer_score"] for _, _, v in t.rows]
    assert scores == [0.4, 0.9, 1.2, 1.8, None, None]  # missing values last, in page order
    assert [f for _, f, _ in t.rows][-2:] == [9, 2]
