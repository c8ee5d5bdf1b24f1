"""Chat rendering and the loss mask, token by token against the demo base's chat template (ChatML)."""

import copy
import json

import pytest

pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")

from finetune_studio.records import Message, Record, read_records_from_bytes  # noqa: E402
from tests.factories import calling_turn, function_tool, tool_call, tool_result  # noqa: E402
from trainers.lora_sft.chat import (  # noqa: E402
    FALLBACK_CHAT_TEMPLATE,
    IGNORE_INDEX,
    RenderError,
    conversation_for,
    encode_conversation,
    encode_record,
    token_length,
)


@pytest.fixture(scope="module")
def tokenizer(demo_base):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(demo_base, local_files_only=True)


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def expected(tokenizer, pieces: list[tuple[str, bool]]) -> tuple[list[int], list[int]]:
    """Hand-written ChatML pieces → (input ids, labels): trained pieces keep their ids, the rest is -100."""
    input_ids, labels = [], []
    for text, trained in pieces:
        piece = ids(tokenizer, text)
        input_ids += piece
        labels += piece if trained else [IGNORE_INDEX] * len(piece)
    return input_ids, labels


CONVERSATION = [
    Message("system", "Answer in one word."),
    Message("user", "Greet me."),
    Message("assistant", "Hello there friend.", weight=0),
    Message("user", "Which law governs?"),
    Message("assistant", "Delaware."),
    Message("user", "And the court?"),
    Message("assistant", "Wilmington."),
]


def test_a_multi_turn_conversation_renders_as_the_template_does_and_trains_only_weighted_assistant_turns(tokenizer):
    example = encode_conversation(tokenizer, CONVERSATION, max_length=512)
    rendered = tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in CONVERSATION], tokenize=False
    )
    # The input is the template's rendering, tokenized whole: what the base sees at inference.
    assert example.input_ids == ids(tokenizer, rendered)
    assert tokenizer.decode(example.input_ids) == rendered
    want_ids, want_labels = expected(
        tokenizer,
        [
            ("<s><|im_start|>system\nAnswer in one word.<|im_end|>\n", False),
            ("<|im_start|>user\nGreet me.<|im_end|>\n<|im_start|>assistant\n", False),
            ("Hello there friend.<|im_end|>\n", False),  # weight 0: context, not learned
            ("<|im_start|>user\nWhich law governs?<|im_end|>\n<|im_start|>assistant\n", False),
            ("Delaware.<|im_end|>\n", True),
            ("<|im_start|>user\nAnd the court?<|im_end|>\n<|im_start|>assistant\n", False),
            ("Wilmington.<|im_end|>\n", True),
        ],
    )
    assert example.input_ids == want_ids
    for position, (label, want) in enumerate(zip(example.labels, want_labels, strict=True)):
        assert label == want, (position, tokenizer.decode([example.input_ids[position]]))
    trained = [token for token, label in zip(example.input_ids, example.labels) if label != IGNORE_INDEX]
    assert tokenizer.decode(trained) == "Delaware.<|im_end|>\nWilmington.<|im_end|>\n"
    assert not example.prompt_truncated


def test_a_weight_one_turn_is_learned_where_weight_zero_was_not(tokenizer):
    learned = [m if m.role != "assistant" else Message(m.role, m.content, weight=1) for m in CONVERSATION]
    with_weight = encode_conversation(tokenizer, CONVERSATION, max_length=512)
    without = encode_conversation(tokenizer, learned, max_length=512)
    assert with_weight.input_ids == without.input_ids
    assert without.answer_tokens - with_weight.answer_tokens == len(ids(tokenizer, "Hello there friend.<|im_end|>\n"))


def test_the_records_system_prompt_is_kept_and_the_hyperparameter_fills_in_only_where_there_is_none(tokenizer):
    data = (
        b'{"messages": [{"role": "system", "content": "Own rule."}, {"role": "user", "content": "Hi"},'
        b' {"role": "assistant", "content": "Yo"}]}\n'
        b'{"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Yo"}]}\n'
    )
    own, plain = read_records_from_bytes(data, "chat.jsonl")
    assert conversation_for(own, "Default rule.")[0] == Message("system", "Own rule.")
    assert conversation_for(plain, "Default rule.")[0] == Message("system", "Default rule.")
    example = encode_record(tokenizer, plain, system_prompt="Default rule.", max_length=512)
    want_ids, want_labels = expected(
        tokenizer,
        [
            ("<s><|im_start|>system\nDefault rule.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n", False),
            ("<|im_start|>assistant\n", False),
            ("Yo<|im_end|>\n", True),
        ],
    )
    assert (example.input_ids, example.labels) == (want_ids, want_labels)


