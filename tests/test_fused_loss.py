"""The chunked output-projection + cross-entropy equals the plain path in value and in gradients."""

import pytest
import torch
import torch.nn.functional as F

from herd.model import DocumentMask, Transformer
from herd.model.config import get_config
from herd.train.fused_loss import fused_linear_cross_entropy_sum
from herd.train.loss import loss_sum


def _plain(h: torch.Tensor, w: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy((h @ w.t()).flatten(0, 1), t.flatten(), ignore_index=-100, reduction="sum")


@pytest.mark.parametrize("chunk", [1, 7, 128, 10_000])
def test_value_and_gradients_match_cross_entropy(chunk: int) -> None:
    g = torch.Generator().manual_seed(0)
    h = torch.randn(3, 50, 16, generator=g, requires_grad=True)
    w = torch.randn(300, 16, generator=g, requires_grad=True)
    t = torch.randint(0, 300, (3, 50), generator=g)
    t[0, :9] = -100           # ignored targets (document ends, padding)
    t[2, -1] = -100
    ref = _plain(h, w, t)
    (ref * 0.3).backward()
    ref_h, ref_w = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    out = fused_linear_cross_entropy_sum(h, w, t, chunk=chunk)
    (out * 0.3).backward()
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-3)
    torch.testing.assert_close(h.grad, ref_h, rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(w.grad, ref_w, rtol=1e-4, atol=1e-6)
    assert float(ref_w.abs().sum()) > 0


def test_without_grad_and_with_only_weight_grad() -> None:
    g = torch.Generator().manual_seed(1)
    h = torch.randn(40, 8, generator=g)
    w = torch.randn(90, 8, generator=g, requires_grad=True)
    t = torch.randint(0, 90, (40,), generator=g)
    with torch.no_grad():
        torch.testing.assert_close(fused_linear_cross_entropy_sum(h, w, t, chunk=16), _plain(h[None], w, t[None]))
    fused_linear_cross_entropy_sum(h, w, t, chunk=16).backward()
    ref_w = w.grad.clone()
    w.grad = None
    _plain(h[None], w, t[None]).backward()
    torch.testing.assert_close(ref_w, w.grad, rtol=1e-4, atol=1e-6)


def test_all_targets_ignored_gives_zero_loss_and_zero_grad() -> None:
    h = torch.randn(5, 4, requires_grad=True)
    w = torch.randn(11, 4, requires_grad=True)
    out = fused_linear_cross_entropy_sum(h, w, torch.full((5,), -100))
    out.backward()
    assert float(out.detach()) == 0.0 and float(h.grad.abs().sum()) == 0.0 and float(w.grad.abs().sum()) == 0.0


def test_shape_mismatch_is_a_clear_error() -> None:
    with pytest.raises(ValueError, match="hidden states for"):
        fused_linear_cross_entropy_sum(torch.randn(4, 3), torch.randn(5, 3), torch.zeros(3, dtype=torch.long))


@pytest.mark.parametrize("tied", [False, True])
def test_trainer_loss_fused_equals_plain_on_a_model(tied: bool) -> None:
    """The training loss with the fused head equals logits + cross_entropy, gradients included,
    under a document mask and with tied embeddings (the head's gradient meets the embedding's)."""
    torch.manual_seed(0)
    model = Transformer(get_config("llama3-tiny", vocab_size=500, tie_embeddings=tied))
    inputs = torch.randint(0, 500, (2, 24))
    targets = torch.randint(0, 500, (2, 24))
    targets[1, 5] = -100
    mask = DocumentMask(torch.tensor([[0] * 10 + [1] * 14, [0] * 24]))
    grads = []
    losses = []
    for fused in (False, True):
        model.zero_grad()
        loss = loss_sum(model, inputs, targets, (mask.positions, mask), torch.device("cpu"), None, fused_head=fused)
        loss.backward()
        losses.append(loss.detach())
        grads.append({n: p.grad.clone() for n, p in model.named_parameters()})
    torch.testing.assert_close(losses[1], losses[0], rtol=1e-5, atol=1e-4)
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-4, atol=1e-5, msg=name)


def test_masked_rows_are_gathered_out_before_the_head(monkeypatch: pytest.MonkeyPatch) -> None:
    """Answer-only batches (loss-masked shards): the same loss and gradients as the plain path, while the
    output projection sees only the trained rows."""
    import herd.train.fused_loss as fl

    g = torch.Generator().manual_seed(3)
    h = torch.randn(4, 64, 16, generator=g, requires_grad=True)
    w = torch.randn(500, 16, generator=g, requires_grad=True)
    t = torch.full((4, 64), -100)
    answer = torch.rand(4, 64, generator=g) < 0.05
    t[answer] = torch.randint(0, 500, (int(answer.sum()),), generator=g)
    ref = _plain(h, w, t)
    ref.backward()
    ref_h, ref_w = h.grad.clone(), w.grad.clone()
    h.grad = w.grad = None
    rows_seen: list[int] = []
    original = fl._chunk_logits
    monkeypatch.setattr(fl, "_chunk_logits", lambda hc, wt, tc: rows_seen.append(hc.shape[0]) or original(hc, wt, tc))
    out = fused_linear_cross_entropy_sum(h, w, t, chunk=32)
    out.backward()
    assert sum(rows_seen) == int(answer.sum()) > 0
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.grad, ref_h, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w.grad, ref_w, rtol=1e-5, atol=1e-6)
    assert float(h.grad[~answer].abs().sum()) == 0.0


def test_chunks_grow_as_the_vocabulary_shrinks():
    from herd.train.fused_loss import DEFAULT_CHUNK_TOKENS, chunk_tokens

    assert chunk_tokens(128_256) == DEFAULT_CHUNK_TOKENS  # Llama 3's head: unchanged
    assert chunk_tokens(1024) == DEFAULT_CHUNK_TOKENS * 128_256 // 1024  # a whole small batch in one chunk
    assert chunk_tokens(10**7) == DEFAULT_CHUNK_TOKENS  # never below the default
    # the default chunk for a small head gives the same loss and gradients as explicit small chunks
    torch.manual_seed(0)
    h = torch.randn(300, 8, requires_grad=True)
    w = torch.randn(40, 8, requires_grad=True)
    t = torch.randint(0, 40, (300,))
    fused_linear_cross_entropy_sum(h, w, t).backward()
    g_default = (h.grad.clone(), w.grad.clone())
    h.grad = w.grad = None
    loss = fused_linear_cross_entropy_sum(h, w, t, chunk=7)
    loss.backward()
    torch.testing.assert_close(fused_linear_cross_entropy_sum(h, w, t), loss)
    torch.testing.assert_close(h.grad, g_default[0])
    torch.testing.assert_close(w.grad, g_default[1])
