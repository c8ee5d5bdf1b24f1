"""The dataset page: records rendered through the demo base's chat template with the trained tokens marked,
the token-length histogram for that base, and the seeded split into train and test datasets."""

import html
import json
import re

import pytest

from jobs.models import Dataset
from tests.factories import calling_turn, function_tool, tool_call, tool_result

pytestmark = pytest.mark.django_db

CHAT = [
    {
        "messages": [
            {"role": "system", "content": "Answer with a city."},
            {"role": "user", "content": "Capital of France?"},
            {"role": "assistant", "content": "Paris.", "weight": 0},
            {"role": "user", "content": "And of Spain?"},
            {"role": "assistant", "content": "Madrid."},
        ]
    },
    {
        "messages": [
            {"role": "user", "content": "Capital of Ireland? " * 12},
            {"role": "assistant", "content": "Dublin."},
        ]
    },
]

TOOLS = [
    {
        "tools": [function_tool("get_capital", "country")],
        "messages": [
            {"role": "user", "content": "Capital of France?"},
            calling_turn(tool_call("c1", "get_capital", {"country": "FR"})),
            tool_result("c1", "Paris"),
            {"role": "assistant", "content": "Paris."},
        ],
    }
]


@pytest.fixture(scope="session")
def built_demo_base(tmp_path_factory):
    pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
    pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
    from trainers.demo_base import build_demo_base

    return build_demo_base(tmp_path_factory.mktemp("page-bases") / "demo-base", seed=0)


@pytest.fixture
def demo_base_here(settings, built_demo_base):
    settings.DEMO_BASE_DIR = built_demo_base
    return built_demo_base


def spans(page: str) -> list[tuple[str, bool]]:
    """(token text, trained) of every token span the page shows, in order."""
    found = re.findall(r'<span class="tok( trained)?">(.*?)</span>', page, flags=re.S)
    return [(html.unescape(text), bool(trained)) for trained, text in found]


def test_the_page_names_the_format_and_task_and_shows_records_as_the_trainer_sees_them(
    alice_browser, alice, make_dataset, demo_base_here
):
    from transformers import AutoTokenizer

    dataset = make_dataset(alice, rows=CHAT, filename="chat.jsonl")
    response = alice_browser.get(f"/datasets/{dataset.id}/", {"records": 1})
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-format="openai_chat"' in page and "OpenAI chat" in page and 'data-task="generation"' in page
    assert "Labels (" not in page  # a generation dataset has no labels to show
    tokens = spans(page)
    tokenizer = AutoTokenizer.from_pretrained(demo_base_here, local_files_only=True)
    rendered = tokenizer.apply_chat_template(CHAT[0]["messages"], tokenize=False)
    assert "".join(text for text, _ in tokens) == rendered
    assert len(tokens) == len(tokenizer(rendered, add_special_tokens=False)["input_ids"])
    # Only the weight-1 answer is trained: the weight-0 one, the system prompt and the questions are context.
    assert "".join(text for text, trained in tokens if trained) == "Madrid.<|im_end|>\n"


def test_a_tool_calling_record_shows_its_call_trained_and_the_result_as_context(
    alice_browser, alice, make_dataset, demo_base_here
):
    dataset = make_dataset(alice, rows=TOOLS, filename="tools.jsonl")
    page = alice_browser.get(f"/datasets/{dataset.id}/", {"records": 1}).content.decode()
    tokens = spans(page)
    trained = "".join(text for text, is_trained in tokens if is_trained)
    assert trained == (
        '<tool_call>\n{"name": "get_capital", "arguments": {"country": "FR"}}\n</tool_call><|im_end|>\n'
        "Paris.<|im_end|>\n"
    )
    context = "".join(text for text, is_trained in tokens if not is_trained)
    assert '<tools>\n{"type": "function", "function": {"name": "get_capital"' in context
    assert "<|im_start|>tool\nParis<|im_end|>\n" in context
    assert "refused by the chat template" not in page and 'class="field-error"' not in page
    assert 'data-over-max-length="0"' in page
    # Too short a max_length cuts the beginning: for tool-calling records, that is their tool definitions.
    page = alice_browser.get(f"/datasets/{dataset.id}/", {"records": 1, "max_length": 32}).content.decode()
    assert 'data-over-max-length="1"' in page
    assert "what goes first is their tool definitions, so raise max_length to keep them" in page


def test_a_demo_base_built_before_tool_support_refuses_tool_records_and_says_how_to_rebuild_it(
    alice_browser, alice, make_dataset, settings, built_demo_base, tmp_path
):
    import shutil

    from trainers.lora_sft.chat import FALLBACK_CHAT_TEMPLATE

    old = shutil.copytree(built_demo_base, tmp_path / "demo-base")
    (old / "chat_template.jinja").write_text("{{ bos_token }}" + FALLBACK_CHAT_TEMPLATE)  # the template it had then
    settings.DEMO_BASE_DIR = old
    dataset = make_dataset(alice, rows=TOOLS, filename="tools.jsonl")
    page = html.unescape(alice_browser.get(f"/datasets/{dataset.id}/", {"records": 1}).content.decode())
    assert "does not render the record's tools (get_capital not in its rendering)" in page
    assert "manage.py build_demo_base --force" in page and spans(page) == []
    assert "1 record(s) are refused by the chat template." in page


