"""The loss without full logits: the chunked cross-entropy (any device) and Liger's fused one (GPU) give the
loss and the gradients of the plain full-logits cross-entropy.
"""

import pytest

torch = pytest.importorskip("torch", reason="the training extra (requirements-train.txt) is not installed")

from trainers.lora_sft.chat import IGNORE_INDEX  # noqa: E402
from trainers.lora_sft.losses import chunked_loss_sum, liger_available, liger_loss_sum, plain_loss_sum  # noqa: E402


def problem(*, dtype=torch.float32, device="cpu", rows=3, length=40, hidden=32, vocab=300, seed=0):
    generator = torch.Generator().manual_seed(seed)
    states = torch.randn(rows, length, hidden, generator=generator).to(device, dtype).requires_grad_()
    weight = (torch.randn(vocab, hidden, generator=generator) / hidden**0.5).to(device, dtype).requires_grad_()
    labels = torch.randint(0, vocab, (rows, length), generator=generator)
    labels[:, : length // 2] = IGNORE_INDEX  # the prompt half is not learned
    labels[1, -5:] = IGNORE_INDEX  # nor a row's padding
    return states, weight, labels.to(device)


def value_and_gradients(loss_function, states, weight, labels):
    states.grad = weight.grad = None
    total, tokens = loss_function(states, weight, labels)
    (total / tokens).backward()
    return (total / tokens).item(), int(tokens), states.grad.clone(), weight.grad.clone()


def plain(states, weight, labels):
    return plain_loss_sum(states @ weight.T, labels)


def test_the_chunked_loss_equals_the_plain_loss_and_its_gradients():
    states, weight, labels = problem()
    expected = value_and_gradients(plain, states, weight, labels)
    # 7 tokens a chunk: 55 trained tokens span 8 chunks, the last one partial.
    chunked = value_and_gradients(lambda h, w, y: chunked_loss_sum(h, w, y, chunk_tokens=7), states, weight, labels)
    assert chunked[1] == expected[1] == 3 * 20 - 5  # labelled positions after the causal shift
    assert chunked[0] == pytest.approx(expected[0], abs=1e-6)
    assert torch.allclose(chunked[2], expected[2], atol=1e-6)
    assert torch.allclose(chunked[3], expected[3], atol=1e-6)


def test_the_chunked_loss_in_bfloat16_stays_within_bfloat16_rounding_of_the_plain_loss():
    states, weight, labels = problem(dtype=torch.bfloat16)
    expected = value_and_gradients(plain, states, weight, labels)
    chunked = value_and_gradients(lambda h, w, y: chunked_loss_sum(h, w, y, chunk_tokens=16), states, weight, labels)
    assert chunked[0] == pytest.approx(expected[0], rel=1e-3)
    assert torch.allclose(chunked[3].float(), expected[3].float(), atol=2e-2)


def test_a_batch_without_trained_tokens_gives_zero_and_still_back_propagates():
    states, weight, labels = problem()
    labels[:] = IGNORE_INDEX
    total, tokens = chunked_loss_sum(states, weight, labels)
    total.backward()
    assert total.item() == 0 and int(tokens) == 0 and states.grad is not None


def test_the_liger_fused_loss_equals_the_plain_loss():
    usable, reason = liger_available()
    if not usable:
        pytest.skip(reason)
    states, weight, labels = problem(dtype=torch.bfloat16, device="cuda", rows=4, length=256, hidden=256, vocab=4096)
    expected = value_and_gradients(plain, states, weight, labels)
    fused = value_and_gradients(liger_loss_sum, states, weight, labels)
    assert fused[1] == expected[1]
    assert fused[0] == pytest.approx(expected[0], rel=1e-2)
    assert torch.allclose(fused[2].float(), expected[2].float(), atol=2e-2)


def test_the_chunked_loss_takes_a_bias_into_account():
    states, weight, labels = problem(seed=3)
    bias = torch.randn(weight.shape[0], generator=torch.Generator().manual_seed(4)).requires_grad_()
    expected_total, _ = plain_loss_sum(states @ weight.T + bias, labels)
    expected_total.backward()
    expected_grad = bias.grad.clone()
    bias.grad = None
    total, _ = chunked_loss_sum(states, weight, labels, bias=bias, chunk_tokens=9)
    total.backward()
    assert total.item() == pytest.approx(expected_total.item(), rel=1e-6)
    assert torch.allclose(bias.grad, expected_grad, atol=1e-5)
