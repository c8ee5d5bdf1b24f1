"""Supervised LoRA fine-tuning: a plain PyTorch loop over a transformers causal LM wrapped by PEFT.

A loop of our own rather than ``transformers.Trainer``: every printed line is ours (no progress bars, no
per-step dicts), the learning rate logged is the one used for the step, and a loss that turns NaN stops the
run at that step with a clear error instead of saving a broken adapter.

Contract (docs/trainers.md): env JOB_ID, DATASET_PATH, HYPERPARAMS_FILE, OUTPUT_DIR, BASE_MODEL. Exit 0 when
the artifacts are written; 2 for bad input (environment, hyperparameters, dataset, base model); 1 when
training fails; 143 when stopped by SIGTERM.
"""

import hashlib
import json
import math
import os
import signal
import sys
import time
import traceback
import warnings
from dataclasses import dataclass
from pathlib import Path

from .params import HyperparameterError, read_hyperparameters
from .report import Reporter

EXIT_FAILED = 1
EXIT_BAD_INPUT = 2
EXIT_TERMINATED = 143
ADAPTER_DIR = "lora_adapters"
# Where a test asks for the logits of a fixed input computed by the in-memory model at the end of training,
# to prove the saved adapter reloads to the same model. Never set in production.
CHECK_DIR_ENV = "LORA_SFT_CHECK_DIR"


class BadInput(Exception):
    pass


class TrainingFailed(Exception):
    pass


class Terminated(Exception):
    pass


@dataclass(frozen=True)
class RunConfig:
    job_id: str
    dataset_path: Path
    hyperparams_file: str | None
    output_dir: Path
    base_model: str
    base_model_name: str = ""  # the name the studio records (BASE_MODEL_NAME); the folder's identity otherwise
    validation_path: Path | None = None  # VALIDATION_DATASET_PATH: held out instead of validation_fraction
    initial_adapter_path: Path | None = None  # INITIAL_ADAPTER_PATH: the adapter of the version it trains further
    initial_adapter_name: str = ""  # INITIAL_ADAPTER_NAME: that version's name (support-bot:v1)


def force_offline() -> None:
    # Before transformers/huggingface_hub are imported: they read these once. Without them a name that is
    # not a local folder stalls for tens of seconds trying the network before failing.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"
    os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
    os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] = "1"
    os.environ["TOKENIZERS_PARALLELISM"] = "false"


def read_environment(environ=os.environ) -> RunConfig:
    missing = [name for name in ("DATASET_PATH", "OUTPUT_DIR", "BASE_MODEL") if not environ.get(name)]
    if missing:
        raise BadInput(f"missing environment variable(s): {', '.join(missing)} (see docs/trainers.md)")
    dataset_path = Path(environ["DATASET_PATH"])
    if not dataset_path.is_file():
        raise BadInput(f"DATASET_PATH {dataset_path} is not a file")
    validation_path = Path(environ["VALIDATION_DATASET_PATH"]) if environ.get("VALIDATION_DATASET_PATH") else None
    if validation_path is not None and not validation_path.is_file():
        raise BadInput(f"VALIDATION_DATASET_PATH {validation_path} is not a file")
    initial_path = Path(environ["INITIAL_ADAPTER_PATH"]) if environ.get("INITIAL_ADAPTER_PATH") else None
    if initial_path is not None and not (initial_path / "adapter_config.json").is_file():
        raise BadInput(f"INITIAL_ADAPTER_PATH {initial_path} holds no adapter_config.json")
    return RunConfig(
        job_id=environ.get("JOB_ID", ""),
        dataset_path=dataset_path,
        hyperparams_file=environ.get("HYPERPARAMS_FILE") or None,
        output_dir=Path(environ["OUTPUT_DIR"]),
        base_model=environ["BASE_MODEL"],
        base_model_name=environ.get("BASE_MODEL_NAME", ""),
        validation_path=validation_path,
        initial_adapter_path=initial_path,
        initial_adapter_name=environ.get("INITIAL_ADAPTER_NAME", ""),
    )


