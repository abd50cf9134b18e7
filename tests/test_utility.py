"""ost.method.one_step against brute force: deep-copy the model, take a real torch.optim step on one sample,
re-evaluate the validation loss."""
import copy

import pytest
import torch
from conftest import TINY
from scipy.stats import spearmanr
from torch import nn

from ost.method import one_step
from ost.method.one_step import one_step_utility
from ost.method.step import PAPER
from ost.models import collate, presets
from ost.models.train import frozen_vision

BACKENDS = list(one_step.BACKENDS)


# ---------------------------------------------------------------- helpers

def mse(model, batch):
    x, y = batch
    return (model(x).squeeze(-1) - y) ** 2


def make_mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(5, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 1)).double()


def make_data(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 5, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64))
            for n in sizes]


def val_loss(model, val, loss_fn):
    with torch.no_grad():
        return torch.cat([loss_fn(model, b) for b in val]).double().mean().item()


def brute_exact(model, train, val, loss_fn, make_opt):
    """Copy, one real optimiser step on sample i (its loss inside its batch), evaluate, in eval mode."""
    base = val_loss(copy.deepcopy(model).eval(), val, loss_fn)
    out = []
    for batch in train:
        for i in range(len(loss_fn(model, batch))):
            m = copy.deepcopy(model).eval()
            m.zero_grad(set_to_none=True)
            opt = make_opt(m)
            loss_fn(m, batch)[i].backward()
            opt.step()
            out.append(base - val_loss(m, val, loss_fn))
    return torch.tensor(out, dtype=torch.float64)


def brute_grads(model, train, val, loss_fn):
    """(g_val, [g_i]) from plain autograd, flattened over model.parameters()."""
    m = copy.deepcopy(model).eval()
    ps = list(m.parameters())
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])
    gval = flat(torch.autograd.grad(torch.cat([loss_fn(m, b) for b in val]).mean(), ps))
    gis = [flat(torch.autograd.grad(loss_fn(m, b)[i], ps)) for b in train for i in range(len(loss_fn(m, b)))]
    return gval, gis


def sgd(lr):
    return lambda m: torch.optim.SGD(m.parameters(), lr=lr)


def adam(lr, state=None):
    def make(m):
        opt = torch.optim.Adam(m.parameters(), lr=lr)
        if state is not None:
            opt.load_state_dict(copy.deepcopy(state))   # load_state_dict may alias its tensors
            for g in opt.param_groups:
                g["lr"] = lr
        return opt
    return make


def warmed_adam(model, train, loss_fn, steps=3, lr=1e-2):
    """A model moved by a few real Adam steps, and that Adam's state_dict."""
    model = copy.deepcopy(model)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    for k in range(steps):
        opt.zero_grad()
        loss_fn(model, train[k % len(train)]).mean().backward()
        opt.step()
    model.zero_grad(set_to_none=True)
    return model, copy.deepcopy(opt.state_dict())


@pytest.fixture
def mlp_setup():
    return make_mlp(), make_data([3, 2, 4], seed=1), make_data([2, 5], seed=2)


# ---------------------------------------------------------------- 1. exact vs brute force

@pytest.mark.parametrize("opt", ["sgd", "adam_fresh", "adam_state"])
def test_exact_matches_brute_force_mlp(mlp_setup, opt):
    model, train, val = mlp_setup
    lr, state = 0.05, None
    if opt == "adam_state":
        model, state = warmed_adam(model, train, mse)
    make = sgd(lr) if opt == "sgd" else adam(lr, state)
    want = brute_exact(model, train, val, mse, make)
    got = one_step_utility(model, train, val, mse, lr=lr, method="exact",
                           optimizer="sgd" if opt == "sgd" else "adam", adam_state=state)
    if state is not None:                                # the caller's Adam state is only read
        assert all(torch.equal(v, warmed_adam(make_mlp(), train, mse)[1]["state"][i][k])
                   for i, s in state["state"].items() for k, v in s.items())
    assert got.shape == (9,)
    assert want.abs().max() > 1e-3                       # the steps really move the val loss
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


# ---------------------------------------------------------------- 2. first order vs autograd

