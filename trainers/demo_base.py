"""A tiny Llama-architecture base model, built here in seconds, for demos and tests: nothing is downloaded.

The tokenizer is a BPE trained locally by ``tokenizers`` on the sample dataset text (or on synthetic contract
clauses when no sample is given), with byte fallback (any text encodes, even characters never seen), chat
special tokens and a ChatML chat template. The weights are random but seeded, so the same inputs build the
same files byte for byte. The model knows nothing: a fine-tune on it shows a genuine loss curve quickly.

``python -m trainers.demo_base OUTPUT`` builds one without Django; ``manage.py build_demo_base`` is the
same for operators.
"""

import json
import random
import shutil
from collections.abc import Iterable, Sequence
from pathlib import Path

DEMO_BASE_NAME = "finetune-studio/demo-llama"
# ChatML; with tools, the Hermes/Qwen2.5 convention the built-in inference engine parses: the definitions in
# the system turn between <tools> tags, each call as <tool_call>{"name": …, "arguments": {…}}</tool_call> after
# the turn's content, results as "tool" turns. Without tools the rendering is what it was before tools were
# supported, byte for byte. A record rendered turn by turn is a prefix of the whole rendering (the trainer's check).
# transformers renders with trim_blocks: a newline right after a block tag is written as {{ '\\n' }}.
TOOLS_PREAMBLE = (
    "# Tools\n\nYou may call one or more functions to assist with the user query.\n\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n<tools>"
)
TOOLS_CALL_FORMAT = (
    "{{ '\\n' }}</tools>\n\nFor each function call, return a json object with function name and arguments within "
    "<tool_call></tool_call> XML tags:\n<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n</tool_call>'
)
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% if tools %}"
    "<|im_start|>system\n"
    "{% if messages and messages[0]['role'] == 'system' %}{{ messages[0]['content'] }}\n\n{% endif %}"
    f"{TOOLS_PREAMBLE}"
    "{% for tool in tools %}{{ '\\n' }}{{ tool | tojson }}{% endfor %}"
    f"{TOOLS_CALL_FORMAT}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% for message in messages %}"
    "{% if not (tools and loop.first and message['role'] == 'system') %}"
    "<|im_start|>{{ message['role'] }}\n{{ message['content'] }}"
    "{% if message['tool_calls'] %}{% for call in message['tool_calls'] %}"
    "{% set function = call['function'] if call['function'] is defined else call %}"
    "{% if message['content'] or not loop.first %}{{ '\\n' }}{% endif %}"
    '<tool_call>\n{"name": {{ function[\'name\'] | tojson }}, "arguments": '
    "{% if function['arguments'] is string %}{{ function['arguments'] }}"
    "{% else %}{{ function['arguments'] | tojson }}{% endif %}}\n</tool_call>"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endif %}"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<|im_start|>", "<|im_end|>"]
BYTE_TOKENS = [f"<0x{value:02X}>" for value in range(256)]

# Synthetic contract clauses: five labels, several sentence shapes each, filled from shared slots so that a
# label must be learned from its wording, not from a name or a number.
CLAUSE_LABELS = {
    "termination": [
        "Either party may terminate this agreement with {days} days written notice to {party}.",
        "{party} may end the contract immediately if the other side commits a material breach.",
        "This agreement terminates automatically on {date} unless renewed in writing.",
        "Upon termination {party} shall return all property within {days} days.",
    ],
    "confidentiality": [
        "{party} shall keep all confidential information secret for {years} years.",
        "Neither party may disclose the terms of this agreement to any third party without consent.",
        "{party} agrees not to reveal trade secrets received during the project.",
        "All documents marked confidential remain the property of {party} and must not be shared.",
    ],
    "payment": [
        "{party} shall pay the invoice within {days} days of receipt.",
        "Fees of {amount} euros are due on {date} by bank transfer.",
        "Late payments bear interest at {rate} percent per month.",
        "{party} will reimburse reasonable expenses upon presentation of receipts.",
    ],
    "liability": [
        "The total liability of {party} shall not exceed {amount} euros.",
        "Neither party is liable for indirect or consequential damages.",
        "{party} shall indemnify the other party against all third party claims.",
        "Liability for gross negligence or wilful misconduct is not limited.",
    ],
    "governing_law": [
        "This agreement is governed by the laws of {country}.",
        "Any dispute shall be settled by the courts of {city}.",
        "The parties submit to the exclusive jurisdiction of {country}.",
        "Disputes are resolved by arbitration in {city} under the rules of the chamber of commerce.",
    ],
}
_SLOTS = {
    "party": ["the Supplier", "the Customer", "the Licensee", "the Contractor", "the Client", "the Vendor"],
    "days": ["10", "14", "30", "45", "60", "90"],
    "years": ["two", "three", "five", "ten"],
    "date": ["31 December", "1 March", "the end of the term", "30 June"],
    "amount": ["5,000", "10,000", "250,000", "1 million"],
    "rate": ["1", "1.5", "2", "5"],
    "country": ["France", "Germany", "Spain", "Ireland", "the Netherlands"],
    "city": ["Paris", "Berlin", "Madrid", "Dublin", "Amsterdam"],
}
CLASSIFY_INSTRUCTION = "Classify the contract clause."


