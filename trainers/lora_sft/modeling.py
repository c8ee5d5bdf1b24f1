"""How the base is held and computed: dtypes, attention kernel, packing, fused kernels, checkpointing, QLoRA.

``resolve_setup`` turns the hyperparameters into one decision per option for this device, and refuses what
cannot run here (nf4 on a CPU, Liger without its package…) with the reason, before any weight is loaded.
The frozen base is loaded in its compute dtype (bfloat16 on a GPU: half the memory and no per-step casts of
fp32 weights), the LoRA weights are float32, and so is AdamW's state, which is created from them.
"""

import importlib.util
from dataclasses import asdict, dataclass

import torch  # imported by the trainer only once torch is known to be installed


class SetupError(ValueError):
    """An option that cannot run on this device or without a package; the message says which and why."""


@dataclass(frozen=True)
class Setup:
    device_type: str
    base_dtype: str  # "bfloat16" | "float32"
    autocast: bool  # bfloat16 autocast (GPU): LoRA matmuls in bf16 over fp32 master weights
    attention: str  # "sdpa" | "flash_attention_2" | "eager"
    packing: bool
    kernels: str  # "liger" | "torch"
    gradient_checkpointing: bool
    quantization: str  # "none" | "nf4"

    @property
    def one_row(self) -> bool:
        # flash-attention's variable-length kernel computes within records only: one row costs nothing extra.
        return self.attention == "flash_attention_2"

    def describe(self) -> dict:
        return asdict(self)


def resolve_setup(params: dict, *, device_type: str, bf16_supported: bool) -> Setup:
    cuda = device_type == "cuda"
    autocast = bool(params["bf16"]) and cuda and bf16_supported
    quantization = params.get("quantization", "none")
    if quantization == "nf4":
        if not cuda:
            raise SetupError(
                "quantization nf4 (QLoRA) needs a CUDA GPU (bitsandbytes' 4-bit kernels): this worker has none. "
                "Run the job on a GPU worker or set quantization to none."
            )
        if importlib.util.find_spec("bitsandbytes") is None:
            raise SetupError(
                "quantization nf4 (QLoRA) needs the bitsandbytes package on the worker (requirements-train-gpu.txt)"
            )
    base_dtype = params.get("base_dtype", "auto")
    if base_dtype == "auto":
        base_dtype = "bfloat16" if autocast or (quantization == "nf4" and bf16_supported) else "float32"
    if base_dtype == "bfloat16" and cuda and not bf16_supported:
        raise SetupError("base_dtype bfloat16: this GPU does not support bfloat16; use float32")
    attention = params.get("attention", "auto")
    flash_installed = importlib.util.find_spec("flash_attn") is not None
    if attention == "auto":
        attention = "flash_attention_2" if cuda and flash_installed and base_dtype == "bfloat16" else "sdpa"
    elif attention == "flash_attention_2":
        if not cuda or not flash_installed:
            raise SetupError("attention flash_attention_2 needs a CUDA GPU and the flash-attn package; use sdpa")
        if base_dtype != "bfloat16":
            raise SetupError("attention flash_attention_2 computes in bfloat16 only: set base_dtype to bfloat16")
    packing = {"on": True, "off": False}.get(params.get("packing", "auto"), cuda)
    kernels = params.get("kernels", "auto")
    if kernels in ("auto", "liger"):
        from .losses import liger_available

        usable, reason = liger_available()
        if kernels == "liger" and not usable:
            raise SetupError(f"kernels liger: {reason}; use torch (the chunked cross-entropy) or auto")
        kernels = "liger" if usable else "torch"
    return Setup(
        device_type=device_type,
        base_dtype=base_dtype,
        autocast=autocast,
        attention=attention,
        packing=packing,
        kernels=kernels,
        gradient_checkpointing=bool(params.get("gradient_checkpointing", False)),
        quantization=quantization,
    )


