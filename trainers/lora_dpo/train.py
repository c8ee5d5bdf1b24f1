"""Direct preference optimisation of a LoRA adapter: a plain PyTorch loop, as lora-sft's.

For each preference pair the loss is DPO's, ``-log σ(β · ((log π(c) − log π₀(c)) − (log π(r) − log π₀(r))))``, where
``log π(x)`` is the summed log-probability of an answer's tokens given the conversation under the model with its
adapter, and ``π₀`` the model as training starts (the base itself with a new adapter, or the version trained further,
INITIAL_ADAPTER_PATH): the reference, computed once before training, so no second model is loaded. Each answer
is rendered and tokenized exactly as lora-sft renders a record (the chat template, only the final answer's tokens
scored), so the adapter saved is one every part of the studio already reads.

Contract (docs/trainers.md): as lora-sft's, with preference records (``finetune_studio.records.PREFERENCE``).
"""

import hashlib
import json
import math
import time
from dataclasses import dataclass, replace

from trainers.lora_sft.params import read_hyperparameters
from trainers.lora_sft.report import Reporter
from trainers.lora_sft.train import (
    ADAPTER_DIR,
    BadInput,
    RunConfig,
    TrainingFailed,
    attach_adapter,
    base_identity,
    device_setup,
    linear_schedule,
    load_tokenizer_and_base,
    read_dataset,
    read_validation_dataset,
    run_main,
    save_adapter,
    split_for_validation,
)

from .definition import HYPERPARAMETER_SCHEMA


@dataclass(frozen=True)
class Pair:
    chosen: object  # trainers.lora_sft.chat.Example: the conversation then the preferred answer
    rejected: object  # the same conversation then the other answer


def encode_pairs(tokenizer, records, *, system_prompt: str, max_length: int) -> list[Pair]:
    """Both answers of each record after its conversation, only the final answer's tokens scored (earlier
    assistant turns are context here: the preference is about the last answer)."""
    from trainers.lora_sft.chat import conversation_for, encode_conversation

    pairs = []
    for record in records:
        turns = conversation_for(record, system_prompt)
        context = [replace(message, weight=0) for message in turns[:-1]]
        encode = {"max_length": max_length, "tools": record.tools}
        pairs.append(
            Pair(
                chosen=encode_conversation(tokenizer, [*context, turns[-1]], **encode),
                rejected=encode_conversation(tokenizer, [*context, record.rejected], **encode),
            )
        )
    return pairs


def sequence_logps(model, examples, *, pad_token_id: int, device, autocast, fused: bool = False):
    """The summed log-probability of each example's scored tokens (a tensor, one value per example).

    ``fused``: from the decoder's last hidden states and lm_head's weight over the scored positions only, never
    the full logits (``chunked_sequence_logps``); else from the model's full logits."""
    import torch

    from trainers.lora_sft.chat import IGNORE_INDEX
    from trainers.lora_sft.data import collate
    from trainers.lora_sft.losses import chunked_sequence_logps

    batch = {key: value.to(device) for key, value in collate(examples, pad_token_id=pad_token_id).items()}
    with autocast():
        if fused:
            base = model.get_base_model()
            inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
            hidden = base.get_decoder()(**inputs, use_cache=False).last_hidden_state
            head = base.get_output_embeddings()
            return chunked_sequence_logps(hidden, head.weight, batch["labels"], bias=head.bias)
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    logits = logits[:, :-1].float()
    targets = batch["labels"][:, 1:]
    scored = targets != IGNORE_INDEX
    picked = torch.gather(logits.log_softmax(-1), 2, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)
    return (picked * scored).sum(dim=1)


def dpo_figures(policy_chosen, policy_rejected, reference_chosen, reference_rejected, *, beta: float) -> dict:
    """DPO's loss (a tensor, mean over the pairs) and what is reported beside it: the share of pairs whose
    preferred answer gained more than the other (reward accuracy) and the mean reward margin."""
    import torch.nn.functional as functional

    chosen_reward = beta * (policy_chosen - reference_chosen)
    rejected_reward = beta * (policy_rejected - reference_rejected)
    margin = chosen_reward - rejected_reward
    return {
        "loss": -functional.logsigmoid(margin).mean(),
        "reward_accuracy": float((margin > 0).float().mean()),
        "reward_margin": float(margin.detach().mean()),
    }


