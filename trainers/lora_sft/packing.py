"""Batches without wasted work: the records of a micro-batch packed into as few rows as they fit.

A padded batch computes every row to the length of its longest record; with real length spreads (a 64-token
record beside a 2,048-token one) most of that work is padding. Packing puts several records end to end in one
row instead, with nothing leaking between them:

* ``position_ids`` restart at 0 for each record, so each keeps the positions (RoPE) it has when alone;
* no ``attention_mask`` is passed: transformers then reads the record boundaries from the position ids and
  gives sdpa/eager a block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``) and
  flash-attention its variable-length kernel (one row: ``_is_packed_sequence``), the way its
  ``DataCollatorWithFlattening`` does;
* the first label of each record is -100: after the causal shift it would be predicted from the previous
  record's last token.

A row is never longer than the micro-batch's longest record (so attention, quadratic in the row length, never
costs more than in the padded batch), except for flash-attention, whose variable-length kernel computes only
within records: there everything goes into one row. Short rows are filled with padding that forms a
"record" of its own (positions from 0, labels -100), which no real token attends to. The records of a
micro-batch and its trained tokens are the same packed or not, so is the loss averaged over them.
"""

from collections.abc import Sequence

from .chat import IGNORE_INDEX, Example


def pack_rows(lengths: Sequence[int], *, capacity: int) -> list[list[int]]:
    """Indices of ``lengths`` grouped into rows of at most ``capacity`` tokens (first fit, longest first).

    Each row keeps its records in their original order. A record longer than ``capacity`` gets a row alone.
    """
    rows: list[list[int]] = []
    room: list[int] = []
    for index in sorted(range(len(lengths)), key=lambda i: (-lengths[i], i)):
        length = lengths[index]
        for row, free in enumerate(room):
            if length <= free:
                rows[row].append(index)
                room[row] -= length
                break
        else:
            rows.append([index])
            room.append(capacity - length)
    return [sorted(row) for row in rows]


def collate_packed(examples: Sequence[Example], *, pad_token_id: int, one_row: bool = False) -> dict:
    """Packed tensors: input_ids, labels and position_ids of shape (rows, longest row); no attention_mask."""
    import torch

    lengths = [len(example.input_ids) for example in examples]
    capacity = sum(lengths) if one_row else max(lengths)
    rows = pack_rows(lengths, capacity=capacity)
    width = max(sum(lengths[index] for index in row) for row in rows)
    input_ids = torch.full((len(rows), width), pad_token_id, dtype=torch.long)
    labels = torch.full((len(rows), width), IGNORE_INDEX, dtype=torch.long)
    position_ids = torch.zeros((len(rows), width), dtype=torch.long)
    for row_number, row in enumerate(rows):
        start = 0
        for index in row:
            example, length = examples[index], lengths[index]
            input_ids[row_number, start : start + length] = torch.tensor(example.input_ids, dtype=torch.long)
            labels[row_number, start : start + length] = torch.tensor(example.labels, dtype=torch.long)
            labels[row_number, start] = IGNORE_INDEX
            position_ids[row_number, start : start + length] = torch.arange(length)
            start += length
        position_ids[row_number, start:] = torch.arange(width - start)
    return {"input_ids": input_ids, "labels": labels, "position_ids": position_ids}


def collate_for_training(examples: Sequence[Example], *, pad_token_id: int, packed: bool, one_row: bool) -> dict:
    """The micro-batch the training step computes: packed rows, or the plain right-padded batch."""
    from .data import collate

    if packed:
        return collate_packed(examples, pad_token_id=pad_token_id, one_row=one_row)
    return collate(examples, pad_token_id=pad_token_id)


def real_tokens(examples: Sequence[Example]) -> int:
    """Tokens of the records themselves: what tokens/s counts (never padding)."""
    return sum(len(example.input_ids) for example in examples)
