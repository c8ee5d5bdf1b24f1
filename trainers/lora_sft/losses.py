"""The causal-LM loss without the full logits.

transformers computes ``lm_head`` over every position and keeps the (tokens × vocabulary) logits, in float32
for the loss, until the backward pass: for a Llama-3 vocabulary (128,256) and 16k tokens that is 8 GiB, most
of it for prompt positions the loss ignores. Here only the positions that have a label are projected, and:

* ``liger``: Liger's fused linear cross-entropy (Triton, GPU only) computes the projection and the loss chunk
  by chunk and never holds the logits;
* ``chunked``: the same idea in plain PyTorch, exact, on any device: the trained positions in chunks, each
  chunk's gradients computed with its logits, which are then dropped (two projections per token, as with
  full logits; nothing recomputed).

Every function returns the SUM of the token losses and the number of trained tokens, so that a caller can
average over the trained tokens of a whole batch split across micro-batches or processes (the mean of means
would weigh a short answer like a long one).
"""

from .chat import IGNORE_INDEX

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


def _chunks(hidden, weight, bias, targets, chunk_tokens: int):
    """For each chunk of positions: (its slice, its float32 logits, their log-normaliser, the labels' logits)."""
    import torch
    import torch.nn.functional as functional

    for start in range(0, targets.numel(), chunk_tokens):
        part = slice(start, start + chunk_tokens)
        logits = functional.linear(hidden[part], weight, bias).float()
        yield part, logits, torch.logsumexp(logits, dim=-1), logits.gather(1, targets[part, None]).squeeze(1)


def _linear_cross_entropy_function():
    import torch

    class LinearCrossEntropy(torch.autograd.Function):
        """Sum of the cross-entropies of ``hidden @ weight.T + bias``, chunk by chunk, gradients computed on the way.

        Liger's idea in plain PyTorch: each chunk's logits live only while the chunk is computed; the gradient
        of the loss with respect to them (softmax minus one-hot) is turned into the gradients of the inputs at
        once, so the backward pass only scales what the forward pass stored. Two projections per token, as
        without chunking, and no logits kept.
        """

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, chunk_tokens, with_gradients):
            weight = weight.to(hidden.dtype)
            bias = bias.to(hidden.dtype) if bias is not None else None
            wants_hidden = with_gradients and ctx.needs_input_grad[0]
            wants_weight = with_gradients and ctx.needs_input_grad[1]
            wants_bias = with_gradients and bias is not None and ctx.needs_input_grad[2]
            grad_hidden = torch.empty_like(hidden) if wants_hidden else None
            grad_weight = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if wants_weight else None
            grad_bias = torch.zeros(weight.shape[0], dtype=torch.float32, device=weight.device) if wants_bias else None
            total = torch.zeros((), dtype=torch.float32, device=hidden.device)
            # The dtypes are the inputs' own (bf16 on a GPU): autocast would be a second, hidden decision.
            with torch.autocast(device_type=hidden.device.type, enabled=False):
                for part, logits, log_norm, picked in _chunks(hidden, weight, bias, targets, chunk_tokens):
                    total += (log_norm - picked).sum()
                    if grad_hidden is None and grad_weight is None and grad_bias is None:
                        continue
                    # d(sum of losses)/d(logits) = softmax - one-hot, computed in place over the logits.
                    grad_logits = logits.sub_(log_norm[:, None]).exp_()
                    grad_logits[torch.arange(grad_logits.shape[0], device=grad_logits.device), targets[part]] -= 1
                    if grad_bias is not None:
                        grad_bias += grad_logits.sum(0)
                    grad_logits = grad_logits.to(hidden.dtype)
                    if grad_hidden is not None:
                        grad_hidden[part] = grad_logits @ weight
                    if grad_weight is not None:
                        grad_weight += (grad_logits.T @ hidden[part]).float()
            ctx.save_for_backward(
                *(t if t is not None else torch.empty(0) for t in (grad_hidden, grad_weight, grad_bias))
            )
            ctx.present = (grad_hidden is not None, grad_weight is not None, grad_bias is not None)
            ctx.dtypes = (hidden.dtype, weight.dtype)
            return total

        @staticmethod
        def backward(ctx, grad_output):
            saved = ctx.saved_tensors
            grad_hidden, grad_weight, grad_bias = (
                tensor * grad_output if present else None for tensor, present in zip(saved, ctx.present, strict=True)
            )
            if grad_hidden is not None:
                grad_hidden = grad_hidden.to(ctx.dtypes[0])
            if grad_weight is not None:
                grad_weight = grad_weight.to(ctx.dtypes[1])
            return grad_hidden, grad_weight, grad_bias, None, None, None

    return LinearCrossEntropy


