"""Conversations to token ids through the base's chat template, with the loss on assistant turns only.

A record's turns (``Record.conversation()``: its own messages, or user = text and assistant = label) are
rendered once by ``tokenizer.apply_chat_template`` as the base would see the whole conversation. The text of
each assistant turn is found by rendering the conversation up to that turn twice: with the generation prompt
(where the answer starts) and with the turn (where it ends, the template's end-of-turn included). Those
spans are trained, unless the turn has weight 0; everything else (system prompt, user turns, headers) is
context with label -100. A template that renders the beginning of a conversation differently once later
turns follow (some strip earlier reasoning) cannot be trained turn by turn and is refused.

Tool-calling records (``Record.tools``) are rendered with their function definitions (``tools=`` of
``apply_chat_template``) and every turn as ``Message.template_turn()`` gives it: an assistant turn's calls are
trained like an answer, tool results are context. Templates that know nothing of tools silently drop them, so
each rendering is checked: the definitions, every call's function name inside its turn's trained text and
every result must be there, or the record is refused rather than trained on a conversation it does not hold.

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


TOOLS_UNSUPPORTED = (
    "tool-calling records need a base whose template supports tools (a demo base built before its template "
    "did is rebuilt with `manage.py build_demo_base --force`)"
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


def _render(tokenizer, messages: Sequence[Message], *, add_generation_prompt: bool, tools: Sequence[dict] = ()) -> str:
    from jinja2 import TemplateError

    turns = [message.template_turn() for message in messages]
    # Only records that have tools pass them: a template then sees exactly what it saw before tools existed.
    extra = {"tools": list(tools)} if tools else {}
    try:
        return tokenizer.apply_chat_template(
            turns, tokenize=False, add_generation_prompt=add_generation_prompt, **extra
        )
    except TemplateError as exc:  # e.g. templates that refuse a system message or a role order
        raise RenderError(f"the chat template refused a record: {exc}") from None
    except TypeError as exc:  # e.g. a template that takes a call's arguments for a string, or iterates no tools
        raise RenderError(f"the chat template failed on a record: {exc}") from None


def _check_tools_rendered(tokenizer, prompt: Sequence[Message], rendered: str, tools: Sequence[dict]) -> None:
    """The definitions are in the first prompt: each name shows more often than in the same prompt without
    tools (the name alone could come from a user turn that mentions it)."""
    without = _render(tokenizer, prompt, add_generation_prompt=True)
    missing = [
        tool["function"]["name"]
        for tool in tools
        if rendered.count(tool["function"]["name"]) <= without.count(tool["function"]["name"])
    ]
    if missing:
        raise RenderError(
            f"the chat template does not render the record's tools ({', '.join(missing)} not in its rendering): "
            + TOOLS_UNSUPPORTED
        )


def _check_calls_rendered(index: int, message: Message, answer: str) -> None:
    missing = [call.name for call in message.tool_calls if call.name not in answer]
    if missing:
        raise RenderError(
            f"the chat template does not render tool calls (turn {index + 1} calls {', '.join(missing)}, which "
            f"its rendering of that turn lacks): " + TOOLS_UNSUPPORTED
        )


def _check_results_rendered(results: Sequence[tuple[int, Message]], context: str) -> None:
    for index, message in results:
        if message.content.strip() and message.content.strip() not in context:
            raise RenderError(
                f"the chat template does not render tool results (turn {index + 1}, the result of "
                f"{message.name or 'a call'}, is missing from its rendering): " + TOOLS_UNSUPPORTED
            )


def render_segments(tokenizer, messages: Sequence[Message], *, tools: Sequence[dict] = ()) -> list[Segment]:
    """The whole rendering cut into context and answer segments; their texts joined are the rendering.

    ``tools``: the record's function definitions, passed to the template (its own ``tools`` variable).
    """
    full = _render(tokenizer, messages, add_generation_prompt=False, tools=tools)
    segments: list[Segment] = []
    cursor = 0
    results: list[tuple[int, Message]] = []  # tool turns since the last assistant turn
    answered = False
    for index, message in enumerate(messages):
        if message.role == "tool":
            results.append((index, message))
        if message.role != "assistant":
            continue
        before = _render(tokenizer, messages[:index], add_generation_prompt=True, tools=tools)
        through = _render(tokenizer, messages[: index + 1], add_generation_prompt=False, tools=tools)
        if not (through.startswith(before) and full.startswith(through) and len(before) >= cursor):
            raise RenderError(
                f"the chat template renders turn {index + 1} differently once later turns follow (it may drop "
                "or rewrite earlier turns): it cannot be trained turn by turn"
            )
        if tools and not answered:
            _check_tools_rendered(tokenizer, messages[:index], before, tools)
        _check_results_rendered(results, full[cursor : len(before)])
        results = []
        _check_calls_rendered(index, message, full[len(before) : len(through)])
        if len(before) > cursor:
            segments.append(Segment(full[cursor : len(before)], trained=False))
        if len(through) > len(before):
            segments.append(Segment(full[len(before) : len(through)], trained=message.trained))
        cursor = len(through)
        answered = True
    _check_results_rendered(results, full[cursor:])
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


def encode_conversation(
    tokenizer, messages: Sequence[Message], *, max_length: int, tools: Sequence[dict] = ()
) -> Example:
    pieces = tokenize_segments(tokenizer, render_segments(tokenizer, messages, tools=tools))
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
    return encode_conversation(
        tokenizer, conversation_for(record, system_prompt), max_length=max_length, tools=record.tools
    )


def encode_records(tokenizer, records: Sequence[Record], *, system_prompt: str, max_length: int) -> list[Example]:
    return [encode_record(tokenizer, record, system_prompt=system_prompt, max_length=max_length) for record in records]


def token_length(tokenizer, record: Record, *, system_prompt: str = "") -> int:
    """Tokens of the whole rendered record before any truncation (the dataset page's histogram)."""
    segments = render_segments(tokenizer, conversation_for(record, system_prompt), tools=record.tools)
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

    def apply_chat_template(
        self, turns, *, tools=None, tokenize: bool = False, add_generation_prompt: bool = False
    ) -> str:
        from transformers.utils.chat_template_utils import render_jinja_template

        rendered, _ = render_jinja_template(
            conversations=[turns],
            tools=tools,
            chat_template=self.chat_template,
            add_generation_prompt=add_generation_prompt,
            **self.special_tokens,
        )
        return rendered[0]

    def __call__(self, text: str, *, add_special_tokens: bool = False) -> dict:
        return {"input_ids": self.backend.encode(text, add_special_tokens=add_special_tokens).ids}

    def decode(self, ids) -> str:
        return self.backend.decode(list(ids), skip_special_tokens=False)
