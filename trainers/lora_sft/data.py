"""From dataset records to token ids the model learns from: chat-rendered, answer-only labels.

A record becomes a conversation: an optional system message, the user turn (``Record.text``: the instruction
and input joined, or the text) and the assistant turn (``Record.label``: the output or the label). This is
the prompt the evaluation engine sends too, so what is learned is what is asked later. Only the assistant
turn's tokens carry labels; everything before it is -100 (ignored by the loss).
"""

import random
from collections.abc import Sequence
from dataclasses import dataclass

from finetune_studio.records import Record

IGNORE_INDEX = -100

# Used only when the base tokenizer has none (a plain pre-trained base); the trainer says so in a WARN line.
FALLBACK_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


class DataError(ValueError):
    pass


@dataclass(frozen=True)
class Example:
    input_ids: list[int]
    labels: list[int]
    prompt_truncated: bool = False

    @property
    def answer_tokens(self) -> int:
        return sum(1 for label in self.labels if label != IGNORE_INDEX)


def split_records(records: Sequence[Record], *, fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Shuffle with ``seed`` and hold out ``fraction`` of the records (at least one when any is asked)."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    if fraction <= 0 or len(shuffled) < 2:
        return shuffled, []
    held_out = min(len(shuffled) - 1, max(1, round(len(shuffled) * fraction)))
    return shuffled[held_out:], shuffled[:held_out]


def messages_for(record: Record, system_prompt: str) -> list[dict]:
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    messages.append({"role": "user", "content": record.text})
    return messages


def _ids(tokenizer, text: str) -> list[int]:
    # The chat template already writes any BOS it wants: never let the tokenizer add another.
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def encode_record(tokenizer, record: Record, *, system_prompt: str, max_length: int) -> Example:
    from jinja2 import TemplateError

    messages = messages_for(record, system_prompt)
    try:
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        answered = [*messages, {"role": "assistant", "content": record.label}]
        full = tokenizer.apply_chat_template(answered, tokenize=False)
    except TemplateError as exc:  # e.g. templates that refuse a system message
        raise DataError(f"the chat template refused a record: {exc}") from None
    if not full.startswith(prompt):
        raise DataError("the chat template renders the prompt differently once the answer is added")
    prompt_ids = _ids(tokenizer, prompt)
    full_ids = _ids(tokenizer, full)
    if full_ids[: len(prompt_ids)] == prompt_ids:
        answer_ids = full_ids[len(prompt_ids) :]
    else:
        # Tokens merged across the prompt/answer boundary: tokenize the two sides apart, so the model
        # learns the answer after exactly the prompt tokens it will be given at inference.
        answer_ids = _ids(tokenizer, full[len(prompt) :])
    if not answer_ids:
        raise DataError("a record's answer renders to no tokens")
    # At least one prompt token stays: the first answer token is predicted from it (a causal LM never
    # predicts position 0), so a record can never end up with nothing to learn.
    answer_ids = answer_ids[: max_length - 1]
    room = max_length - len(answer_ids)
    truncated = len(prompt_ids) > room
    if truncated:
        # Keep the end of the prompt (the question itself and the assistant header), drop its beginning.
        prompt_ids = prompt_ids[len(prompt_ids) - room :]
    return Example(
        input_ids=prompt_ids + answer_ids,
        labels=[IGNORE_INDEX] * len(prompt_ids) + answer_ids,
        prompt_truncated=truncated,
    )


def encode_records(tokenizer, records: Sequence[Record], *, system_prompt: str, max_length: int) -> list[Example]:
    return [encode_record(tokenizer, record, system_prompt=system_prompt, max_length=max_length) for record in records]


def collate(examples: Sequence[Example], *, pad_token_id: int):
    """Right-padded tensors: input_ids, attention_mask, labels (padding is masked out of the loss)."""
    import torch

    longest = max(len(example.input_ids) for example in examples)
    input_ids = torch.full((len(examples), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(examples), longest), dtype=torch.long)
    labels = torch.full((len(examples), longest), IGNORE_INDEX, dtype=torch.long)
    for row, example in enumerate(examples):
        length = len(example.input_ids)
        input_ids[row, :length] = torch.tensor(example.input_ids, dtype=torch.long)
        attention_mask[row, :length] = 1
        labels[row, :length] = torch.tensor(example.labels, dtype=torch.long)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