def test_single_turn_records_render_as_user_and_assistant(tokenizer):
    record = Record(text="Pay within 30 days.", label="payment")
    example = encode_record(tokenizer, record, system_prompt="", max_length=512)
    prompt = "<s><|im_start|>user\nPay within 30 days.<|im_end|>\n<|im_start|>assistant\n"
    assert (example.input_ids, example.labels) == expected(tokenizer, [(prompt, False), ("payment<|im_end|>\n", True)])


def test_a_conversation_over_max_length_loses_its_beginning_and_keeps_the_last_answer(tokenizer):
    full = encode_conversation(tokenizer, CONVERSATION, max_length=512)
    last_answer = ids(tokenizer, "Wilmington.<|im_end|>\n")
    cut = encode_conversation(tokenizer, CONVERSATION, max_length=len(last_answer) + 5)
    assert cut.prompt_truncated and len(cut.input_ids) == len(last_answer) + 5
    assert cut.input_ids == full.input_ids[-len(cut.input_ids) :]
    assert cut.labels[-len(last_answer) :] == last_answer
    assert token_length(tokenizer, Record(text="x", label="y", messages=tuple(CONVERSATION))) == len(full.input_ids)
    # A last answer longer than max_length keeps its beginning, with one token of context before it.
    tiny = encode_conversation(tokenizer, CONVERSATION, max_length=4)
    assert tiny.labels[0] == IGNORE_INDEX and tiny.labels[1:] == last_answer[:3]


def test_a_template_that_rewrites_earlier_turns_is_refused_with_the_reason(tokenizer):
    import copy

    forgetful = copy.deepcopy(tokenizer)
    # Shows only the last two messages, as templates that drop history or reasoning do.
    forgetful.chat_template = (
        "{% for message in messages[-2:] %}<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    with pytest.raises(RenderError, match="renders turn 3 differently once later turns follow"):
        encode_conversation(forgetful, CONVERSATION, max_length=512)


WEATHER_TOOL = function_tool("get_weather", "city", description="The weather in a city now.")
TOOL_ROW = {
    "tools": [WEATHER_TOOL],
    "messages": [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "Weather in Paris?"},
        calling_turn(tool_call("c1", "get_weather", {"city": "Paris"})),
        tool_result("c1", "18C, sunny"),
        {"role": "assistant", "content": "It is 18C in Paris."},
    ],
}
CALL = '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call><|im_end|>\n'


def tool_record(row: dict = TOOL_ROW) -> Record:
    [record] = read_records_from_bytes(json.dumps(row).encode(), "tools.jsonl")
    return record


def runs(tokenizer, example) -> list[tuple[str, bool]]:
    """The example as (decoded text, trained) stretches: consecutive tokens with the same mask, joined."""
    stretches: list[tuple[list[int], bool]] = []
    for token, label in zip(example.input_ids, example.labels, strict=True):
        trained = label != IGNORE_INDEX
        if stretches and stretches[-1][1] == trained:
            stretches[-1][0].append(token)
        else:
            stretches.append(([token], trained))
    return [(tokenizer.decode(tokens), trained) for tokens, trained in stretches]


def test_a_tool_calling_record_trains_its_calls_and_answer_and_keeps_tools_and_results_as_context(tokenizer):
    record = tool_record()
    example = encode_record(tokenizer, record, system_prompt="Ignored: the record has its own.", max_length=1024)
    rendered = tokenizer.apply_chat_template(
        [message.template_turn() for message in record.messages], tools=list(record.tools), tokenize=False
    )
    assert example.input_ids == ids(tokenizer, rendered)
    (prompt, _), *rest = stretches = runs(tokenizer, example)
    assert rest == [
        (CALL, True),
        ("<|im_start|>tool\n18C, sunny<|im_end|>\n<|im_start|>assistant\n", False),
        ("It is 18C in Paris.<|im_end|>\n", True),
    ]
    assert [trained for _, trained in stretches] == [False, True, False, True]
    # The definitions are context, once, in the system turn, in the Hermes/Qwen2.5 form the engine parses.
    assert prompt.startswith("<s><|im_start|>system\nBe brief.\n\n# Tools\n")
    assert f"<tools>\n{json.dumps(WEATHER_TOOL)}\n</tools>" in prompt and prompt.count("Be brief.") == 1
    assert prompt.endswith("<|im_end|>\n<|im_start|>user\nWeather in Paris?<|im_end|>\n<|im_start|>assistant\n")
    assert token_length(tokenizer, record) == len(example.input_ids)


