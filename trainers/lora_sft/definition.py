"""The lora-sft trainer's definition: what the studio shows, validates and runs.

Importable without torch (the jobs app reads it to register the trainer and to validate a job's
hyperparameters); the training code itself lives in ``train.py``.
"""

HYPERPARAMETER_SCHEMA = {
    "epochs": {
        "type": "integer",
        "default": 3,
        "minimum": 1,
        "maximum": 1000,
        "help": "Passes over the training records. Small datasets need many (30 over 200 records).",
    },
    "learning_rate": {
        "type": "number",
        "default": 2e-4,
        "minimum": 1e-8,
        "maximum": 1.0,
        "help": "Peak learning rate of AdamW, reached after the warm-up and decayed linearly to 0. "
        "1e-4–3e-4 suits real bases; the tiny demo base learns at 1e-2.",
    },
    "lora_r": {
        "type": "integer",
        "default": 8,
        "minimum": 1,
        "maximum": 256,
        "help": "Rank of the LoRA update matrices.",
    },
    "lora_alpha": {
        "type": "integer",
        "default": 16,
        "minimum": 1,
        "maximum": 1024,
        "help": "LoRA scaling (the update is multiplied by alpha / r). An integer, as Ollama requires.",
    },
    "lora_dropout": {
        "type": "number",
        "default": 0.05,
        "minimum": 0.0,
        "maximum": 0.9,
        "help": "Dropout applied to the LoRA input during training.",
    },
    "target_modules": {
        "type": "array",
        "default": ["q_proj", "v_proj"],
        "help": "Names of the linear layers that get LoRA adapters (Llama: q_proj, k_proj, v_proj, o_proj, "
        "gate_proj, up_proj, down_proj).",
    },
    "batch_size": {
        "type": "integer",
        "default": 8,
        "minimum": 1,
        "maximum": 512,
        "help": "Records per forward pass.",
    },
    "gradient_accumulation_steps": {
        "type": "integer",
        "default": 1,
        "minimum": 1,
        "maximum": 256,
        "help": "Forward passes per optimizer step (effective batch = batch_size × this).",
    },
    "max_length": {
        "type": "integer",
        "default": 512,
        "minimum": 16,
        "maximum": 32768,
        "help": "Longest rendered record in tokens; longer prompts are cut from the left, keeping the answer.",
    },
    "warmup_ratio": {
        "type": "number",
        "default": 0.03,
        "minimum": 0.0,
        "maximum": 0.5,
        "help": "Share of the optimizer steps spent raising the learning rate linearly from 0.",
    },
    "weight_decay": {
        "type": "number",
        "default": 0.0,
        "minimum": 0.0,
        "maximum": 1.0,
        "help": "AdamW weight decay on the LoRA weights.",
    },
    "max_grad_norm": {
        "type": "number",
        "default": 1.0,
        "minimum": 0.0,
        "maximum": 1000.0,
        "help": "Gradients are clipped to this norm; 0 turns clipping off.",
    },
    "seed": {
        "type": "integer",
        "default": 42,
        "minimum": 0,
        "maximum": 2**31 - 1,
        "help": "Seeds the validation split, the shuffling and the LoRA initialisation.",
    },
    "validation_fraction": {
        "type": "number",
        "default": 0.1,
        "minimum": 0.0,
        "maximum": 0.5,
        "help": "Share of the records held out to report validation loss and exact match after each epoch (0: none).",
    },
    "validation_max_records": {
        "type": "integer",
        "default": 256,
        "minimum": 1,
        "maximum": 100000,
        "help": "At most this many records are held out (the rest of the validation share is trained on): a "
        "small sample keeps each epoch's validation quick on large datasets.",
    },
    "keep_best_epoch": {
        "type": "boolean",
        "default": False,
        "help": "Save the LoRA weights of the epoch with the lowest validation loss rather than the last epoch's "
        "(needs validation records). Against overfitting: the adapter kept is the one that did best on records it "
        "never trained on.",
    },
    "early_stopping_patience": {
        "type": "integer",
        "default": 0,
        "minimum": 0,
        "maximum": 1000,
        "help": "Stop once the validation loss has not improved for this many epochs in a row (0: run every epoch; "
        "needs validation records). With keep_best_epoch the best epoch's adapter is saved.",
    },
    "logging_steps": {
        "type": "integer",
        "default": 10,
        "minimum": 1,
        "maximum": 100000,
        "help": "Optimizer steps between two metrics lines (loss averaged over them).",
    },
    "system_prompt": {
        "type": "string",
        "default": "",
        "help": "System message put before every record that has none of its own (empty: none). Deploy with the "
        "same one.",
    },
    "bf16": {
        "type": "boolean",
        "default": True,
        "help": "bfloat16 on a GPU that supports it: the frozen base is held in bfloat16 and computed under "
        "autocast, the LoRA weights and their optimizer state stay float32 (float32 otherwise, and always on the "
        "CPU unless base_dtype says bfloat16).",
    },
    # The GPU-shaped options (docs/training.md "Speed on a GPU"); trainers/lora_sft/modeling.py resolves them.
    "base_dtype": {
        "type": "enum",
        "choices": ["auto", "bfloat16", "float32"],
        "default": "auto",
        "help": "dtype of the frozen base weights. auto: bfloat16 on a GPU when bf16 is on, else float32. "
        "bfloat16 on the CPU works (slowly) for checks. The LoRA weights are float32 whatever this says.",
    },
    "attention": {
        "type": "enum",
        "choices": ["auto", "sdpa", "flash_attention_2", "eager"],
        "default": "auto",
        "help": "Attention kernel. auto: flash_attention_2 on a GPU when the flash-attn package is installed, "
        "else PyTorch's scaled-dot-product attention (sdpa).",
    },
    "packing": {
        "type": "enum",
        "choices": ["auto", "on", "off"],
        "default": "auto",
        "help": "Pack the records of a batch into as few rows as they fit, each keeping its own positions and "
        "attention (no padding computed, nothing seen across records). auto: on on a GPU, off on the CPU. "
        "The loss and the steps are the same either way.",
    },
    "kernels": {
        "type": "enum",
        "choices": ["auto", "liger", "torch"],
        "default": "auto",
        "help": "liger: Liger kernels (fused linear cross-entropy that never holds the full logits, RMSNorm, "
        "RoPE, SwiGLU; needs a GPU and the liger-kernel package). torch: a chunked cross-entropy in plain "
        "PyTorch over the trained tokens only. auto: liger when it can run here, else torch.",
    },
    "gradient_checkpointing": {
        "type": "boolean",
        "default": False,
        "help": "Recompute activations in the backward pass: much less memory for about a third more compute.",
    },
    "quantization": {
        "type": "enum",
        "choices": ["none", "nf4"],
        "default": "none",
        "help": "nf4: QLoRA, the frozen base loaded in 4 bits through bitsandbytes (needs a CUDA GPU and the "
        "bitsandbytes package). The adapter is saved exactly as without it.",
    },
}