@pytest.mark.parametrize("backend", BACKENDS)
def test_first_order_sgd_matches_autograd(mlp_setup, backend):
    model, train, val = mlp_setup
    gval, gis = brute_grads(model, train, val, mse)
    want = torch.stack([0.1 * gval @ g for g in gis])
    got = one_step_utility(model, train, val, mse, lr=0.1, backend=backend)
    assert one_step.utilities(model, train, val, mse, PAPER.with_(lr=0.1), backend=backend).path == backend
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_first_order_adam_matches_its_definition(mlp_setup):
    model, train, val = mlp_setup
    model, state = warmed_adam(model, train, mse)
    gval, gis = brute_grads(model, train, val, mse)
    (b1, b2), eps, lr = state["param_groups"][0]["betas"], state["param_groups"][0]["eps"], 1e-3
    st = [state["state"][i] for i in range(len(list(model.parameters())))]
    t = float(st[0]["step"]) + 1
    m = torch.cat([s["exp_avg"].reshape(-1) for s in st])
    D = (b2 * torch.cat([s["exp_avg_sq"].reshape(-1) for s in st]) / (1 - b2 ** t)).sqrt() + eps
    want = torch.stack([lr / (1 - b1 ** t) * (gval @ ((b1 * m + (1 - b1) * g) / D)) for g in gis])
    got = one_step_utility(model, train, val, mse, lr=lr, optimizer="adam", adam_state=state)
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_first_order_fresh_adam_falls_back_to_sgd_form(mlp_setup):
    model, train, val = mlp_setup
    with pytest.warns(UserWarning, match="fresh Adam"):
        got = one_step_utility(model, train, val, mse, lr=0.1, optimizer="adam")
    torch.testing.assert_close(got, one_step_utility(model, train, val, mse, lr=0.1))


# ---------------------------------------------------------------- 3. first order ranks like exact

@pytest.mark.parametrize("opt", ["sgd", "adam_state"])
@pytest.mark.parametrize("unit", [dict(), dict(normalize=True), dict(normalize=True, unit_val=True)],
                         ids=["plain", "unit g_i", "unit both"])
def test_first_order_ranks_like_exact(opt, unit):
    """Plain, normalised (the exact step on g_i/|g_i|) and the default (also against the 1/|g_j|-weighted
    validation loss): each first-order form ranks like its exact form."""
    model, train, val = make_mlp(seed=3), make_data([8] * 5, seed=4), make_data([6, 10], seed=5)
    state, lr = None, 1e-4
    if opt == "adam_state":     # long warm-up: Adam's first-order form is linear in g_i, exact when v ≫ g_i²
        model, state = warmed_adam(model, train, mse, steps=200, lr=1e-3)
    kw = dict(lr=lr, optimizer="sgd" if opt == "sgd" else "adam", adam_state=state, **unit)
    fo = one_step_utility(model, train, val, mse, **kw)
    ex = one_step_utility(model, train, val, mse, method="exact", **kw)
    rho = spearmanr(fo.numpy(), ex.numpy()).statistic
    assert rho >= 0.99, rho


# ---------------------------------------------------------------- 4. the model is left as found

@pytest.mark.parametrize("method", ["exact", "first_order"])
@pytest.mark.parametrize("opt", ["sgd", "adam"])
def test_model_left_unchanged(mlp_setup, method, opt):
    model, train, val = mlp_setup
    model.train()
    model[2].eval()                                       # mixed modes must survive too
    model[3].bias.requires_grad_(False)                   # frozen tensors sit out
    model[0].weight.grad = torch.randn_like(model[0].weight)
    grad = model[0].weight.grad
    before = copy.deepcopy(model.state_dict())
    kw = dict(optimizer=opt, adam_state=warmed_adam(model, train, mse)[1] if opt == "adam" else None)
    u = one_step_utility(model, train, val, mse, lr=0.1, method=method, **kw)
    assert u.shape == (9,) and torch.isfinite(u).all()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert model[0].weight.grad is grad and torch.equal(grad, grad.clone())
    assert model[0].bias.grad is None and model[3].weight.grad is None and model[3].bias.grad is None
    assert [m.training for m in model.modules()] == [True, True, True, False, True]


# ---------------------------------------------------------------- 5. tiny Qwen2-VL

