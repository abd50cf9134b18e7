"""ost.method.per_sample against one backward per sample: every g_i from one pass, on the tiny Qwen2-VL too."""
import pytest
import torch
from conftest import TINY
from torch import nn

from ost.method import ghost, one_step, per_sample
from ost.models import collate, presets, train


def _loop(model, batch, loss_fn, params):
    losses = loss_fn(model, batch)
    return [one_step._grads(losses[b], params, retain_graph=True) for b in range(losses.shape[0])]


def _check(model, batch, loss_fn, params, rtol):
    want = _loop(model, batch, loss_fn, params)
    losses, got = per_sample.gradients(model, batch, loss_fn, params)
    assert len(losses) == len(want)
    for b, gb in enumerate(want):
        for p, g, w in zip(params, got, gb):
            torch.testing.assert_close(g[b], w, rtol=rtol, atol=1e-6 * (1 + w.abs().max()))
    d = [torch.randn_like(p) for p in params]
    _, dots, norms = per_sample.dots_and_norms(model, batch, loss_fn, params, d)
    torch.testing.assert_close(norms, per_sample.norms_by_loop(model, batch, loss_fn, params), rtol=rtol, atol=0)
    torch.testing.assert_close(dots, torch.stack([sum((a.double() * c).sum() for a, c in zip(d, gb))
                                                  for gb in want]), rtol=rtol, atol=1e-9)


def test_mlp_embedding_and_norms():
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(9, 4, padding_idx=0), "ln": nn.LayerNorm(4),
                           "lin": nn.Linear(4, 3)}).double()

    def loss(m, batch):
        tokens, y = batch
        return ((m["lin"](torch.tanh(m["ln"](m["emb"](tokens)))).sum(-1).mean(-1) - y) ** 2)
    batch = (torch.tensor([[1, 2, 2, 0], [3, 3, 3, 3], [5, 0, 1, 8]]), torch.randn(3, dtype=torch.float64))
    _check(model, batch, loss, list(model.parameters()), rtol=1e-9)


def test_an_unknown_trainable_layer_is_refused():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.s = nn.Parameter(torch.ones(3))

        def forward(self, x):
            return x * self.s
    model = nn.Sequential(nn.Linear(2, 3), Scale())
    with pytest.raises(NotImplementedError, match="Scale"):
        per_sample.gradients(model, torch.randn(4, 2), lambda m, x: m(x).sum(-1), list(model.parameters()))


def test_tiny_qwen_with_the_merger_and_a_text_only_sample(tokenizer, processor, records):
    model = presets.build(TINY, tokenizer).eval()
    col = collate.Collator(tokenizer, processor)
    batch = col([records[0], {**records[1], "image": None}, records[2], records[3]])
    with train.frozen_vision(model):
        params = [p for p in model.parameters() if p.requires_grad]
        assert any("merger" in n for n, p in model.named_parameters() if p.requires_grad)
        _check(model, batch, collate.per_sample_loss, params, rtol=1e-4)


def test_a_batch_too_large_to_hold_is_refused_before_any_work(tokenizer, processor, records, monkeypatch):
    model = presets.build(TINY, tokenizer).eval()
    batch = collate.Collator(tokenizer, processor)(records[:4])
    with train.frozen_vision(model):
        params = [p for p in model.parameters() if p.requires_grad]
        monkeypatch.setattr(per_sample, "MAX_BYTES", 4 * sum(p.numel() * 4 for p in params) - 1)
        with pytest.raises(NotImplementedError, match="GiB"):
            per_sample.gradients(model, batch, collate.per_sample_loss, params)
        torch.testing.assert_close(ghost.norms(model, batch, collate.per_sample_loss, params),
                                   per_sample.norms_by_loop(model, batch, collate.per_sample_loss, params))