def base_identity(base_model: str) -> str:
    """The name to record as the adapter's base: never this machine's absolute path."""
    path = Path(base_model).expanduser()
    if not path.exists():
        return base_model  # a repository id, resolved from the local Hugging Face cache
    resolved = path.resolve()
    for part in resolved.parts:
        if part.startswith("models--"):  # …/hub/models--org--name/snapshots/<revision>
            return part[len("models--") :].replace("--", "/")
    try:
        declared = json.loads((resolved / "config.json").read_text()).get("_name_or_path")
    except (OSError, ValueError, AttributeError):
        declared = None
    if isinstance(declared, str) and declared and not os.path.isabs(declared) and not declared.startswith(("~", ".")):
        return declared
    return resolved.name


def linear_schedule(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        # ``step`` is the number of optimizer steps already taken: the first step uses a non-zero rate.
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup_steps))

    return factor


def _rounded(value: float, digits: int = 6) -> float:
    return float(f"{value:.{digits}g}")


def _evaluate(model, examples, *, batch_size: int, pad_token_id: int, device, autocast) -> dict:
    """Token-weighted answer loss, and accuracy = share of records whose every answer token is the argmax.

    With teacher forcing, "every answer token (label and end-of-turn) is the argmax" is exactly "greedy
    decoding from the prompt produces the label and stops", at the cost of one forward pass.
    """
    import torch
    import torch.nn.functional as functional

    from .chat import IGNORE_INDEX
    from .data import collate

    model.eval()
    loss_sum, tokens, correct = 0.0, 0, 0
    with torch.no_grad():
        for start in range(0, len(examples), batch_size):
            batch = collate(examples[start : start + batch_size], pad_token_id=pad_token_id)
            batch = {key: value.to(device) for key, value in batch.items()}
            with autocast():
                logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
            logits = logits[:, :-1].float()
            targets = batch["labels"][:, 1:]
            loss_sum += functional.cross_entropy(
                logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
            ).item()
            answer = targets != IGNORE_INDEX
            tokens += int(answer.sum())
            hits = (logits.argmax(-1) == targets) | ~answer
            correct += int(hits.all(dim=1).sum())
    model.train()
    return {"eval_loss": loss_sum / max(1, tokens), "eval_accuracy": correct / max(1, len(examples))}


def sanitize_saved_files(adapter_dir: Path, *, identity: str, local_paths: list[str]) -> None:
    """Integer lora_alpha, the base's identity instead of a local path, readable files (PEFT saves 0600)."""
    config_path = adapter_dir / "adapter_config.json"
    config = json.loads(config_path.read_text())
    alpha = config.get("lora_alpha")
    if isinstance(alpha, float) and alpha.is_integer():
        config["lora_alpha"] = int(alpha)
    config["base_model_name_or_path"] = identity
    config_path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    tokenizer_config_path = adapter_dir / "tokenizer_config.json"
    if tokenizer_config_path.exists():
        tokenizer_config = json.loads(tokenizer_config_path.read_text())
        if "name_or_path" in tokenizer_config:
            tokenizer_config["name_or_path"] = identity
        # How this run loaded the base, not a property of the tokenizer: a later load must not inherit it.
        for key in ("is_local", "local_files_only"):
            tokenizer_config.pop(key, None)
        tokenizer_config_path.write_text(json.dumps(tokenizer_config, indent=2, sort_keys=True) + "\n")
    # PEFT's model card template is all placeholders; the registry writes the model's README.
    (adapter_dir / "README.md").unlink(missing_ok=True)
    for path in adapter_dir.iterdir():
        if path.suffix in {".md", ".json", ".jinja", ".txt"}:
            text = path.read_text(encoding="utf-8")
            cleaned = text
            for local in local_paths:
                cleaned = cleaned.replace(local, identity)
            if cleaned != text:
                path.write_text(cleaned, encoding="utf-8")
        path.chmod(0o644)


def _write_check(check_dir: Path, model, example, device) -> None:
    import torch
    from safetensors.torch import save_file

    check_dir.mkdir(parents=True, exist_ok=True)
    input_ids = torch.tensor([example.input_ids], dtype=torch.long)
    model.eval()
    with torch.no_grad():
        logits = model(input_ids=input_ids.to(device)).logits.float().cpu()
    save_file({"input_ids": input_ids, "logits": logits.contiguous()}, str(check_dir / "logits.safetensors"))


