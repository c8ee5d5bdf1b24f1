import subprocess
import sys

import pytest

from evaluations.engine import build_prompt, label_schema, parse_label

LABELS = ["positive", "negative", "neutral", "very positive", "sci-fi"]


@pytest.mark.parametrize(
    "answer, label",
    [
        ("positive", "positive"),
        ("  Positive\n", "positive"),
        ("NEGATIVE.", "negative"),
        ('"neutral"', "neutral"),
        ("**Neutral**", "neutral"),
        ('{"label": "Negative"}', "negative"),
        ('{"answer": "neutral"}', "neutral"),
        ('```json\n{"label": "positive"}\n```', "positive"),
        ('Sure! {"label": "negative"} is my answer', "negative"),
        ("The sentiment of this text is negative.", "negative"),
        ("Label: very positive", "very positive"),  # the longer label wins over the one inside it
        ("very   Positive!", "very positive"),
        ("It's sci-fi", "sci-fi"),
        ("SCI FI", "sci-fi"),
        ("negative, not positive", "negative"),  # several labels: the first mention wins
        ("", None),
        ("I am not sure.", None),
        ("positively", None),  # whole words only
        ('{"label": "happy"}', None),
        (None, None),
    ],
)
def test_it_parses_labels_from_answers(answer, label):
    assert parse_label(answer, LABELS) == label


def test_prompts_name_the_labels_and_keep_braces_in_the_text():
    prompt = build_prompt("Labels: {labels}\n{text}", text='JSON {"a": {b}}', labels=["x", "y"])
    assert prompt == 'Labels: x, y\nJSON {"a": {b}}'
    assert label_schema(["x", "y"])["properties"]["label"]["enum"] == ["x", "y"]
    assert label_schema(["x"])["required"] == ["label"]


def test_the_engine_imports_without_django():
    code = "import sys, evaluations.engine, evaluations.metrics, inference.ollama; sys.exit('django' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""})
    assert result.returncode == 0, result.stderr