def test_the_histogram_counts_the_records_longer_than_max_length_for_that_base(
    alice_browser, alice, make_dataset, demo_base_here
):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(demo_base_here, local_files_only=True)
    lengths = [
        len(tokenizer.apply_chat_template(row["messages"], tokenize=True, return_dict=True)["input_ids"])
        for row in CHAT
    ]
    max_length = (min(lengths) + max(lengths)) // 2
    dataset = make_dataset(alice, rows=CHAT, filename="chat.jsonl")
    page = alice_browser.get(f"/datasets/{dataset.id}/", {"max_length": max_length}).content.decode()
    assert 'data-over-max-length="1"' in page
    assert f"exceed max_length={max_length}" in page and f"longest: {max(lengths)} tokens" in page
    counts = [int(count) for count in re.findall(r'<td class="num">\d+–\d+</td><td class="num">(\d+)</td>', page)]
    assert sum(counts) == 2
    assert (
        alice_browser.get(f"/datasets/{dataset.id}/", {"max_length": 32768})
        .content.decode()
        .count('data-over-max-length="0"')
        == 1
    )


@pytest.mark.parametrize(
    "query",
    [
        {"base": "/etc"},
        {"base": str(__file__)},
        {"base": "../var/demo-base"},
        {"records": 0},
        {"records": 10**9},
        {"max_length": "many"},
        {"max_length": 8},
    ],
)
def test_a_bad_preview_query_is_a_400_that_renders_nothing(alice_browser, alice, make_dataset, demo_base_here, query):
    dataset = make_dataset(alice, rows=CHAT, filename="chat.jsonl")
    response = alice_browser.get(f"/datasets/{dataset.id}/", query)
    assert response.status_code == 400
    page = response.content.decode()
    assert 'class="field-error"' in page and spans(page) == []


def test_without_a_built_base_the_page_says_how_to_build_one(alice_browser, alice, make_dataset, settings, tmp_path):
    settings.DEMO_BASE_DIR = tmp_path / "not-built"
    dataset = make_dataset(alice, rows=[{"text": "a", "label": "x"}, {"text": "b", "label": "y"}])
    page = alice_browser.get(f"/datasets/{dataset.id}/").content.decode()
    assert "manage.py build_demo_base" in page
    assert "Labels (2)" in page and 'data-task="classification"' in page


def test_a_tool_calling_dataset_page_names_its_functions_and_how_many_records_a_call_answers(
    alice_browser, alice, make_dataset, settings, tmp_path
):
    from tests.factories import tool_call_records

    settings.DEMO_BASE_DIR = tmp_path / "not-built"
    dataset = make_dataset(alice, rows=tool_call_records(calls=3, texts=1), filename="tools.jsonl")
    page = alice_browser.get(f"/datasets/{dataset.id}/").content.decode()
    assert "<dt>Tools</dt>" in page
    assert "<code>get_weather</code>, <code>set_timer</code>" in page
    assert "3 of 4 records are answered by a tool call" in page
    plain = make_dataset(alice, rows=CHAT, filename="chat.jsonl")
    assert "<dt>Tools</dt>" not in alice_browser.get(f"/datasets/{plain.id}/").content.decode()


def test_the_page_splits_a_dataset_into_train_and_test(alice_browser, alice, make_dataset):
    rows = [{"text": f"clause {i}", "label": ["pay", "law"][i % 2]} for i in range(20)]
    dataset = make_dataset(alice, rows=rows)
    response = alice_browser.post(f"/datasets/{dataset.id}/split/", {"test_fraction": 0.3, "seed": 1})
    train = Dataset.objects.exclude(id=dataset.id).get(name__contains="(train")
    test = Dataset.objects.exclude(id=dataset.id).get(name__contains="(test")
    assert response.status_code == 302 and response["Location"] == f"/datasets/{train.id}/"
    assert (train.records, test.records) == (14, 6)
    assert test.label_counts == {"law": 3, "pay": 3}
    refused = alice_browser.post(f"/datasets/{dataset.id}/split/", {"test_fraction": 2, "seed": 1})
    assert refused.status_code == 302 and Dataset.objects.count() == 3


def test_bob_can_neither_see_the_preview_nor_split_alices_dataset(bob, client, alice, make_dataset, demo_base_here):
    dataset = make_dataset(alice, rows=CHAT, filename="chat.jsonl")
    client.force_login(bob)
    assert client.get(f"/datasets/{dataset.id}/", {"records": 2}).status_code == 404
    assert client.post(f"/datasets/{dataset.id}/split/", {"test_fraction": 0.5, "seed": 1}).status_code == 404
    assert Dataset.objects.count() == 1
    assert json.dumps(CHAT[0]["messages"][1]["content"]) not in client.get("/datasets/").content.decode()


def test_the_histogram_stops_after_its_time_budget_and_says_how_many_records_it_read(
    alice_browser, alice, make_dataset, demo_base_here, settings
):
    settings.DATASET_PREVIEW_MAX_SECONDS = 0  # the first record only, whatever the machine
    dataset = make_dataset(alice, rows=CHAT * 3, filename="chat.jsonl")
    page = alice_browser.get(f"/datasets/{dataset.id}/", {"records": 5}).content.decode()
    assert "of 1 record(s) exceed" in page and "the first 1 records were read" in page
    assert page.count("<h3>Record ") == 1