def read_dataset(path: Path) -> list:
    """The training dataset's records; BadInput naming the line when one cannot be read, or when there are none."""
    from finetune_studio.records import RecordError, open_records

    try:
        records = open_records(str(path))
    except RecordError as exc:
        raise BadInput(f"dataset {exc.location}: {exc.reason}") from None
    if not records:
        raise BadInput("the dataset has no records")
    return records


def device_setup(params: dict):
    """How this worker holds and computes the base (``modeling.Setup``); BadInput when an option cannot run here."""
    import torch

    from . import modeling

    cuda = torch.cuda.is_available()
    try:
        return modeling.resolve_setup(
            params, device_type="cuda" if cuda else "cpu", bf16_supported=cuda and torch.cuda.is_bf16_supported()
        )
    except modeling.SetupError as exc:
        raise BadInput(str(exc)) from None


def load_tokenizer_and_base(config: RunConfig, setup, *, device, identity: str, out: Reporter):
    """(tokenizer with a chat template, the frozen base as the setup says, the padding id); BadInput when the base
    cannot be loaded here. The libraries' own progress bars and chatter are off: every printed line is ours."""
    import transformers
    from transformers import AutoTokenizer

    from . import modeling
    from .chat import FALLBACK_CHAT_TEMPLATE

    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        tokenizer = AutoTokenizer.from_pretrained(config.base_model, local_files_only=True)
        model = modeling.load_base(config.base_model, setup, device=device)
    except (OSError, ValueError, KeyError, TypeError):
        # Never the loader's text: it tells whether a path exists and what a config.json there declares.
        raise BadInput(f"base model {identity} is not available here") from None
    if not tokenizer.chat_template:
        out.warn("the base tokenizer has no chat template: records are rendered with a ChatML template")
        tokenizer.chat_template = FALLBACK_CHAT_TEMPLATE
    pad_token_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    if pad_token_id is None:
        pad_token_id = 0  # padding positions are masked out of attention and loss: any id will do
    return tokenizer, model, pad_token_id


def save_adapter(model, tokenizer, *, config: RunConfig, identity: str) -> Path:
    """The LoRA adapter, its tokenizer and chat template under OUTPUT_DIR/lora_adapters, naming the base by its
    identity (never this machine's path)."""
    adapter_dir = config.output_dir / ADAPTER_DIR
    adapter_dir.mkdir(parents=True, exist_ok=True)
    model.peft_config["default"].base_model_name_or_path = identity
    # Embeddings are never trained here; "auto" would look the base up by its identity name and warn.
    model.save_pretrained(adapter_dir, save_embedding_layers=False)
    tokenizer.save_pretrained(adapter_dir)
    local_paths = sorted(
        {str(Path(config.base_model).expanduser().resolve()), config.base_model}, key=len, reverse=True
    )
    sanitize_saved_files(adapter_dir, identity=identity, local_paths=[p for p in local_paths if os.path.isabs(p)])
    return adapter_dir


def split_for_validation(records, given_validation, params: dict, *, out: Reporter) -> tuple[list, list]:
    """(training records, validation records): ``validation_fraction`` held out (seeded), or every record trained
    on and the job's validation dataset validated on; at most ``validation_max_records`` either way."""
    from .data import split_records

    cap, seed = params["validation_max_records"], params["seed"]
    if given_validation is None:
        train_records, held_out = split_records(records, fraction=params["validation_fraction"], seed=seed)
        return train_records + held_out[cap:], held_out[:cap]
    if len(given_validation) > cap:
        out.warn(
            f"the validation dataset has {len(given_validation)} records: the first {cap} are used "
            "(validation_max_records)"
        )
    return split_records(records, fraction=0.0, seed=seed)[0], given_validation[:cap]


def lora_config_of(params: dict):
    """PEFT's LoRA configuration from the hyperparameters (rank, alpha, dropout, target modules; no bias)."""
    from peft import LoraConfig

    return LoraConfig(
        task_type="CAUSAL_LM",
        r=params["lora_r"],
        lora_alpha=params["lora_alpha"],
        lora_dropout=params["lora_dropout"],
        target_modules=params["target_modules"],
        bias="none",
    )


