"""Conversations to token ids through the base's chat template, with the loss on assistant turns only.

A record's turns (``Record.conversation()``: its own messages, or user = text and assistant = label) are
rendered once by ``tokenizer.apply_chat_template`` as the base would see the whole conversation. The text of
each assistant turn is found by rendering the conversation up to that turn twice: with the generation prompt
(where the answer starts) and with the turn (where it ends, the template's end-of-turn included). Those
spans are trained, unless the turn has weight 0; everything else (system prompt, user turns, headers) is
context with label -100. A template that renders the beginning of a conversation differently once later
turns follow (some strip earlier reasoning) cannot be trained turn by turn and is refused.

The dataset page's preview calls the same functions, so what it shows is what the trainer trains on.
Importable without torch: only a tokenizer (``tokenizers``/``transformers``) is needed.
"""

from collections.abc import Sequence
from dataclasses import dataclass

from finetune_studio.records import Message, Record

IGNORE_INDEX = -100

# Used only when the base tokenizer has none (a plain pre-trained base); the trainer says so in a WARN line.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class RenderError(ValueError):
    pass


@dataclass(frozen=True)
class Segment:
    """A stretch of the rendered conversation: trained (an assistant turn with weight 1) or context."""

    text: str
    trained: bool


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    # Longer than max_length: the beginning (or, for a very long last answer, its end) was cut.
    prompt_truncated: bool = False

    @property
    def answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def conversation_for(record: Record, system_prompt: str = "") -> list[Message]:
    """The record's turns; ``system_prompt`` goes first only when the record brings no system message."""
    messages = list(record.conversation())
    if system_prompt and not any(message.role == "system" for message in messages):
        messages.insert(0, Message("system", system_prompt))
    return messages


def _render(tokenizer, messages: Sequence[Message], *, add_generation_prompt: bool) -> str:
    from jinja2 import TemplateError

    turns = [{"role": message.role, "content": message.content} for message in messages]
    try:
        return tokenizer.apply_chat_template(turns, tokenize=False, add_generation_prompt=add_generation_prompt)
    except TemplateError as exc:  # e.g. templates that refuse a system message or a role order
        raise RenderError(f"the chat template refused a record: {exc}") from None


def render_segments(tokenizer, messages: Sequence[Message]) -> list[Segment]:
    """The whole rendering cut into context and answer segments; their texts joined are the rendering."""
    full = _render(tokenizer, messages, add_generation_prompt=False)
    segments: list[Segment] = []
    cursor = 0
    for index, message in enumerate(messages):
        if message.role != "assistant":
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True)
        through = _render(tokenizer, messages[: index + 1], add_generation_prompt=False)
        if not (through.startswith(before) and full.startswith(through) and len(before) >= cursor):
            raise RenderError(
                f"the chat template renders turn {index + 1} differently once later turns follow (it may drop "
                "or rewrite earlier turns): it cannot be trained turn by turn"
            )
        if len(before) > cursor:
            segments.append(Segment(full[cursor : len(before)], trained=False))
        if len(through) > len(before):
            segments.append(Segment(full[len(before) : len(through)], trained=message.trained))
        cursor = len(through)
    if cursor < len(full):
        segments.append(Segment(full[cursor:], trained=False))
    return segments


def _ids(tokenizer, text: str) -> list[int]:
    # The chat template already writes any BOS it wants: never let the tokenizer add another.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def tokenize_segments(tokenizer, segments: Sequence[Segment]) -> list[tuple[list[int], bool]]:
    """Token ids of each segment, as the rendering is tokenized whole wherever the boundaries allow.

    The rendering up to each segment's end is tokenized; when what came before is a token prefix of it, the
    new tokens are the segment's (exactly the tokens of the whole text). When tokens merge across a
    boundary, the segment is tokenized on its own, so that an answer is learned after exactly the prompt
    tokens it is given at inference.
    """
    pieces: list[tuple[list[int], bool]] = []
    so_far: list[int] = []
    end = 0
    text = "".join(segment.text for segment in segments)
    for segment in segments:
        end += len(segment.text)
        prefix = _ids(tokenizer, text[:end])
        if prefix[: len(so_far)] == so_far:
            ids = prefix[len(so_far) :]
        else:
            ids = _ids(tokenizer, segment.text)
        pieces.append((ids, segment.trained))
        so_far = so_far + ids
    return pieces


