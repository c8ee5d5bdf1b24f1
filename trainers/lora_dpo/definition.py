"""The lora-dpo trainer's definition: preference (DPO) training of a LoRA adapter, importable without torch."""

from trainers.lora_sft.definition import HYPERPARAMETER_SCHEMA as SFT_SCHEMA

# lora-sft's options that mean the same here; packing and the kernels choice do not apply (both answers of a pair are
# scored per sequence, from the answers' own positions), nor do the best-epoch options.
_SHARED = (
    "lora_r",
    "lora_alpha",
    "lora_dropout",
    "target_modules",
    "batch_size",
    "gradient_accumulation_steps",
    "max_length",
    "warmup_ratio",
    "weight_decay",
    "max_grad_norm",
    "seed",
    "validation_fraction",
    "validation_max_records",
    "logging_steps",
    "system_prompt",
    "bf16",
    "base_dtype",
    "attention",
    "gradient_checkpointing",
    "quantization",
)

HYPERPARAMETER_SCHEMA = {
    "epochs": {**SFT_SCHEMA["epochs"], "default": 1, "help": "Passes over the preference pairs."},
    "learning_rate": {
        **SFT_SCHEMA["learning_rate"],
        "default": 5e-5,
        "help": "Peak learning rate of AdamW (warm-up, then linear decay). Preference training wants a lower rate "
        "than supervised: 5e-6–5e-5 on real bases; the tiny demo base learns at 1e-2.",
    },
    "beta": {
        "type": "number",
        "default": 0.1,
        "minimum": 0.001,
        "maximum": 10.0,
        "help": "How far the model may move from the base: the DPO temperature. Lower lets the preferred answers "
        "win by more at the cost of drifting further from what the base would say (OpenAI's beta).",
    },
    **{name: SFT_SCHEMA[name] for name in _SHARED},
    "batch_size": {**SFT_SCHEMA["batch_size"], "default": 4, "help": "Preference pairs per forward pass."},
}

DEFINITION = {
    "name": "lora-dpo",
    "description": (
        "Direct preference optimisation (DPO) of a LoRA adapter with transformers + PEFT, on CUDA when present, else "
        "CPU: trains on preference records (OpenAI's format: input messages, a preferred and a non-preferred "
        "answer) to make the preferred answer more likely than the other, measured against the model as training "
        "starts (the base, or the version it trains further: the reference, so nothing else is loaded). Reports "
        "the DPO loss, the share of pairs whose preferred answer wins (reward accuracy) and the reward margin, "
        "every logging step and on validation_fraction of the pairs every epoch; leaves lora_adapters/ as lora-sft "
        "does, so deploy and evaluation work unchanged. Usually run on a lora-sft version (train it further): a "
        "chat model first, then its preferences. Needs the training extra (requirements-train.txt)."
    ),
    "command": ["{python}", "-m", "trainers.lora_dpo"],
    "hyperparameter_schema": HYPERPARAMETER_SCHEMA,
    "required_modules": ["torch", "transformers", "peft"],
    "loads_base_model": True,
    "takes_validation_dataset": True,
    "record_formats": ["preference"],
    "takes_initial_adapter": True,
    "presets": {"demo-base": {"epochs": 10, "learning_rate": 0.01, "batch_size": 8, "validation_fraction": 0.2}},
    "queue": "training",
    "timeout_seconds": 6 * 3600,
}