def test_a_call_after_some_words_and_several_calls_in_one_turn_are_all_trained(tokenizer):
    row = copy.deepcopy(TOOL_ROW)
    calls = [
        {"id": f"c{n}", "type": "function", "function": {"name": "get_weather", "arguments": {"city": city}}}
        for n, city in ((1, "Paris"), (2, "Dublin"))
    ]
    row["messages"][2:4] = [
        {"role": "assistant", "content": "Checking both.", "tool_calls": calls},
        {"role": "tool", "tool_call_id": "c1", "content": "18C"},
        {"role": "tool", "tool_call_id": "c2", "content": "12C"},
    ]
    example = encode_record(tokenizer, tool_record(row), system_prompt="", max_length=1024)
    trained = [text for text, is_trained in runs(tokenizer, example) if is_trained]
    assert trained == [
        "Checking both.\n"
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Paris"}}\n</tool_call>\n'
        '<tool_call>\n{"name": "get_weather", "arguments": {"city": "Dublin"}}\n</tool_call><|im_end|>\n',
        "It is 18C in Paris.<|im_end|>\n",
    ]
    assert "<|im_start|>tool\n18C<|im_end|>\n<|im_start|>tool\n12C<|im_end|>\n" in tokenizer.decode(example.input_ids)


@pytest.mark.parametrize(
    "template, reason",
    [
        # Bases without a template: ChatML without tools, so never a tool-calling record.
        (FALLBACK_CHAT_TEMPLATE, "does not render the record's tools (get_weather not in its rendering)"),
        # The demo base's template before it supported tools (a var/demo-base built then).
        ("{{ bos_token }}" + FALLBACK_CHAT_TEMPLATE, "does not render the record's tools"),
        (
            "{% if tools %}{% for tool in tools %}{{ tool | tojson }}{% endfor %}{% endif %}" + FALLBACK_CHAT_TEMPLATE,
            "does not render tool calls (turn 3 calls get_weather, which its rendering of that turn lacks)",
        ),
        ("no tool results", "does not render tool results (turn 4, the result of get_weather, is missing"),
    ],
)
def test_a_template_that_drops_tools_calls_or_results_refuses_tool_records_with_the_reason(tokenizer, template, reason):
    from trainers.demo_base import CHAT_TEMPLATE

    if template == "no tool results":
        template = CHAT_TEMPLATE.replace("{% if not (tools and", "{% if message['role'] != 'tool' and not (tools and")
    deaf = copy.deepcopy(tokenizer)
    deaf.chat_template = template
    # The user naming the function is no rendering of the definitions.
    row = copy.deepcopy(TOOL_ROW)
    row["messages"][1]["content"] = "Weather in Paris? Use get_weather."
    with pytest.raises(RenderError, match="tool-calling records need a base whose template supports tools") as refused:
        encode_record(deaf, tool_record(row), system_prompt="", max_length=1024)
    assert reason in str(refused.value) and "manage.py build_demo_base --force" in str(refused.value)
    # Records without tools still train with such templates.
    assert encode_conversation(deaf, CONVERSATION, max_length=512).answer_tokens > 0


def test_the_demo_template_renders_records_without_tools_as_before_tools_existed(tokenizer):
    before_tools = copy.deepcopy(tokenizer)
    before_tools.chat_template = "{{ bos_token }}" + FALLBACK_CHAT_TEMPLATE
    for messages in (CONVERSATION, CONVERSATION[1:3]):
        turns = [{"role": m.role, "content": m.content} for m in messages]
        for prompt in (True, False):
            assert tokenizer.apply_chat_template(
                turns, tokenize=False, add_generation_prompt=prompt
            ) == before_tools.apply_chat_template(turns, tokenize=False, add_generation_prompt=prompt)


def test_the_light_tokenizer_of_the_web_process_gives_the_trainers_ids_and_mask(tokenizer, demo_base):
    from trainers.lora_sft.chat import TemplateTokenizer

    light = TemplateTokenizer(demo_base)
    assert not light.uses_fallback_template
    for messages in (CONVERSATION, CONVERSATION[1:3] + CONVERSATION[3:5]):
        assert encode_conversation(light, messages, max_length=512) == encode_conversation(
            tokenizer, messages, max_length=512
        )
    record = tool_record()
    assert encode_record(light, record, system_prompt="", max_length=1024) == encode_record(
        tokenizer, record, system_prompt="", max_length=1024
    )


def test_rendering_for_the_web_process_imports_no_torch(demo_base):
    import subprocess
    import sys
    from pathlib import Path

    script = (
        "import sys\n"
        "from finetune_studio.records import Record\n"
        "from trainers.lora_sft.chat import TemplateTokenizer, encode_record\n"
        f"tokenizer = TemplateTokenizer({str(demo_base)!r})\n"
        "example = encode_record(tokenizer, Record(text='Hi', label='Yo'), system_prompt='', max_length=64)\n"
        "assert example.answer_tokens > 0\n"
        "print('torch' in sys.modules)\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "False"
