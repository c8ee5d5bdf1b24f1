"""One micro-batch of a training step: its loss, averaged over the trained tokens of all processes."""

from collections.abc import Sequence

from .chat import Example
from .distributed import World, total
from .packing import collate_for_training, real_tokens


def micro_batch_loss(
    step_model, examples: Sequence[Example], *, world: World, setup, pad_token_id: int, device, autocast
):
    """(loss to back-propagate, its value, real tokens of the micro-batch over all processes).

    The loss is this process's token-loss sum over the micro-batch's trained tokens in all processes, times
    the number of processes (DDP averages gradients): the gradient is the one-process gradient. A process
    whose share is empty (the last, short batch of an epoch) computes a record with weight 0, so that every
    process takes part in the gradient exchange.
    """
    import torch

    mine = world.shard(list(examples))
    weight = 1.0 if mine else 0.0
    mine = mine or list(examples[:1])
    batch = collate_for_training(mine, pad_token_id=pad_token_id, packed=setup.packing, one_row=setup.one_row)
    batch = {key: value.to(device) for key, value in batch.items()}
    with autocast():
        loss_sum, trained = step_model(**batch)
    loss_sum = loss_sum.float() * weight
    counts = torch.stack(
        [loss_sum.detach(), trained.float() * weight, torch.tensor(real_tokens(mine) * weight, device=device)]
    )
    counts = total(world, counts)
    trained_everywhere = counts[1].clamp(min=1)
    loss = loss_sum * world.size / trained_everywhere
    return loss, float(counts[0] / trained_everywhere), int(counts[2])