def load_base(base_model: str, setup: Setup, *, device):
    """The frozen base as ``from_pretrained`` gives it, in the setup's dtype, attention and quantization."""
    from transformers import AutoModelForCausalLM

    dtype = getattr(torch, setup.base_dtype)
    kwargs = {"local_files_only": True, "dtype": dtype, "attn_implementation": setup.attention}
    if device.type == "cuda":
        # Straight from the files onto the GPU (bitsandbytes also quantizes on the way there).
        kwargs["device_map"] = {"": device.index if device.index is not None else torch.cuda.current_device()}
    if setup.quantization == "nf4":
        from transformers import BitsAndBytesConfig

        kwargs["quantization_config"] = BitsAndBytesConfig(
            load_in_4bit=True,
            bnb_4bit_quant_type="nf4",
            bnb_4bit_use_double_quant=True,
            bnb_4bit_compute_dtype=dtype,
        )
    model = AutoModelForCausalLM.from_pretrained(base_model, **kwargs)
    if setup.kernels == "liger":
        apply_liger_kernels(model)
    return model


def apply_liger_kernels(model) -> list[str]:
    """Liger's RMSNorm, RoPE and SwiGLU on this model instance (Llama-family only); the loss is ours."""
    model_type = getattr(model.config, "model_type", "")
    if model_type not in ("llama", "mistral", "qwen2"):
        return []
    from liger_kernel import transformers as liger

    patch = getattr(liger, f"apply_liger_kernel_to_{model_type}")
    patch(rope=True, rms_norm=True, swiglu=True, cross_entropy=False, fused_linear_cross_entropy=False, model=model)
    return ["rope", "rms_norm", "swiglu"]


def prepare_for_training(model, setup: Setup):
    """After ``get_peft_model``: float32 adapters, frozen base, optional gradient checkpointing."""
    for name, parameter in model.named_parameters():
        if parameter.requires_grad:
            # PEFT already upcasts adapters of a half-precision base; make it a guarantee, not a default.
            parameter.data = parameter.data.to(torch.float32)
        elif "lora_" in name:
            raise RuntimeError(f"LoRA weight {name} is frozen")
    if setup.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        # The embeddings are frozen: without this the first checkpointed block would see no input needing grad.
        model.enable_input_require_grads()
    model.config.use_cache = False
    return model


def fused_loss_applies(model) -> tuple[bool, str]:
    """Whether the loss can be computed from the last hidden states and lm_head's weight alone."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    head = base.get_output_embeddings()
    config = base.config
    if type(head) is not torch.nn.Linear:
        return False, f"lm_head is a {type(head).__name__} (adapted or quantized), not a plain Linear"
    for name in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
        if getattr(config, name, None) not in (None, 1, 1.0):
            return False, f"the base transforms its logits ({name})"
    return True, ""


class TrainingForward(torch.nn.Module):
    """The step's forward pass: (sum of the token losses, trained tokens) of one micro-batch.

    A module of its own so that DistributedDataParallel can wrap it: DDP must see the forward it synchronises.
    The fused path runs the decoder, then the loss from lm_head's weight over the trained positions only.
    """

    def __init__(self, model, setup: Setup):
        super().__init__()
        self.model = model
        self.kernel = setup.kernels
        self.fused, self.unfused_reason = fused_loss_applies(model)

    def forward(self, input_ids, labels, attention_mask=None, position_ids=None):
        from .losses import loss_sum, plain_loss_sum

        inputs = {"input_ids": input_ids, "attention_mask": attention_mask, "position_ids": position_ids}
        if not self.fused:
            return plain_loss_sum(self.model(**inputs, use_cache=False).logits, labels)
        base = self.model.get_base_model()
        hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
        head = base.get_output_embeddings()
        return loss_sum(hidden, head.weight, labels, kernel=self.kernel, bias=head.bias)


def dtype_report(model, optimizer) -> dict:
    """The dtypes actually held: frozen weights, trainable weights, AdamW's state (names sorted)."""
    frozen = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if not p.requires_grad})
    trainable = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters() if p.requires_grad})
    state = sorted(
        {
            str(value.dtype).removeprefix("torch.")
            for per_parameter in optimizer.state.values()
            for key, value in per_parameter.items()
            if key != "step" and hasattr(value, "dtype")
        }
    )
    return {"frozen": frozen, "trainable": trainable, "optimizer_state": state}
