"""⟨d, g_i⟩ and ‖g_i‖ of every sample of a batch without holding B copies of the trainable parameters.

`ost.method.per_sample` reads every g_i off one backward pass, which costs B copies of the parameters: fine for
the embedded proxy, too much for a real checkpoint. The default step needs only two numbers per sample, and
each layer gives them from what the pass already holds (the "ghost" norm of DP-SGD's ghost clipping):

* linear y = W a: g_i = Σ_t G_t a_tᵀ, so ⟨D, g_i⟩ = Σ_t G_t·(D a_t) and ‖g_i‖² = Σ_{t,t'} (a_t·a_t')(G_t·G_t').
  The double sum costs T²(in + out) a sample, materialising g_i costs T·in·out: each layer call takes the
  cheaper, so short sequences go the ghost way and a wide layer over a long sequence one sample at a time;
* embedding: g_i's rows are the summed G_t of the tokens sharing an id, so only the ids a sample used count;
* biases and norm gains: g_i is a vector per sample, small enough to hold.

A parameter that more than one layer call feeds (a weight tied across modules, a module called twice) gets
cross terms between the calls: it is held per sample, as `per_sample` does, for that parameter only.

Each layer's part is read as the backward pass reaches the layer (`per_sample.backward_calls`) and its gradient
let go, so the pass needs about what a training pass needs: no parameter gradients, one layer's output
gradient at a time (docs/widths.md measures it).
"""
from collections import Counter

import torch
from torch import nn

from ost.method import per_sample

CHUNK_BYTES = 256 * 2**20      # materialised per-sample gradients of one layer held at once


def _by_sample(t, n, segments):
    """(n, T, f) when t has a batch axis; else, for row-stacked vision activations, a list of (T_b, f)."""
    if segments is None:
        return t.reshape(n, -1, t.shape[-1])
    rows = [[] for _ in range(n)]
    for b, r0, r1 in segments:
        rows[b].append(t[r0:r1])
    return [torch.cat(r) if r else t.new_zeros(0, t.shape[-1]) for r in rows]


def use_gram(t: int, d_in: int, d_out: int) -> bool:
    """The T×T Gram form when it costs less than materialising: T²(in + out) against T·in·out a sample."""
    return t * (d_in + d_out) <= d_in * d_out