def attach_adapter(model, params: dict, config: RunConfig, out: Reporter):
    """The base with the LoRA adapter the run trains: a new one of the hyperparameters' shape, or, training a
    version further (INITIAL_ADAPTER_PATH), that version's adapter, trainable and of its own shape."""
    from peft import PeftModel, get_peft_model

    if config.initial_adapter_path is None:
        try:
            return get_peft_model(model, lora_config_of(params))
        except ValueError as exc:  # PEFT: a target module the base does not have
            raise BadInput(f"target_modules: {exc}") from None
    name = config.initial_adapter_name or "the initial adapter"
    out.info(
        f"training {name} further: its adapter's shape is kept (this job's lora_r, lora_alpha, lora_dropout and "
        "target_modules shape new adapters only)"
    )
    try:
        return PeftModel.from_pretrained(model, str(config.initial_adapter_path), is_trainable=True)
    except (ValueError, KeyError, RuntimeError, OSError) as exc:
        raise BadInput(f"{name} cannot be loaded on this base: {exc}") from None


def adapter_shape(model) -> str:
    """The trained adapter's shape in words: ``r=16 alpha=32 on q_proj, v_proj``."""
    lora = model.peft_config["default"]
    return f"r={lora.r} alpha={lora.lora_alpha} on {', '.join(sorted(lora.target_modules))}"


def read_validation_dataset(path: Path | None, *, task: str) -> list | None:
    """The validation dataset's records (None without one); refused when unreadable or of another task."""
    if path is None:
        return None
    from finetune_studio.records import RecordError, open_records

    try:
        records = open_records(str(path))
    except RecordError as exc:
        raise BadInput(f"validation dataset {exc.location}: {exc.reason}") from None
    if not records:
        raise BadInput("the validation dataset has no records")
    if records[0].task != task:
        raise BadInput(f"the validation dataset holds {records[0].task} records, the training dataset {task} records")
    return records


