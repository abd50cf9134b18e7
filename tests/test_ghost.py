"""ost.method.ghost against one backward per sample, in float64: ⟨d, g_i⟩ and ‖g_i‖ without per-sample gradients,
on every layer kind the tiny Qwen2-VL trains, a weight tied across two modules, and both ways a linear layer goes."""
import pytest
import torch
from conftest import TINY
from torch import nn

from ost.method import ghost, one_step, per_sample
from ost.method.sketch import Sketch
from ost.method.step import DEFAULT
from ost.models import collate, presets, train


def _check(model, batch, loss_fn, params, rtol=1e-9):
    losses = loss_fn(model, batch)
    want = [one_step._grads(losses[b], params, retain_graph=True) for b in range(losses.shape[0])]
    d = [torch.randn_like(p) for p in params]
    got_losses, dots, norms = ghost.dots_and_norms(model, batch, loss_fn, params, d)
    torch.testing.assert_close(got_losses, losses.detach().double())
    torch.testing.assert_close(norms, per_sample.norms_by_loop(model, batch, loss_fn, params), rtol=rtol, atol=0)
    torch.testing.assert_close(dots, torch.stack([sum((a.double() * c.double()).sum() for a, c in zip(d, gb))
                                                  for gb in want]), rtol=rtol, atol=1e-12)


def _mlp(tied):
    torch.manual_seed(0)
    model = nn.ModuleDict({"emb": nn.Embedding(9, 4, padding_idx=0), "ln": nn.LayerNorm(4),
                           "lin": nn.Linear(4, 3), "out": nn.Linear(4, 9, bias=False)}).double()
    if tied:
        model["out"].weight = model["emb"].weight

    def loss(m, batch):
        tokens, y = batch
        h = torch.tanh(m["ln"](m["emb"](tokens)))
        return (m["lin"](h).sum(-1).mean(-1) - y) ** 2 + m["out"](h).logsumexp(-1).mean(-1)
    batch = (torch.tensor([[1, 2, 2, 0], [3, 3, 3, 3], [5, 0, 1, 8]]), torch.randn(3, dtype=torch.float64))
    return model, loss, batch


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("gram", [True, False])
def test_embedding_norm_and_linear_layers_and_a_tied_weight(tied, gram, monkeypatch):
    monkeypatch.setattr(ghost, "use_gram", lambda *shape: gram)
    model, loss, batch = _mlp(tied)
    _check(model, batch, loss, list(model.parameters()))


@pytest.mark.parametrize("t", [2, 40])
def test_a_linear_layer_by_gram_matrices_or_one_sample_at_a_time(t, monkeypatch):
    """T = 2 takes the T×T Gram form, T = 40 materialises (in a chunk of one sample here); both are exact."""
    torch.manual_seed(1)
    a, g, d = torch.randn(3, t, 5, dtype=torch.float64), torch.randn(3, t, 4, dtype=torch.float64), torch.randn(4, 5)
    monkeypatch.setattr(ghost, "CHUNK_BYTES", 1)
    dots, sq = ghost._linear(a, g, d.double())
    per = torch.einsum("nto,nti->noi", g, a)
    torch.testing.assert_close(sq, per.pow(2).sum((1, 2)), rtol=1e-12, atol=0)
    torch.testing.assert_close(dots, (per * d.double()).sum((1, 2)), rtol=1e-12, atol=1e-12)


def _tiny_qwen_double(tokenizer, processor, records):
    """The tiny Qwen2-VL in float64 and a batch of three samples with an image and one without."""
    model = presets.build(TINY, tokenizer).double().eval()
    batch = collate.Collator(tokenizer, processor)([records[0], {**records[1], "image": None}, records[2], records[3]])
    return model, {k: v.double() if torch.is_floating_point(v) else v for k, v in batch.items()}


@pytest.mark.parametrize("gram", [True, False])
def test_tiny_qwen_with_the_merger_and_a_text_only_sample(tokenizer, processor, records, gram, monkeypatch):
    monkeypatch.setattr(ghost, "use_gram", lambda *shape: gram)
    model, batch = _tiny_qwen_double(tokenizer, processor, records)
    with train.frozen_vision(model):
        params = [p for p in model.parameters() if p.requires_grad]
        assert any("merger" in n for n, p in model.named_parameters() if p.requires_grad)
        _check(model, batch, collate.per_sample_loss, params)


def test_the_default_step_goes_the_ghost_way_and_matches_the_held_per_sample_gradients(tokenizer, processor, records):
    model = presets.build(TINY, tokenizer).eval()
    col = collate.Collator(tokenizer, processor)
    train_b, val_b = [col(records[:4]), col(records[4:6])], [col(records[10:14])]
    step = DEFAULT.with_(optimizer="sgd", lr=1e-3)
    with train.frozen_vision(model):
        light = one_step.utilities(model, train_b, val_b, collate.per_sample_loss, step)
        held = one_step.utilities(model, train_b, val_b, collate.per_sample_loss, step, backend="per_sample")
    assert (light.path, held.path) == ("ghost", "per_sample")
    torch.testing.assert_close(light.utility, held.utility, rtol=1e-4, atol=1e-9)


@pytest.mark.parametrize("chunk", [1, ghost.CHUNK_BYTES])
def test_the_sketch_from_the_ghost_pass_is_the_held_gradients_sketch(tokenizer, processor, records, chunk, monkeypatch):
    """Every layer kind (merger rows by image, embedding rows, norms, linear layers a sample or a batch at a time)
    adds its part to the count sketch as if every g_i had been held, in float64."""
    monkeypatch.setattr(ghost, "CHUNK_BYTES", chunk)
    model, batch = _tiny_qwen_double(tokenizer, processor, records)
    with train.frozen_vision(model):
        params = [p for p in model.parameters() if p.requires_grad]
        bound = Sketch(dim=512, seed=3).bind(params)
        d = [torch.randn_like(p) for p in params]
        *want, want_f = per_sample.dots_and_norms(model, batch, collate.per_sample_loss, params, d, bound)
        *got, got_f = ghost.dots_and_norms(model, batch, collate.per_sample_loss, params, d, bound)
    for a, b in zip(got, want):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got_f, want_f, rtol=1e-5, atol=1e-6)     # float32 features either way


def test_a_pass_with_no_call_that_starts_the_graph():
    """Inputs that carry a gradient themselves: every layer call is fed by one, and the pass runs to the leaves."""
    torch.manual_seed(2)
    model = nn.Sequential(nn.Linear(4, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    x = torch.randn(3, 6, 4, dtype=torch.float64, requires_grad=True)

    def loss(m, batch):
        return m(batch[0]).pow(2).mean((1, 2)) + batch[1]
    _check(model, (x, torch.zeros(3, dtype=torch.float64)), loss, list(model.parameters()))