@pytest.fixture(scope="module")
def qwen(tokenizer, processor, records):
    col = collate.Collator(tokenizer, processor)
    train, val = [col(records[0:2]), col(records[2:4])], [col(records[10:13])]
    return presets.build(TINY, tokenizer), train, val


def test_qwen_exact_matches_brute_force(qwen):
    model, train, val = qwen
    loss = collate.per_sample_loss
    want = brute_exact(model, train, val, loss, sgd(0.1))
    got = one_step_utility(model, train, val, loss, lr=0.1, method="exact")
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)
    assert model.training

    warm, state = warmed_adam(model, train, loss, steps=2, lr=1e-3)
    want = brute_exact(warm, train, val, loss, adam(1e-3, state))
    got = one_step_utility(warm, train, val, loss, lr=1e-3, method="exact", optimizer="adam", adam_state=state)
    assert want.abs().max() > 1e-3
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-5)


def test_qwen_first_order_matches_autograd(qwen):
    model, train, val = qwen
    gval, gis = brute_grads(model, train, val, collate.per_sample_loss)
    want = torch.stack([0.1 * gval @ g for g in gis]).double()
    scored = one_step.utilities(model, train, val, collate.per_sample_loss, PAPER.with_(lr=0.1))
    got = scored.utility
    assert scored.path == "jvp"                    # forward mode works (SDPA in its math form)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
    copy.deepcopy(model)            # no functorch wrapper left in a cache (Qwen2-VL keeps rope_deltas)
    got, loss = one_step_utility(model, train, val, collate.per_sample_loss, lr=0.1, return_loss=True)
    torch.testing.assert_close(loss, torch.cat([collate.per_sample_loss(model, b) for b in train]).double().detach(),
                               rtol=1e-4, atol=1e-6)
    gval = one_step.val_gradient(model, val, collate.per_sample_loss)
    torch.testing.assert_close(one_step_utility(model, train, val, collate.per_sample_loss, lr=0.1, val_grad=gval),
                               got)


# ---------------------------------------------------------------- 6. tied weights

class Tied(nn.Module):
    """Embedding and output head share one weight, as in tied-embedding language models."""

    def __init__(self, vocab=11, dim=6):
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.mix = nn.Linear(dim, dim)
        self.head = nn.Linear(dim, vocab, bias=False)
        self.head.weight = self.emb.weight

    def forward(self, tokens):
        return self.head(torch.tanh(self.mix(self.emb(tokens).mean(1))))


def ce(model, batch):
    tokens, target = batch
    return nn.functional.cross_entropy(model(tokens), target, reduction="none")


@pytest.fixture
def tied_setup():
    torch.manual_seed(0)
    model = Tied().double()
    g = torch.Generator().manual_seed(7)
    data = lambda n: (torch.randint(0, 11, (n, 4), generator=g), torch.randint(0, 11, (n,), generator=g))
    return model, [data(3), data(2)], [data(4), data(1)]


@pytest.mark.parametrize("opt", ["sgd", "adam_state"])
def test_tied_weights_exact(tied_setup, opt):
    model, train, val = tied_setup
    assert len(list(model.parameters())) == 3
    state = None
    if opt == "adam_state":
        model, state = warmed_adam(model, train, ce)
    want = brute_exact(model, train, val, ce, sgd(0.5) if opt == "sgd" else adam(0.05, state))
    got = one_step_utility(model, train, val, ce, lr=0.5 if opt == "sgd" else 0.05, method="exact",
                           optimizer="sgd" if opt == "sgd" else "adam", adam_state=state)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_tied_weights_first_order(tied_setup, backend):
    model, train, val = tied_setup
    gval, gis = brute_grads(model, train, val, ce)
    want = torch.stack([0.5 * gval @ g for g in gis])
    got = one_step_utility(model, train, val, ce, lr=0.5, backend=backend)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- 7. normalised step (unit-length g_i)