def synthetic_clause_records(count: int, *, seed: int = 0, clauses_per_record: int = 1) -> list[dict]:
    """``count`` records {"instruction", "input", "output"} with balanced labels, deterministic for a seed.

    ``clauses_per_record`` > 1 makes longer inputs (several clauses of the same kind), for throughput checks.
    """
    rng = random.Random(seed)
    labels = sorted(CLAUSE_LABELS)
    records = []
    for index in range(count):
        label = labels[index % len(labels)]
        clauses = [
            rng.choice(CLAUSE_LABELS[label]).format(**{slot: rng.choice(values) for slot, values in _SLOTS.items()})
            for _ in range(clauses_per_record)
        ]
        records.append({"instruction": CLASSIFY_INSTRUCTION, "input": " ".join(clauses), "output": label})
    rng.shuffle(records)
    return records


def corpus_from_files(paths: Iterable[Path]) -> list[str]:
    """Text of every record in the given dataset files (JSON, JSON lines or CSV)."""
    from finetune_studio.records import open_records

    texts = []
    for path in sorted(paths):
        for record in open_records(str(path)):
            texts.extend([record.text, record.label])
    return texts


def _train_tokenizer(texts: Sequence[str], vocab_size: int):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True))
    # Newlines are tokens of their own so that a chat prompt ending in "\n" is always a token prefix of
    # prompt + answer: the trainer masks the prompt by that prefix.
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split("\n", behavior="isolated"),
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="never"),
        ]
    )
    tokenizer.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse()])
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=SPECIAL_TOKENS, min_frequency=2, show_progress=False
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    # tokenizers' trainer does not add the 256 byte tokens that byte fallback needs: append them to the vocab
    # (not as added tokens, which would be matched literally in the text and dropped on decode).
    state = json.loads(tokenizer.to_str())
    vocab = state["model"]["vocab"]
    for token in BYTE_TOKENS:
        if token not in vocab:
            vocab[token] = len(vocab)
    state["model"]["byte_fallback"] = True
    return Tokenizer.from_str(json.dumps(state))


def build_demo_base(
    output: str | Path,
    *,
    texts: Sequence[str] | None = None,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    intermediate_size: int | None = None,
    vocab_size: int = 512,
    max_position_embeddings: int = 1024,
    seed: int = 0,
    name: str = DEMO_BASE_NAME,
    force: bool = False,
) -> Path:
    """Build the base into ``output`` (a new folder; ``force`` replaces an existing one) and return its path."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast
    from transformers.utils import logging as transformers_logging

    transformers_logging.disable_progress_bar()

    output = Path(output)
    if output.exists():
        if not force:
            raise FileExistsError(f"{output} already exists (use force to rebuild it)")
        shutil.rmtree(output)
    if texts is None:
        texts = [value for record in synthetic_clause_records(1000, seed=seed) for value in record.values()]
    # The chat roles and the newline belong in the vocabulary, not to byte fallback.
    corpus = [*texts, CLASSIFY_INSTRUCTION, *(["system\n", "user\n", "assistant\n"] * 8)]

    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=_train_tokenizer(corpus, vocab_size),
        bos_token="<s>",
        eos_token="<|im_end|>",
        unk_token="<unk>",
        pad_token="<pad>",
        additional_special_tokens=["<|im_start|>", "</s>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_position_embeddings,
    )
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size or hidden_size * 2,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config)
    tmp = output.with_name(output.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    # The declared identity: the trainer writes it (not this folder's absolute path) as the adapter's base.
    config_path = tmp / "config.json"
    config_data = json.loads(config_path.read_text())
    config_data["_name_or_path"] = name
    config_path.write_text(json.dumps(config_data, indent=2, sort_keys=True) + "\n")
    for path in tmp.iterdir():
        path.chmod(0o644)
    tmp.rename(output)
    return output


def main(argv: Sequence[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description="Build the tiny demo base model (no download).")
    parser.add_argument("output")
    parser.add_argument("--force", action="store_true")
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--heads", type=int, default=4)
    args = parser.parse_args(argv)
    path = build_demo_base(
        args.output, hidden_size=args.hidden_size, num_layers=args.layers, num_heads=args.heads, force=args.force
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
