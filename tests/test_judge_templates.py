"""Judge and explainer templates from a user's file (``judge.templates`` / ``autointerp.templates``):
used as written, checked with one-line errors, and hashed into the judge's identity and the
stage's configuration hash; the API judges' sampling settings reach the request."""

from __future__ import annotations

import dataclasses

import pytest

from jaxsae.autointerp import prompts as P
from jaxsae.autointerp.config import AutoInterpConfig
from jaxsae.autointerp.roles import ApiDetector
from jaxsae.errors import UserError
from jaxsae.judge import APIJudge, RatingRequest
from jaxsae.judge.config import JudgeConfig
from jaxsae.judge.rubric import judge_prompt, load_templates, prompt_digest
from jaxsae.launch.config import SweepConfig
from jaxsae.launch.runner import Run
from jaxsae.launch.stages import STAGES

STEER_TOML = '''
concept = """Rate concept {concept} in: {fragment}
Rating: [[score]]"""
fluency = "Fluent? {fragment} -- literal {{braces}}"
'''


class FakeClient:
    model, url = "fake-model", "http://fake"

    def __init__(self):
        self.calls = []

    def chat_many(self, msgs, temperature=0.0, max_tokens=None, **kw):
        self.calls.append((msgs, temperature, max_tokens))
        return ["Rating: [[2]]" for _ in msgs]


def test_steering_templates_replace_ours_and_change_the_judge_identity(tmp_path):
    path = tmp_path / "axbench.toml"
    path.write_text(STEER_TOML)
    t = load_templates(path)
    assert judge_prompt("concept", concept="cats", fragment="meow", templates=t) == "Rate concept cats in: meow\nRating: [[score]]"
    assert judge_prompt("fluency", fragment="ok", templates=t) == "Fluent? ok -- literal {braces}"
    assert judge_prompt("instruction", instruction="I", fragment="F", templates=t) == judge_prompt(
        "instruction", instruction="I", fragment="F")  # not in the file: ours
    assert prompt_digest(templates=t) != prompt_digest()
    client = FakeClient()
    judge = APIJudge(client, temperature=0.7, max_tokens=99, templates=t)
    (r,) = judge.rate([RatingRequest("concept", "dogs", "", "woof")])
    msgs, temperature, max_tokens = client.calls[0]
    assert msgs[0][0]["content"].startswith("Rate concept dogs in: woof") and (temperature, max_tokens) == (0.7, 99)
    assert r.score == 2.0
    assert "temperature=0.7" in judge.describe() and prompt_digest(explain=True, templates=t) in judge.describe()


@pytest.mark.parametrize("text, match", [
    ("concept = 'x {fragment}", "does not parse"),
    ("tone = '{fragment}'", "unknown prompt"),
    ("concept = '{concept} {fragment} {mood}'", r"unknown placeholder.*\{mood\}"),
    ("concept = '{fragment} only'", r"lacks.*\{concept\}"),
    ("fluency = 3", "must be a string"),
    ("fluency = '{fragment'", "not a valid template"),
])
def test_malformed_files_are_one_line_errors(tmp_path, text, match):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(UserError, match=match) as e:
        load_templates(path)
    assert "\n" not in str(e.value) and "judge.templates" in str(e.value)
    with pytest.raises(UserError, match="not a file"):
        load_templates(tmp_path / "missing.toml")
    assert load_templates("") == {}


def test_autointerp_templates_for_explainer_and_detector(tmp_path):
    path = tmp_path / "saebench.json"
    path.write_text('{"explain_system": "SYS", "explain_user": "Texts:\\n{passages}", '
                    '"detect_system": "Pick of {n}, e.g. {example}", "detect_user": "E: {explanation}\\n{passages}", '
                    '"yes_no": "Does {explanation} fire in {passage}?"}')
    t = P.load_templates(path)
    m = P.explanation_messages(["a", "b"], use_demos=True, templates=t)
    assert m == [{"role": "system", "content": "SYS"}, {"role": "user", "content": "Texts:\n1. a\n2. b"}]
    d = P.detection_messages("cats", ["x", "y", "z"], [1, 3], t)
    assert d[0]["content"] == "Pick of 3, e.g. 1, 3" and d[1]["content"] == "E: cats\n1. x\n2. y\n3. z"
    assert P.yes_no_prompt("cats", "meow", t) == "Does cats fire in meow?"
    client = FakeClient()
    cfg = AutoInterpConfig(templates=str(path), api_temperature=0.3)
    ApiDetector(client, cfg).detect(["cats"], [["x", "y"]], [[1]])
    msgs, temperature, _ = client.calls[0]
    assert msgs[0][1]["content"] == "E: cats\n1. x\n2. y" and temperature == 0.3
    bad = tmp_path / "bad.toml"
    bad.write_text("explain_user = 'no passages here'")
    with pytest.raises(UserError, match=r"autointerp.templates.*lacks.*\{passages\}"):
        ApiDetector(client, dataclasses.replace(cfg, templates=str(bad)))


def test_template_file_content_is_part_of_the_stage_hash(tmp_path):
    path = tmp_path / "t.toml"
    path.write_text(STEER_TOML)
    cfg = SweepConfig(judge=JudgeConfig(templates=str(path)))
    run = Run(tmp_path / "run", cfg, STAGES)
    before = run.stage_hash("steer")
    assert run.section_values(STAGES[3])["judge"]["templates_sha256"]
    path.write_text(STEER_TOML.replace("Rate", "Score"))
    assert run.stage_hash("steer") != before