def test_normalized_exact_is_a_step_on_the_unit_gradient(mlp_setup):
    model, train, val = mlp_setup
    gval, gis = brute_grads(model, train, val, mse)
    got = one_step_utility(model, train, val, mse, lr=1e-6, method="exact", normalize=True)
    first = one_step_utility(model, train, val, mse, lr=1e-6, normalize=True)
    want = torch.stack([1e-6 * gval @ g / g.norm() for g in gis])
    torch.testing.assert_close(first, want, rtol=1e-9, atol=1e-15)
    torch.testing.assert_close(got, want, rtol=1e-3, atol=1e-12)     # a tiny step: exact ≈ linear
    # the gradient's length no longer counts: a loss 5x as large scales u by 5 (through g_val) not 25
    scaled = lambda m, b: 5.0 * mse(m, b)
    torch.testing.assert_close(one_step_utility(model, train, val, scaled, lr=1e-6, normalize=True), 5 * first)
    torch.testing.assert_close(one_step_utility(model, train, val, scaled, lr=1e-6),
                               25 * one_step_utility(model, train, val, mse, lr=1e-6))


@pytest.mark.parametrize("backend", ["ghost", "per_sample", "jvp"])
def test_normalized_first_order_on_tiny_qwen_matches_the_exact_step(qwen, backend):
    """The fast paths (⟨d, g_i⟩ and ‖g_i‖ from one backward per batch) and the per-sample loop give the same
    normalised utility as its definition, and the exact normalised step with a small lr agrees."""
    model, train, val = qwen
    loss = collate.per_sample_loss
    with frozen_vision(model):      # as OST scores: the merger trains, the tower does not
        params = [p for p in model.parameters() if p.requires_grad]
        flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])
        gval = flat(one_step.val_gradient(model, val, loss))
        gis = [flat(one_step._grads(li, params, retain_graph=True)) for b in train for li in loss(model, b)]
        scored = one_step.utilities(model, train, val, loss, PAPER.with_(lr=1e-4, normalize=True), backend=backend)
        fast = scored.utility
        assert scored.path == backend
        exact = one_step_utility(model, train, val, loss, lr=1e-4, normalize=True, method="exact")
    want = torch.stack([1e-4 * gval @ g / g.norm() for g in gis]).double()
    torch.testing.assert_close(fast, want, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(exact, fast, rtol=0.05, atol=1e-7)
    with pytest.warns(UserWarning, match="'ghost' failed"):   # the tower's Conv3d has no rule: the loop
        scored = one_step.utilities(model, train, val, loss, PAPER.with_(lr=1e-4, normalize=True))
    assert scored.path == "jvp" and torch.isfinite(scored.utility).all()


# ---------------------------------------------------------------- 8. every validation sample votes once

def test_unit_val_weighs_each_validation_sample_by_its_gradient_norm(mlp_setup):
    model, train, val = mlp_setup
    flat = lambda gs: torch.cat([g.reshape(-1) for g in gs])
    m = copy.deepcopy(model).eval()         # gradients are taken in eval mode (no dropout)
    gjs = [flat(torch.autograd.grad(mse(m, b)[j], list(m.parameters()))) for b in val for j in range(len(b[1]))]
    unit = torch.stack([g / g.norm() for g in gjs]).mean(0)
    torch.testing.assert_close(flat(one_step.val_gradient(model, val, mse, unit_val=True)), unit)
    _, gis = brute_grads(model, train, val, mse)
    got = one_step_utility(model, train, val, mse, lr=1e-3, normalize=True, unit_val=True)
    torch.testing.assert_close(got, torch.stack([1e-3 * unit @ g / g.norm() for g in gis]), rtol=1e-9, atol=1e-15)


def test_the_default_step_on_tiny_qwen_fast_against_exact(qwen):
    from ost.method.step import DEFAULT
    model, train, val = qwen
    loss = collate.per_sample_loss
    warm, state = warmed_adam(model, train, loss, steps=30, lr=1e-3)   # v ≫ g²: the linear form holds
    with frozen_vision(warm):
        scored = one_step.utilities(warm, train, val, loss, DEFAULT, warm_state=state)
        fast = scored.utility
        assert scored.path == "ghost"
        exact = one_step.utilities(warm, train, val, loss, DEFAULT.with_(method="exact"), warm_state=state).utility
    assert spearmanr(fast.numpy(), exact.numpy()).statistic >= 0.99
    torch.testing.assert_close(exact, fast, rtol=0.1, atol=1e-8)