def encode_conversation(tokenizer, messages: Sequence[Message], *, max_length: int) -> Example:
    pieces = tokenize_segments(tokenizer, render_segments(tokenizer, messages))
    input_ids = [token for ids, _ in pieces for token in ids]
    labels = [token if trained else IGNORE_INDEX for ids, trained in pieces for token in ids]
    trained_positions = [position for position, label in enumerate(labels) if label != IGNORE_INDEX]
    if not trained_positions:
        raise RenderError("a record's assistant turns render to no tokens")
    if len(input_ids) <= max_length:
        return Example(input_ids=input_ids, labels=labels)
    # Too long: what follows the last trained token teaches nothing and goes first; then the beginning is
    # cut, keeping the last answer whole with at least one token before it (a causal LM never predicts
    # position 0). A last answer longer than that keeps its beginning.
    end = trained_positions[-1] + 1
    last_start = end - 1
    while last_start > 0 and labels[last_start - 1] != IGNORE_INDEX:
        last_start -= 1
    start = max(0, end - max_length)
    if start >= last_start:
        start = max(0, last_start - 1)
        end = start + max_length
    return Example(
        input_ids=input_ids[start:end], labels=[IGNORE_INDEX, *labels[start + 1 : end]], prompt_truncated=True
    )


def encode_record(tokenizer, record: Record, *, system_prompt: str, max_length: int) -> Example:
    return encode_conversation(tokenizer, conversation_for(record, system_prompt), max_length=max_length)


def encode_records(tokenizer, records: Sequence[Record], *, system_prompt: str, max_length: int) -> list[Example]:
    return [encode_record(tokenizer, record, system_prompt=system_prompt, max_length=max_length) for record in records]


def token_length(tokenizer, record: Record, *, system_prompt: str = "") -> int:
    """Tokens of the whole rendered record before any truncation (the dataset page's histogram)."""
    segments = render_segments(tokenizer, conversation_for(record, system_prompt))
    return sum(len(ids) for ids, _ in tokenize_segments(tokenizer, segments))


SPECIAL_TOKEN_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")


class TemplateTokenizer:
    """A base's tokenizer and chat template without transformers' model stack (so without torch).

    For the web process: renders with transformers' own chat-template renderer and the same named special
    tokens ``apply_chat_template`` passes, and encodes with the same ``tokenizers`` backend the trainer's
    fast tokenizer wraps, so the ids are the trainer's. A base without a chat template gets the trainer's
    fallback (``uses_fallback_template``).
    """

    def __init__(self, folder):
        import json
        from pathlib import Path

        from tokenizers import Tokenizer

        folder = Path(folder)
        config = json.loads((folder / "tokenizer_config.json").read_text(encoding="utf-8"))
        self.backend = Tokenizer.from_file(str(folder / "tokenizer.json"))
        template_file = folder / "chat_template.jinja"
        template = template_file.read_text(encoding="utf-8") if template_file.is_file() else config.get("chat_template")
        if isinstance(template, list):  # named templates: [{"name": "default", "template": …}, …]
            template = next((item.get("template") for item in template if item.get("name") == "default"), None)
        self.uses_fallback_template = not template
        self.chat_template = template or FALLBACK_CHAT_TEMPLATE
        self.special_tokens = {}
        for name in SPECIAL_TOKEN_NAMES:
            value = config.get(name)
            value = value.get("content") if isinstance(value, dict) else value
            if isinstance(value, str):
                self.special_tokens[name] = value

    def apply_chat_template(self, turns, *, tokenize: bool = False, add_generation_prompt: bool = False) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(
            conversations=[turns],
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )
        return rendered[0]

    def __call__(self, text: str, *, add_special_tokens: bool = False) -> dict:
        return {"input_ids": self.backend.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)
