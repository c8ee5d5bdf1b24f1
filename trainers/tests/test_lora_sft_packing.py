"""Packing: the records of a micro-batch end to end in few rows, each keeping its own positions and attention,
and the loss of a packed batch is the loss of the same records padded (averaged over the trained tokens).
"""

import pytest

pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("transformers", reason="the training extra (requirements-train.txt) is not installed")
pytest.importorskip("peft", reason="the training extra (requirements-train.txt) is not installed")

from finetune_studio.records import open_records  # noqa: E402
from trainers.lora_sft.chat import IGNORE_INDEX, Example, encode_records  # noqa: E402
from trainers.lora_sft.data import collate  # noqa: E402
from trainers.lora_sft.packing import collate_packed, pack_rows, real_tokens  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def example(length: int, *, first: int, answer: int = 2) -> Example:
    ids = list(range(first, first + length))
    return Example(input_ids=ids, labels=[IGNORE_INDEX] * (length - answer) + ids[length - answer :])


def test_rows_never_exceed_the_capacity_and_hold_every_record_once():
    lengths = [7, 3, 5, 2, 7, 1, 4]
    rows = pack_rows(lengths, capacity=7)
    assert sorted(index for row in rows for index in row) == list(range(len(lengths)))
    assert all(sum(lengths[index] for index in row) <= 7 for row in rows)
    assert len(rows) == 5  # 29 tokens in rows of 7: the fewest possible


def test_each_packed_record_restarts_its_positions_and_does_not_learn_its_first_token_from_the_previous_one():
    examples = [example(5, first=10), example(3, first=20), example(7, first=30), example(2, first=40, answer=1)]
    batch = collate_packed(examples, pad_token_id=0)
    assert "attention_mask" not in batch  # the boundaries are read from the positions (no padding mask at all)
    rows, width = batch["input_ids"].shape
    assert width == 7  # never longer than the longest record: attention costs no more than padded
    assert rows == 3
    seen = []
    for row in range(rows):
        ids, positions, labels = (batch[key][row].tolist() for key in ("input_ids", "position_ids", "labels"))
        start = 0
        while start < width:
            end = start + 1
            while end < width and positions[end] == positions[end - 1] + 1:
                end += 1
            record = next((e for e in examples if e.input_ids == ids[start:end]), None)
            if record is None:  # the row's padding: a segment of its own, never learned
                assert ids[start:end] == [0] * (end - start) and set(labels[start:end]) == {IGNORE_INDEX}
            else:
                seen.append(record)
                assert positions[start:end] == list(range(end - start))
                assert labels[start] == IGNORE_INDEX
                assert labels[start + 1 : end] == record.labels[1:]
            start = end
    assert sorted(seen, key=lambda e: e.input_ids) == sorted(examples, key=lambda e: e.input_ids)
    assert real_tokens(examples) == 17


def test_flash_attention_layout_is_one_row_of_all_records():
    examples = [example(5, first=10), example(3, first=20), example(7, first=30)]
    batch = collate_packed(examples, pad_token_id=0, one_row=True)
    assert batch["input_ids"].shape == (1, 15)
    assert batch["position_ids"][0].tolist().count(0) == 3


@pytest.fixture(scope="module")
def peft_demo(demo_base):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    torch.manual_seed(0)
    tokenizer = AutoTokenizer.from_pretrained(demo_base, local_files_only=True)
    models = {}
    for attention in ("sdpa", "eager"):
        base = AutoModelForCausalLM.from_pretrained(
            demo_base, local_files_only=True, dtype=torch.float32, attn_implementation=attention
        )
        config = LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules=["q_proj", "v_proj"])
        model = get_peft_model(base, config)
        # Non-zero LoRA B, so that the adapters take part in what is compared.
        for name, parameter in model.named_parameters():
            if "lora_B" in name:
                torch.nn.init.normal_(parameter, std=0.05, generator=torch.Generator().manual_seed(len(name)))
        models[attention] = model.train()
    return tokenizer, models


@pytest.fixture(scope="module")
def records_of_mixed_length(peft_demo, clause_dataset):
    tokenizer, _ = peft_demo
    examples = encode_records(tokenizer, open_records(str(clause_dataset))[:12], system_prompt="", max_length=512)
    # Longer and shorter records side by side, as real data has them.
    long_one = Example(
        input_ids=examples[0].input_ids * 3, labels=[IGNORE_INDEX] * (2 * len(examples[0].labels)) + examples[0].labels
    )
    return [*examples, long_one]


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_no_record_attends_to_another_in_a_packed_row(peft_demo, attention):
    import torch

    _, models = peft_demo
    model = models[attention]
    first, second = example(9, first=40), example(6, first=60)
    changed_first = example(9, first=80)
    packed = collate_packed([first, second], pad_token_id=0, one_row=True)
    packed_changed = collate_packed([changed_first, second], pad_token_id=0, one_row=True)
    # Without use_cache=False transformers builds a cache and then ignores the packing (the trainer passes it).
    with torch.no_grad():
        logits = model(input_ids=packed["input_ids"], position_ids=packed["position_ids"], use_cache=False).logits
        logits_changed = model(
            input_ids=packed_changed["input_ids"], position_ids=packed_changed["position_ids"], use_cache=False
        ).logits
        alone = model(input_ids=torch.tensor([second.input_ids])).logits
    assert (logits[0, :9] - logits_changed[0, :9]).abs().max() > 1e-3  # the first record's change shows in it…
    assert torch.allclose(logits[0, 9:], logits_changed[0, 9:], atol=1e-5)  # …and nowhere in the second
    assert torch.allclose(logits[0, 9:], alone[0], atol=1e-5)  # which computes exactly as when alone


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
def test_the_loss_over_a_packed_batch_equals_the_loss_over_the_same_records_padded(
    peft_demo, records_of_mixed_length, attention
):
    import torch

    from trainers.lora_sft.modeling import Setup, TrainingForward

    _, models = peft_demo
    model = models[attention]
    setup = Setup(
        device_type="cpu",
        base_dtype="float32",
        autocast=False,
        attention=attention,
        packing=True,
        kernels="torch",
        gradient_checkpointing=False,
        quantization="none",
    )
    forward = TrainingForward(model, setup)
    records = records_of_mixed_length
    padded = collate(records, pad_token_id=0)
    packed = collate_packed(records, pad_token_id=0)
    assert packed["input_ids"].numel() < padded["input_ids"].numel()  # less computed…

    def loss_and_gradients(batch):
        model.zero_grad()
        loss_sum, tokens = forward(**batch)
        loss = loss_sum / tokens
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        return loss.item(), grads

    padded_loss, padded_grads = loss_and_gradients(padded)
    packed_loss, packed_grads = loss_and_gradients(packed)
    assert packed_loss == pytest.approx(padded_loss, abs=1e-4)  # …and the same loss
    for name, grad in padded_grads.items():
        assert torch.allclose(packed_grads[name], grad, atol=1e-5), name
    # The trainer's previous loss (transformers' own, full logits, padded) is the same number too.
    with torch.no_grad():
        reference = model(**padded).loss.item()
    assert padded_loss == pytest.approx(reference, abs=1e-5)