_FUNCTION = None


def chunked_loss_sum(hidden, weight, labels, *, bias=None, chunk_tokens: int = CHUNK_TOKENS):
    """Exact cross-entropy of ``hidden @ weight.T`` over the labelled positions, ``chunk_tokens`` at a time."""
    import torch

    global _FUNCTION
    if _FUNCTION is None:
        _FUNCTION = _linear_cross_entropy_function()
    hidden, targets = _shifted(hidden, labels)
    if targets.numel() == 0:
        # Still tied to the graph, so that a backward pass (and DDP's gradient exchange) happens as usual.
        return hidden.sum().float() * 0.0, targets.new_zeros(())
    total = _FUNCTION.apply(hidden, weight, bias, targets, chunk_tokens, torch.is_grad_enabled())
    return total, targets.new_tensor(targets.numel())


def _sequence_logps_function():
    import torch

    class LinearSequenceLogps(torch.autograd.Function):
        """Each sequence's summed log-probability of its labels under ``hidden @ weight.T + bias``, chunk by chunk.

        As LinearCrossEntropy, no logits are kept; but each token's gradient is kept apart (with respect to the
        hidden state only: lm_head is frozen under LoRA), because what it is worth is known only after every
        sequence has been scored (DPO weighs a pair's two answers by the pair's margin): the backward pass scales
        each token's gradient by its own sequence's.
        """

        @staticmethod
        def forward(ctx, hidden, weight, bias, targets, sequence_ids, sequences, chunk_tokens, with_gradients):
            weight = weight.to(hidden.dtype)
            bias = bias.to(hidden.dtype) if bias is not None else None
            wants_hidden = with_gradients and ctx.needs_input_grad[0]
            grad_hidden = torch.empty_like(hidden) if wants_hidden else None
            sums = torch.zeros(sequences, dtype=torch.float32, device=hidden.device)
            with torch.autocast(device_type=hidden.device.type, enabled=False):
                for part, logits, log_norm, picked in _chunks(hidden, weight, bias, targets, chunk_tokens):
                    sums.index_add_(0, sequence_ids[part], picked - log_norm)
                    if grad_hidden is None:
                        continue
                    # d(log p of the label)/d(logits) = one-hot - softmax, computed in place over the logits.
                    grad_logits = logits.sub_(log_norm[:, None]).exp_().neg_()
                    grad_logits[torch.arange(grad_logits.shape[0], device=grad_logits.device), targets[part]] += 1
                    grad_hidden[part] = grad_logits.to(hidden.dtype) @ weight
            ctx.save_for_backward(grad_hidden if grad_hidden is not None else torch.empty(0), sequence_ids)
            ctx.present = grad_hidden is not None
            return sums

        @staticmethod
        def backward(ctx, grad_output):
            grad_hidden, sequence_ids = ctx.saved_tensors
            if ctx.present:
                grad_hidden = grad_hidden * grad_output[sequence_ids, None].to(grad_hidden.dtype)
            else:
                grad_hidden = None
            return grad_hidden, None, None, None, None, None, None, None

    return LinearSequenceLogps


_SEQUENCE_FUNCTION = None


def chunked_sequence_logps(hidden, weight, labels, *, bias=None, chunk_tokens: int = CHUNK_TOKENS):
    """Each sequence's summed log-probability of its labelled tokens (a float32 tensor, one value per row of
    ``labels``), exact, without the full logits: only the labelled positions are projected, ``chunk_tokens`` at a
    time. Differentiable with respect to ``hidden`` (lm_head is frozen)."""
    import torch

    global _SEQUENCE_FUNCTION
    if _SEQUENCE_FUNCTION is None:
        _SEQUENCE_FUNCTION = _sequence_logps_function()
    rows = labels.shape[0]
    sequence_ids = torch.arange(rows, device=labels.device)[:, None].expand(rows, labels.shape[1] - 1).reshape(-1)
    kept = labels[:, 1:].reshape(-1) != IGNORE_INDEX
    hidden, targets = _shifted(hidden, labels)
    if targets.numel() == 0:
        return hidden.sum().float() * 0.0 + torch.zeros(rows, device=hidden.device)
    return _SEQUENCE_FUNCTION.apply(
        hidden, weight, bias, targets, sequence_ids[kept], rows, chunk_tokens, torch.is_grad_enabled()
    )


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