DEFINITION = {
    "name": "lora-sft",
    "description": (
        "Supervised LoRA fine-tuning of a causal language model with transformers + PEFT, on CUDA when present, "
        "else CPU. The base model must be a local folder or already in the local Hugging Face cache (nothing is "
        "downloaded). Each record is rendered whole with the base tokenizer's chat template (chat records with "
        "all their turns; otherwise user = instruction/input, prompt or text, assistant = output, completion or "
        "label) and only the assistant turns with weight 1 are learned. Reports loss every logging step and "
        "validation loss and exact match (accuracy for text/label records) every epoch, on validation_fraction of the "
        "records or on the job's validation dataset when it names one; leaves lora_adapters/ "
        "(adapter_model.safetensors, adapter_config.json, tokenizer and chat template) and metrics.json. Needs the "
        "training extra "
        "(requirements-train.txt)."
    ),
    "command": ["{python}", "-m", "trainers.lora_sft"],
    "hyperparameter_schema": HYPERPARAMETER_SCHEMA,
    "required_modules": ["torch", "transformers", "peft"],
    "loads_base_model": True,
    # A job's validation dataset (VALIDATION_DATASET_PATH) replaces validation_fraction's share of its records.
    "takes_validation_dataset": True,
    "takes_initial_adapter": True,
    # The tiny demo base knows nothing: these learn the sample set visibly within seconds on a CPU (loss ≈ 6.7 →
    # 5.5, held-out accuracy 0 → ≈ 0.9, docs/training.md); the defaults are for real bases.
    "presets": {"demo-base": {"epochs": 20, "learning_rate": 0.02, "batch_size": 16, "validation_fraction": 0.2}},
    "queue": "training",
    "timeout_seconds": 6 * 3600,
}