def _linear(a, g, d, sketch=None, k=None, out=None, first=0):
    """(dots, squared norms) float64 (n,) of y = W a's weight, from inputs a and output gradients g (n, T, ·).
    With a sketch, every g_i is materialised (a chunk at a time) and added to the features out[first:first + n]."""
    if isinstance(a, list):
        pairs = [_linear(ab[None], gb[None], d, sketch, k, out, i) for i, (ab, gb) in enumerate(zip(a, g))]
        return torch.cat([p[0] for p in pairs]), torch.cat([p[1] for p in pairs])
    n, t, d_in = a.shape
    d_out = g.shape[-1]
    dots = ((g @ d.to(g.dtype)) * a).double().sum((1, 2))
    if sketch is None and use_gram(t, d_in, d_out):    # ghost: the T×T Gram matrices
        sq = (torch.bmm(a, a.transpose(1, 2)) * torch.bmm(g, g.transpose(1, 2))).double().sum((1, 2))
        return dots, sq
    step = max(1, CHUNK_BYTES // (d_in * d_out * a.element_size()))
    sq = []
    for i in range(0, n, step):                        # materialise, a few samples at a time
        gi = torch.bmm(g[i:i + step].transpose(1, 2), a[i:i + step])
        sq.append(gi.double().pow(2).sum((1, 2)))
        if sketch is not None:
            sketch.add(out[first + i:first + i + len(gi)], k, gi)
    return dots, torch.cat(sq)


def _embedding(m, ids, g, n, d, sketch=None, k=None, out=None):
    """(dots, squared norms) of an embedding's rows: each sample's G summed per token id it used."""
    ids, g = ids.reshape(n, -1), g.reshape(n, -1, g.shape[-1])
    keep = ids != m.padding_idx if m.padding_idx is not None else torch.ones_like(ids, dtype=torch.bool)
    key = ids + m.num_embeddings * torch.arange(n, device=ids.device)[:, None]
    uniq, inverse = torch.unique(key[keep], return_inverse=True)
    rows = g.new_zeros(len(uniq), g.shape[-1]).index_add_(0, inverse, g[keep])
    owner = uniq // m.num_embeddings
    dots = torch.zeros(n, dtype=torch.float64, device=g.device).index_add_(
        0, owner, (rows * d[uniq % m.num_embeddings].to(rows.dtype)).double().sum(-1))
    sq = torch.zeros(n, dtype=torch.float64, device=g.device).index_add_(0, owner, rows.double().pow(2).sum(-1))
    if sketch is not None:
        sketch.add_rows(out, k, rows, uniq % m.num_embeddings, owner)
    return dots, sq


def _small(gi, d, sketch=None, k=None, out=None):
    """(dots, squared norms) of per-sample gradients (n, *shape) that are cheap to hold (biases, norm gains)."""
    if sketch is not None:
        sketch.add(out, k, gi)
    return (gi.double() * d.double()).flatten(1).sum(1), gi.double().pow(2).flatten(1).sum(1)


def dots_and_norms(model, batch, loss_fn, params, d=None, sketch=None) -> tuple:
    """(losses, ⟨d, g_i⟩, ‖g_i‖), each float64 (B,), from one forward and one backward pass. Each layer's part is
    read as the backward pass reaches it (`per_sample.backward_calls`), so memory beyond the pass's own is one
    layer's output gradient and its T×T Gram matrices or `CHUNK_BYTES` at a time, whatever the batch size.
    Without `d` the dots are zeros (the norms alone). With `sketch` (an `ost.method.sketch.BoundSketch`), also
    the (B, dim) sketch of each g_i / ‖g_i‖: each linear layer's g_i are then materialised a chunk at a time
    (the sketch hashes every coordinate), still never more than `CHUNK_BYTES` of them."""
    d = d if d is not None else [torch.zeros_like(p) for p in params]
    owners = per_sample._owners(model, params)
    losses, seen, hooks = per_sample.forward_calls(model, batch, loss_fn, owners, lambda *call: consume(*call))
    n = losses.shape[0]
    index = {id(p): k for k, p in enumerate(params)}
    fed = Counter(id(p) for m, *_ in seen for _, p in owners[m])
    dots = torch.zeros(n, dtype=torch.float64, device=losses.device)
    sq = torch.zeros_like(dots)
    feats = None if sketch is None else torch.zeros(n, sketch.dim, dtype=torch.float32)
    shared = {}                                        # parameter index → per-sample gradients (n, *shape)

    def consume(m, x, g, segments):                    # one layer call, as the backward pass reaches it
        for name, p in owners[m]:
            k = index[id(p)]
            if fed[id(p)] > 1:
                shared[k] = shared.get(k, 0) + per_sample._layer_grads(m, x, g, n, segments)[name]
                continue
            sk_args = (sketch, k, feats)
            if isinstance(m, nn.Linear) and name == "weight":
                dk, sk = _linear(_by_sample(x, n, segments), _by_sample(g, n, segments), d[k], *sk_args)
            elif isinstance(m, nn.Embedding):
                if segments is not None:
                    raise NotImplementedError("an embedding without a batch axis")
                dk, sk = _embedding(m, x, g, n, d[k], *sk_args)
            elif isinstance(m, nn.Linear):
                dk, sk = _small(per_sample._sum_rows(g, n, segments), d[k], *sk_args)
            else:
                dk, sk = _small(per_sample._layer_grads(m, x, g, n, segments)[name], d[k], *sk_args)
            dots.add_(dk), sq.add_(sk)

    per_sample.backward_calls(losses, seen, hooks, consume)
    del seen
    for k, gk in shared.items():
        dk, sk = _small(gk, d[k], sketch, k, feats)
        dots.add_(dk), sq.add_(sk)
    norms = sq.sqrt()
    if sketch is None:
        return losses.double(), dots, norms
    return losses.double(), dots, norms, sketch.normalized(feats, norms)


def norms(model, batch, loss_fn, params) -> torch.Tensor:
    """float64 (B,) ‖g_i‖ over `params`: from one pass where every trainable layer has a rule, else (a layer kind
    with none, such as the vision tower's Conv3d) one backward per sample."""
    try:
        return dots_and_norms(model, batch, loss_fn, params)[2]
    except NotImplementedError:
        return per_sample.norms_by_loop(model, batch, loss_fn, params)
