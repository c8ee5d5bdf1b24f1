"""Records to training batches: the held-out split and right-padded batches of encoded examples.

Encoding (the chat rendering, answer-only labels) lives in ``chat.py``; the dataset page's preview uses it
too, so what it shows is what is trained.
"""

import random
from collections.abc import Sequence

from finetune_studio.records import Record

from .chat import IGNORE_INDEX, Example


def split_records(records: Sequence[Record], *, fraction: float, seed: int) -> tuple[list[Record], list[Record]]:
    """Shuffle with ``seed`` and hold out ``fraction`` of the records (at least one when any is asked)."""
    shuffled = list(records)
    random.Random(seed).shuffle(shuffled)
    if fraction <= 0 or len(shuffled) < 2:
        return shuffled, []
    held_out = min(len(shuffled) - 1, max(1, round(len(shuffled) * fraction)))
    return shuffled[held_out:], shuffled[:held_out]


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
