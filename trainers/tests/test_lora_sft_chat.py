"""Chat rendering and the loss mask, token by token against the demo base's chat template (ChatML)."""

import pytest

pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")

from finetune_studio.records import Message, Record, read_records_from_bytes  # noqa: E402
from trainers.lora_sft.chat import (  # noqa: E402
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


def test_the_light_tokenizer_of_the_web_process_gives_the_trainers_ids_and_mask(tokenizer, demo_base):
    from trainers.lora_sft.chat import TemplateTokenizer

    light = TemplateTokenizer(demo_base)
    assert not light.uses_fallback_template
    for messages in (CONVERSATION, CONVERSATION[1:3] + CONVERSATION[3:5]):
        assert encode_conversation(light, messages, max_length=512) == encode_conversation(
            tokenizer, messages, max_length=512
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