def train(config: RunConfig, params: dict, out: Reporter) -> dict:
    import torch

    from finetune_studio.records import PREFERENCE

    from .chat import RenderError, encode_records
    from .steps import micro_batch_loss

    records = read_dataset(config.dataset_path)
    given_validation = read_validation_dataset(config.validation_path, task=records[0].task)
    if records[0].format == PREFERENCE:
        out.info("preference records: trained on their preferred answers (lora-dpo trains on the preference itself)")

    from . import distributed, modeling

    # Before the heavy imports: what this worker cannot run is refused in seconds.
    setup = device_setup(params)
    cuda = setup.device_type == "cuda"

    from transformers.pytorch_utils import Conv1D

    seed = params["seed"]
    torch.manual_seed(seed)
    world = distributed.start()
    device = torch.device(f"cuda:{world.local_rank}" if cuda else "cpu")
    use_bf16 = setup.autocast

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=use_bf16)

    identity = config.base_model_name or base_identity(config.base_model)
    out.info(f"base model {identity}, device {device.type}{' bf16' if use_bf16 else ''}")
    out.info(f"setup: {json.dumps(setup.describe(), sort_keys=True)}, {world.size} process(es)")
    tokenizer, model, pad_token_id = load_tokenizer_and_base(config, setup, device=device, identity=identity, out=out)

    train_records, validation_records = split_for_validation(records, given_validation, params, out=out)
    try:
        encode = {"system_prompt": params["system_prompt"], "max_length": params["max_length"]}
        train_examples = encode_records(tokenizer, train_records, **encode)
        validation_examples = encode_records(tokenizer, validation_records, **encode)
    except RenderError as exc:
        raise BadInput(f"cannot render the records with the chat template: {exc}") from None
    truncated = sum(example.prompt_truncated for example in (*train_examples, *validation_examples))
    if truncated:
        # The tool definitions come first in every template that renders them: they are what a cut removes.
        tools_cut = " (for tool-calling records, their tool definitions: raise max_length to keep them)"
        out.warn(
            f"{truncated} record(s) longer than max_length={params['max_length']}: their beginning was cut"
            + (tools_cut if any(record.tools for record in records) else "")
        )
    # Classification records report accuracy; conversations the share answered exactly (every trained token).
    score_name = "eval_accuracy" if records[0].task == "classification" else "eval_exact_match"
    if given_validation is None:
        out.info(
            f"{len(records)} records: {len(train_examples)} for training, {len(validation_examples)} held out "
            "for validation"
        )
    else:
        out.info(
            f"{len(records)} records for training, {len(validation_examples)} from the validation dataset "
            "for validation"
        )

    target_modules = params["target_modules"] if config.initial_adapter_path is None else []
    # PEFT matches a target by the module's full name or its dotted suffix; check the same way up front so a
    # typo is a clear input error instead of PEFT's exception deep in the run.
    linear_modules = [name for name, module in model.named_modules() if isinstance(module, (torch.nn.Linear, Conv1D))]
    unknown = [
        target
        for target in target_modules
        if not any(name == target or name.endswith("." + target) for name in linear_modules)
    ]
    if unknown:
        known = sorted({name.rsplit(".", 1)[-1] for name in linear_modules})
        raise BadInput(
            f"target_modules {', '.join(unknown)} not found among the base model's linear layers ({', '.join(known)})"
        )
    model = modeling.prepare_for_training(attach_adapter(model, params, config, out), setup)
    if setup.quantization == "none":  # a 4-bit base is placed on its GPU while loading
        model.to(device)
    step_model = modeling.TrainingForward(model, setup)
    if not step_model.fused:
        out.warn(f"the loss is computed from full logits: {step_model.unfused_reason}")
    if world.distributed:
        step_model = torch.nn.parallel.DistributedDataParallel(step_model, device_ids=[device] if cuda else None)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    trainable_count = sum(parameter.numel() for parameter in trainable)
    total_count = sum(parameter.numel() for parameter in model.parameters())
    out.info(
        f"LoRA {adapter_shape(model)}: "
        f"{trainable_count:,} trainable parameters of {total_count:,} ({100 * trainable_count / total_count:.2f}%)"
    )

    batch_size = params["batch_size"]
    accumulation = params["gradient_accumulation_steps"]
    batches_per_epoch = math.ceil(len(train_examples) / batch_size)
    steps_per_epoch = math.ceil(batches_per_epoch / accumulation)
    total_steps = params["epochs"] * steps_per_epoch
    warmup_steps = math.ceil(total_steps * params["warmup_ratio"])
    optimizer = torch.optim.AdamW(trainable, lr=params["learning_rate"], weight_decay=params["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, warmup_steps))
    max_grad_norm = params["max_grad_norm"] or math.inf
    generator = torch.Generator().manual_seed(seed)
    out.info(
        f"{params['epochs']} epoch(s) of {steps_per_epoch} step(s) = {total_steps} steps "
        f"(batch {batch_size} × {accumulation}), warm-up {warmup_steps} step(s), lr {params['learning_rate']}"
    )

    history, evaluations = [], []
    if validation_examples:
        baseline = _evaluate(
            model,
            validation_examples,
            batch_size=batch_size,
            pad_token_id=pad_token_id,
            device=device,
            autocast=autocast,
        )
        out.info(
            f"before training: validation loss {baseline['eval_loss']:.4f}, "
            f"{score_name.removeprefix('eval_').replace('_', ' ')} {baseline['eval_accuracy']:.3f}"
        )

    patience = params["early_stopping_patience"]
    if (params["keep_best_epoch"] or patience) and not validation_examples:
        names = " and ".join(n for n in ("keep_best_epoch", "early_stopping_patience") if params[n])
        out.warn(f"{names} need(s) validation records (none here): every epoch runs and the last one is saved")
    best = _BestEpoch()
    started = time.monotonic()
    all_tokens = 0
    step = 0
    epochs_run = 0
    window_losses: list[float] = []
    window_tokens = 0
    window_started = time.monotonic()
    model.train()
    for epoch in range(params["epochs"]):
        order = torch.randperm(len(train_examples), generator=generator).tolist()
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        for group_start in range(0, len(batches), accumulation):
            group = batches[group_start : group_start + accumulation]
            for indices in group:
                loss, loss_value, batch_tokens = micro_batch_loss(
                    step_model,
                    [train_examples[index] for index in indices],
                    world=world,
                    setup=setup,
                    pad_token_id=pad_token_id,
                    device=device,
                    autocast=autocast,
                )
                if not math.isfinite(loss_value):
                    raise TrainingFailed(
                        f"the loss became {loss_value} at step {step + 1} (epoch {epoch + 1}): training diverged "
                        f"or the base model holds non-finite weights. Lower learning_rate (now "
                        f"{params['learning_rate']}), keep max_grad_norm on, or check the base model."
                    )
                (loss / len(group)).backward()
                window_losses.append(loss_value)
                window_tokens += batch_tokens
                all_tokens += batch_tokens
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm))
            if not math.isfinite(grad_norm):
                raise TrainingFailed(
                    f"the gradient norm became {grad_norm} at step {step + 1} (epoch {epoch + 1}): training "
                    f"diverged. Lower learning_rate (now {params['learning_rate']})."
                )
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % params["logging_steps"] == 0 or step == total_steps:
                elapsed = max(time.monotonic() - window_started, 1e-9)
                point = {
                    "step": step,
                    "total_steps": total_steps,
                    "epoch": round(step / steps_per_epoch, 4),
                    "loss": _rounded(sum(window_losses) / len(window_losses)),
                    "learning_rate": _rounded(learning_rate),
                    "grad_norm": _rounded(grad_norm),
                    "tokens_per_second": round(window_tokens / elapsed, 1),
                }
                out.metrics(point)
                history.append(point)
                window_losses, window_tokens, window_started = [], 0, time.monotonic()
        if validation_examples:
            scores = _evaluate(
                model,
                validation_examples,
                batch_size=batch_size,
                pad_token_id=pad_token_id,
                device=device,
                autocast=autocast,
            )
            point = {
                "epoch": epoch + 1,
                "eval_loss": _rounded(scores["eval_loss"]),
                score_name: _rounded(scores["eval_accuracy"]),
            }
            out.metrics(point)
            evaluations.append(point)
            window_started = time.monotonic()  # validation time is not training throughput
            best.observe(epoch + 1, scores["eval_loss"], trainable if params["keep_best_epoch"] else None)
        epochs_run = epoch + 1
        # Every rank evaluated the same records with the same weights; the sum makes the decision one for all.
        stop = bool(validation_examples) and patience > 0 and best.epochs_since_best(epochs_run) >= patience
        stop = distributed.total(world, torch.tensor(int(stop), device=device)).item() > 0
        if stop and epochs_run < params["epochs"]:
            out.info(
                f"validation loss has not improved for {patience} epoch(s) (best {best.loss:.4f} at epoch "
                f"{best.epoch}): stopping after epoch {epochs_run} of {params['epochs']}"
            )
            break
    runtime = time.monotonic() - started
    kept = evaluations[-1] if evaluations else None
    if params["keep_best_epoch"] and best.state is not None and best.epoch != epochs_run:
        best.restore(trainable)
        kept = evaluations[best.epoch - 1]
        out.info(
            f"keeping epoch {best.epoch}'s adapter: validation loss {kept['eval_loss']} (the last epoch's: "
            f"{evaluations[-1]['eval_loss']})"
        )
    if not world.main:
        return {}  # rank 0 saves the adapter: the weights are the same on every rank

    save_adapter(model, tokenizer, config=config, identity=identity)

    check_dir = os.environ.get(CHECK_DIR_ENV)
    if check_dir:
        _write_check(Path(check_dir), model, (validation_examples or train_examples)[0], device)

    chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    final = {
        "step": step,
        "total_steps": total_steps,
        "epoch": epochs_run,
        "loss": history[-1]["loss"] if history else None,
        "runtime_seconds": round(runtime, 3),
        "tokens_per_second": round(all_tokens / max(runtime, 1e-9), 1),
        "tokens": all_tokens,  # the records' own tokens, over all processes: never padding
    }
    if kept is not None:  # the saved adapter's figures: the last epoch's, or the best one's it was rolled back to
        final.update(eval_loss=kept["eval_loss"], **{score_name: kept[score_name]})
        if params["keep_best_epoch"]:
            final["best_epoch"] = kept["epoch"]
    if epochs_run < params["epochs"]:
        final["stopped_early"] = True
    if device.type == "cuda":
        final["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
    metrics = {
        "final": final,
        "history": history,
        "eval": evaluations,
        "run": {
            "trainer": "lora-sft",
            "job_id": config.job_id,
            "base_model": identity,
            "device": device.type + (" bf16" if use_bf16 else ""),
            "record_format": records[0].format,
            "task": records[0].task,
            "setup": setup.describe(),
            "processes": world.size,
            "dtypes": modeling.dtype_report(model, optimizer),
            "train_records": len(train_examples),
            "validation_records": len(validation_examples),
            # Where they came from: a share of the training file, or the job's validation dataset.
            "validation_source": "held out" if given_validation is None else "validation dataset",
            "trainable_parameters": trainable_count,
            "total_parameters": total_count,
            "system_prompt": params["system_prompt"],
            "initial_model": config.initial_adapter_name,
            "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest(),
            "hyperparameters": params,
        },
    }
    (config.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    summary = f"done in {runtime:.1f}s: {step} steps, final loss {final['loss']}"
    if evaluations:
        summary += f", validation loss {final['eval_loss']}, {score_name.removeprefix('eval_')} {final[score_name]}"
    if "peak_gpu_memory_mib" in final:
        summary += f", peak GPU memory {final['peak_gpu_memory_mib']} MiB"
    out.info(summary)
    out.info(f"adapter saved to {ADAPTER_DIR}/ (base {identity})")
    return metrics


class _BestEpoch:
    """The epoch with the lowest validation loss so far and, when it is to be kept, a copy of its LoRA weights
    (small: only the trainable parameters)."""

    def __init__(self):
        self.epoch = 0
        self.loss = math.inf
        self.state: list | None = None

    def observe(self, epoch: int, loss: float, trainable) -> None:
        if loss < self.loss:
            self.epoch, self.loss = epoch, loss
            if trainable is not None:
                self.state = [parameter.detach().clone() for parameter in trainable]

    def epochs_since_best(self, epoch: int) -> int:
        return epoch - self.epoch if self.epoch else 0

    def restore(self, trainable) -> None:
        import torch

        with torch.no_grad():
            for parameter, saved in zip(trainable, self.state, strict=True):
                parameter.copy_(saved)


def _on_sigterm(signum, frame):
    raise Terminated()


def _fail(reason: str, code: int) -> int:
    """The reason as one ERROR line on stderr: its last line is what the runner makes the job's error message
    (docs/trainers.md), which would otherwise say only the exit code; written once, not also on stdout."""
    if os.environ.get("RANK", "0") == "0":  # once, not once per torchrun process
        Reporter(sys.stderr).error(reason)
    return code


def main() -> int:
    return run_main("lora-sft", train, read_hyperparameters)


def run_main(trainer_name: str, train_function, read_params) -> int:
    """A trainer process from start to exit code: the contract's environment, the hyperparameters, the run, and
    every way it can end as one ERROR line (lora-sft and lora-dpo share it)."""
    force_offline()
    # Under torchrun only rank 0 logs (tracebacks still reach stderr).
    out = Reporter() if os.environ.get("RANK", "0") == "0" else Reporter(open(os.devnull, "w"))  # noqa: SIM115
    # Library warnings would reach the log without a level; give them one.
    warnings.showwarning = lambda message, category, *args, **kwargs: out.warn(f"{category.__name__}: {message}")
    # Libraries' notices about their own future APIs say nothing about this run.
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        config = read_environment()
        params, ignored = read_params(config.hyperparams_file)
        if ignored:
            out.warn(f"hyperparameters this trainer does not know, ignored: {', '.join(ignored)}")
        out.info(f"{trainer_name} job {config.job_id or '-'}: {json.dumps(params, sort_keys=True)}")
        config.output_dir.mkdir(parents=True, exist_ok=True)
        train_function(config, params, out)
        return 0
    except (BadInput, HyperparameterError) as exc:
        return _fail(str(exc), EXIT_BAD_INPUT)
    except TrainingFailed as exc:
        return _fail(str(exc), EXIT_FAILED)
    except Terminated:
        out.error("stopped by SIGTERM before the end: no adapter was saved")
        return EXIT_TERMINATED
    except Exception as exc:  # the run must end with an ERROR line the job page shows, whatever broke
        out.error(f"training failed: {type(exc).__name__}: {exc}")
        traceback.print_exc(file=sys.stderr)
        return EXIT_FAILED