def train(config: RunConfig, params: dict, out: Reporter) -> dict:
    import torch

    from finetune_studio.records import PREFERENCE
    from trainers.lora_sft import modeling
    from trainers.lora_sft.chat import RenderError

    records = read_dataset(config.dataset_path)
    if records[0].format != PREFERENCE:
        raise BadInput(
            f"lora-dpo trains on preference records (input messages, preferred_output, non_preferred_output); this "
            f"dataset holds {records[0].format} records: train it with lora-sft"
        )
    given_validation = read_validation_dataset(config.validation_path, task=records[0].task)
    if given_validation is not None and given_validation[0].format != PREFERENCE:
        raise BadInput("the validation dataset must hold preference records too")

    # Both answers of a pair are scored per sequence: no packing; the scoring's own chunked projection, not Liger's.
    setup = device_setup({**params, "packing": "off", "kernels": "torch"})

    seed = params["seed"]
    torch.manual_seed(seed)
    device = torch.device(setup.device_type)

    def autocast():
        return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=setup.autocast)

    identity = config.base_model_name or base_identity(config.base_model)
    out.info(f"base model {identity}, device {device.type}{' bf16' if setup.autocast else ''}")
    tokenizer, model, pad_token_id = load_tokenizer_and_base(config, setup, device=device, identity=identity, out=out)

    train_records, validation = split_for_validation(records, given_validation, params, out=out)
    try:
        encode = {"system_prompt": params["system_prompt"], "max_length": params["max_length"]}
        train_pairs = encode_pairs(tokenizer, train_records, **encode)
        validation_pairs = encode_pairs(tokenizer, validation, **encode)
    except RenderError as exc:
        raise BadInput(f"cannot render the records with the chat template: {exc}") from None
    source = "held out" if given_validation is None else "from the validation dataset"
    out.info(f"{len(records)} preference pairs: {len(train_pairs)} for training, {len(validation_pairs)} {source}")

    model = modeling.prepare_for_training(attach_adapter(model, params, config, out), setup)
    if setup.quantization == "none":
        model.to(device)
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    beta = params["beta"]
    fused, unfused_reason = modeling.fused_loss_applies(model)
    if not fused:
        out.warn(f"the answers are scored from full logits: {unfused_reason}")
    figures = {"pad_token_id": pad_token_id, "device": device, "autocast": autocast, "fused": fused}

    def reference_of(pairs):
        """The reference model's log-probabilities of both answers, once, in batches: the model as training starts,
        so the base itself (a new adapter adds nothing yet) or the version trained further (a chat model first,
        then its preferences: DPO measures against that model, not the raw base)."""
        chosen, rejected = [], []
        model.eval()
        with torch.no_grad():
            for start in range(0, len(pairs), params["batch_size"]):
                batch = pairs[start : start + params["batch_size"]]
                chosen.append(sequence_logps(model, [pair.chosen for pair in batch], **figures))
                rejected.append(sequence_logps(model, [pair.rejected for pair in batch], **figures))
        model.train()
        return (torch.cat(chosen), torch.cat(rejected)) if pairs else (None, None)

    def scores_of(indices, pairs, reference):
        examples = [pairs[i].chosen for i in indices] + [pairs[i].rejected for i in indices]
        logps = sequence_logps(model, examples, **figures)
        return dpo_figures(
            logps[: len(indices)],
            logps[len(indices) :],
            reference[0][indices],
            reference[1][indices],
            beta=beta,
        )

    train_reference = reference_of(train_pairs)
    validation_reference = reference_of(validation_pairs)

    def validate(epoch: int) -> dict:
        model.eval()
        totals = {"loss": 0.0, "reward_accuracy": 0.0, "reward_margin": 0.0}
        with torch.no_grad():
            for start in range(0, len(validation_pairs), params["batch_size"]):
                indices = list(range(start, min(start + params["batch_size"], len(validation_pairs))))
                scores = scores_of(indices, validation_pairs, validation_reference)
                for name in totals:
                    totals[name] += float(scores[name]) * len(indices)
        model.train()
        return {
            "epoch": epoch,
            **{f"eval_{name}": round(value / len(validation_pairs), 6) for name, value in totals.items()},
        }

    batch_size, accumulation = params["batch_size"], params["gradient_accumulation_steps"]
    steps_per_epoch = math.ceil(math.ceil(len(train_pairs) / batch_size) / accumulation)
    total_steps = params["epochs"] * steps_per_epoch
    warmup_steps = math.ceil(total_steps * params["warmup_ratio"])
    optimizer = torch.optim.AdamW(trainable, lr=params["learning_rate"], weight_decay=params["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, linear_schedule(total_steps, warmup_steps))
    max_grad_norm = params["max_grad_norm"] or math.inf
    generator = torch.Generator().manual_seed(seed)
    out.info(f"{params['epochs']} epoch(s) of {steps_per_epoch} step(s), beta {beta}, lr {params['learning_rate']}")

    history, evaluations = [], []
    if validation_pairs:
        baseline = validate(0)
        out.info(
            f"before training: validation DPO loss {baseline['eval_loss']:.4f} (log 2 = 0.6931 while the model is "
            f"still its reference), reward accuracy {baseline['eval_reward_accuracy']:.3f}"
        )
    started, step, tokens = time.monotonic(), 0, 0
    window: list[dict] = []
    model.train()
    for epoch in range(params["epochs"]):
        order = torch.randperm(len(train_pairs), generator=generator).tolist()
        batches = [order[start : start + batch_size] for start in range(0, len(order), batch_size)]
        for group_start in range(0, len(batches), accumulation):
            group = batches[group_start : group_start + accumulation]
            for indices in group:
                scores = scores_of(indices, train_pairs, train_reference)
                loss_value = float(scores["loss"].detach())
                if not math.isfinite(loss_value):
                    raise TrainingFailed(
                        f"the loss became {loss_value} at step {step + 1}: training diverged. Lower learning_rate "
                        f"(now {params['learning_rate']}) or raise beta (now {beta})."
                    )
                (scores["loss"] / len(group)).backward()
                window.append({**scores, "loss": loss_value})
                tokens += sum(
                    train_pairs[i].chosen.answer_tokens + train_pairs[i].rejected.answer_tokens for i in indices
                )
            grad_norm = float(torch.nn.utils.clip_grad_norm_(trainable, max_grad_norm))
            learning_rate = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            if step % params["logging_steps"] == 0 or step == total_steps:
                point = {
                    "step": step,
                    "total_steps": total_steps,
                    "epoch": round(step / steps_per_epoch, 4),
                    **{name: round(sum(w[name] for w in window) / len(window), 6) for name in window[0]},
                    "learning_rate": round(learning_rate, 8),
                    "grad_norm": round(grad_norm, 6),
                }
                out.metrics(point)
                history.append(point)
                window = []
        if validation_pairs:
            point = validate(epoch + 1)
            out.metrics(point)
            evaluations.append(point)
    runtime = time.monotonic() - started

    save_adapter(model, tokenizer, config=config, identity=identity)

    final = {
        "step": step,
        "total_steps": total_steps,
        "epoch": params["epochs"],
        "loss": history[-1]["loss"] if history else None,
        "reward_accuracy": history[-1]["reward_accuracy"] if history else None,
        "runtime_seconds": round(runtime, 3),
        "tokens": tokens,  # the answers' own tokens, both of every pair, over every epoch
    }
    if evaluations:
        final.update({name: value for name, value in evaluations[-1].items() if name != "epoch"})
    chat_template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    metrics = {
        "final": final,
        "history": history,
        "eval": evaluations,
        "run": {
            "trainer": "lora-dpo",
            "job_id": config.job_id,
            "base_model": identity,
            "device": device.type + (" bf16" if setup.autocast else ""),
            "record_format": PREFERENCE,
            "initial_model": config.initial_adapter_name,
            "task": records[0].task,
            "setup": setup.describe(),
            "train_records": len(train_pairs),
            "validation_records": len(validation_pairs),
            "validation_source": "held out" if given_validation is None else "validation dataset",
            "beta": beta,
            "system_prompt": params["system_prompt"],
            "chat_template_sha256": hashlib.sha256(chat_template.encode()).hexdigest(),
            "hyperparameters": params,
        },
    }
    (config.output_dir / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    summary = f"done in {runtime:.1f}s: {step} steps, final DPO loss {final['loss']}"
    if evaluations:
        summary += f", validation reward accuracy {final['eval_reward_accuracy']}"
    out.info(summary)
    out.info(f"adapter saved to {ADAPTER_DIR}/ (base {identity})")
    return metrics


def main() -> int:
    return run_main("lora-dpo", train, lambda path: read_hyperparameters(path, HYPERPARAMETER_SCHEMA))
