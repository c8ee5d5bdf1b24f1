"""The causal-LM loss without the full logits.

transformers computes ``lm_head`` over every position and keeps the (tokens × vocabulary) logits, in float32
for the loss, until the backward pass: for a Llama-3 vocabulary (128,256) and 16k tokens that is 8 GiB, most
of it for prompt positions the loss ignores. Here only the positions that have a label are projected, and:

* ``liger``: Liger's fused linear cross-entropy (Triton, GPU only) computes the projection and the loss chunk
  by chunk and never holds the logits;
* ``chunked``: the same idea in plain PyTorch, exact, on any device: the trained positions in chunks, each
  chunk's logits recomputed in the backward pass (checkpointed) instead of kept.

Every function returns the SUM of the token losses and the number of trained tokens, so that a caller can
average over the trained tokens of a whole batch split across micro-batches or processes (the mean of means
would weigh a short answer like a long one).
"""

from .data import IGNORE_INDEX

CHUNK_TOKENS = 4096


def liger_available() -> tuple[bool, str]:
    """(usable here, why not): Liger's kernels are Triton code and run only on a CUDA device."""
    import importlib.util

    import torch

    if not torch.cuda.is_available():
        return False, "Liger kernels need a CUDA GPU"
    if importlib.util.find_spec("liger_kernel") is None:
        return False, "the liger-kernel package is not installed (requirements-train-gpu.txt)"
    return True, ""


def _shifted(hidden, labels):
    """Hidden states of the positions that predict a label, and those labels (the causal shift applied)."""
    hidden = hidden[:, :-1].reshape(-1, hidden.size(-1))
    targets = labels[:, 1:].reshape(-1)
    keep = targets != IGNORE_INDEX
    return hidden[keep], targets[keep]


def plain_loss_sum(logits, labels):
    """Reference: the loss of full logits (what transformers' ``model(..., labels=...)`` averages)."""
    import torch.nn.functional as functional

    logits = logits[:, :-1].float()
    targets = labels[:, 1:]
    loss = functional.cross_entropy(
        logits.reshape(-1, logits.size(-1)), targets.reshape(-1), ignore_index=IGNORE_INDEX, reduction="sum"
    )
    return loss, (targets != IGNORE_INDEX).sum()


def _chunk_loss(hidden, weight, bias, targets):
    import torch.nn.functional as functional

    logits = functional.linear(hidden, weight, bias).float()
    return functional.cross_entropy(logits, targets, reduction="sum")


def chunked_loss_sum(hidden, weight, labels, *, bias=None, chunk_tokens: int = CHUNK_TOKENS):
    """Exact cross-entropy of ``hidden @ weight.T`` over the labelled positions, ``chunk_tokens`` at a time."""
    import torch
    from torch.utils.checkpoint import checkpoint

    hidden, targets = _shifted(hidden, labels)
    total = hidden.new_zeros((), dtype=torch.float32)
    if targets.numel() == 0:
        # Still tied to the graph, so that a backward pass (and DDP's gradient exchange) happens as usual.
        return total + 0.0 * hidden.sum(), targets.new_zeros(())
    for start in range(0, targets.numel(), chunk_tokens):
        part = slice(start, start + chunk_tokens)
        if torch.is_grad_enabled():
            total = total + checkpoint(_chunk_loss, hidden[part], weight, bias, targets[part], use_reentrant=False)
        else:
            total = total + _chunk_loss(hidden[part], weight, bias, targets[part])
    return total, targets.new_tensor(targets.numel())


def liger_loss_sum(hidden, weight, labels, *, bias=None):
    """Liger's fused linear cross-entropy over the labelled positions (CUDA only)."""
    from liger_kernel.transformers import LigerFusedLinearCrossEntropyLoss

    hidden, targets = _shifted(hidden, labels)
    if targets.numel() == 0:
        return hidden.sum().float() * 0.0, targets.new_zeros(())
    loss = LigerFusedLinearCrossEntropyLoss(ignore_index=IGNORE_INDEX, reduction="sum")(
        weight, hidden.contiguous(), targets, bias
    )
    if isinstance(loss, tuple):  # versions that can also return the z-loss
        loss = loss[0]
    return loss.float(), targets.new_tensor(targets.numel())


def loss_sum(hidden, weight, labels, *, kernel: str, bias=None):
    if kernel == "liger":
        return liger_loss_sum(hidden, weight, labels, bias=bias)
    return chunked_loss_sum(hidden, weight, labels, bias=bias)
