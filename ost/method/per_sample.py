"""Every sample's gradient from one forward and one backward pass of its batch, read off the layers.

A batch's backward sums its samples' gradients, but each layer sees every sample separately: for a linear
layer y = W a + b, sample i's gradient is Σ_t G_it a_itᵀ (G: the loss gradient at y, t: its positions);
for an embedding, G scattered into the rows of the tokens the sample used; for a norm layer's gain,
Σ_t G_it ⊙ x̂_it (x̂ the normalised input). So one pass gives every g_i, and with it the two numbers a
normalised one-step utility needs: ⟨d, g_i⟩ and ‖g_i‖ (the per-sample loop takes one backward per sample).

Rows of the vision merger carry no batch axis (Qwen2-VL concatenates every image's patches); they are
given to their sample through the batch's `image_grid_thw`. A trainable parameter of any other kind of
layer, or a batch whose per-sample gradients would not fit in `MAX_BYTES` (B copies of the trainable
parameters: fine for the embedded proxy, not for a 2 B-parameter checkpoint), raises NotImplementedError,
so a caller can fall back to `ost.method.ghost` (the same two numbers without the copies) or `norms_by_loop`
(one backward per sample, the reference both fast forms are tested against).
"""
import functools

import torch
import torch.nn.functional as F
from torch import nn

MAX_BYTES = 2 * 2**30      # per-sample gradients of one batch held at once


def _is_rms_norm(m) -> bool:
    return (hasattr(m, "variance_epsilon") and isinstance(getattr(m, "weight", None), nn.Parameter)
            and getattr(m, "bias", None) is None and m.weight.dim() == 1)


def _owners(model, params):
    """{module: trainable parameter names} for the layers above; NotImplementedError for any other."""
    wanted, owners, seen = {id(p) for p in params}, {}, set()
    for m in model.modules():
        mine = [(n, p) for n, p in m.named_parameters(recurse=False) if id(p) in wanted]
        if not mine:
            continue
        if not isinstance(m, (nn.Linear, nn.Embedding, nn.LayerNorm)) and not _is_rms_norm(m):
            raise NotImplementedError(f"no per-sample gradient rule for a trainable {type(m).__name__}")
        owners[m] = mine
        seen |= {id(p) for _, p in mine}
    if seen != wanted:
        raise NotImplementedError("some trainable parameters belong to no module")
    return owners


def _image_segments(model, batch, n_rows):
    """[(sample, first row, end row)] of a row-stacked vision activation of n_rows rows."""
    grid = batch.get("image_grid_thw")
    token = getattr(model.config, "image_token_id", None)
    if grid is None or token is None:
        raise NotImplementedError("rows without a batch axis and no image grid to attribute them")
    patches = grid.prod(-1).tolist()
    owners = torch.nonzero((batch["input_ids"] == token).any(-1)).flatten().tolist()
    total = sum(patches)
    if len(owners) != len(patches) or any(p * n_rows % total for p in patches):
        raise NotImplementedError("cannot attribute vision rows to samples")
    out, start = [], 0
    for b, p in zip(owners, patches):
        rows = p * n_rows // total
        out.append((b, start, start + rows))
        start += rows
    if start != n_rows:
        raise NotImplementedError("vision rows do not split by image")
    return out


def _sum_rows(t, n, segments):
    """(n, *feature) per-sample sums of t: t is (n, …, feature) with a batch axis, or rows with segments."""
    if segments is None:
        return t.reshape(n, -1, *t.shape[-1:]).sum(1)
    out = t.new_zeros(n, *t.shape[1:])
    for b, r0, r1 in segments:
        out[b] += t[r0:r1].sum(0)
    return out


def _outer(g, a, n, segments):
    """(n, out, in) per-sample Σ_t g_t a_tᵀ."""
    if segments is None:
        return torch.bmm(g.reshape(n, -1, g.shape[-1]).transpose(1, 2), a.reshape(n, -1, a.shape[-1]))
    out = g.new_zeros(n, g.shape[-1], a.shape[-1])
    for b, r0, r1 in segments:
        out[b] += g[r0:r1].T @ a[r0:r1]
    return out


def _layer_grads(m, x, g, n, segments) -> dict:
    """{parameter name: (n, *shape)} of one layer call, from its input x and the loss gradient g at its output."""
    if isinstance(m, nn.Linear):
        out = {"weight": _outer(g, x, n, segments)}
        if m.bias is not None:
            out["bias"] = _sum_rows(g, n, segments)
        return out
    if isinstance(m, nn.Embedding):
        if segments is not None:
            raise NotImplementedError("an embedding without a batch axis")
        ids, v = x.reshape(n, -1), m.num_embeddings
        w = g.new_zeros(n * v, g.shape[-1])
        w.index_add_(0, (ids + v * torch.arange(n, device=ids.device)[:, None]).reshape(-1), g.reshape(-1, g.shape[-1]))
        w = w.view(n, v, -1)
        if m.padding_idx is not None:
            w[:, m.padding_idx] = 0
        return {"weight": w}
    if isinstance(m, nn.LayerNorm):
        xhat = F.layer_norm(x, m.normalized_shape, eps=m.eps)
        out = {"weight": _sum_rows(g * xhat, n, segments)}
        if m.bias is not None:
            out["bias"] = _sum_rows(g, n, segments)
        return out
    h = x.to(torch.float32)                         # RMSNorm, as Qwen2's computes it
    xhat = (h * torch.rsqrt(h.pow(2).mean(-1, keepdim=True) + m.variance_epsilon)).to(x.dtype)
    return {"weight": _sum_rows(g * xhat, n, segments)}


def forward_calls(model, batch, loss_fn, owners, on_grad) -> tuple:
    """One forward pass, with every call of a layer in `owners` set up for `backward_calls`: (per-sample losses
    (B,), the calls [(layer, its input, its output if the backward pass ends there, vision segments or None,
    whether its input carries a gradient)], the hooks to remove). A call whose input carries a gradient gets a hook
    on its output that hands the output's gradient to on_grad(layer, input, gradient, segments) as soon as the
    backward pass computes it; its output itself is not kept."""
    vision = {m for name, sub in model.named_modules() if name.split(".")[-1] == "visual" for m in sub.modules()}
    seen, hooks = [], []

    def keep(mod, inp, out):
        x = inp[0]
        segments = _image_segments(model, batch, x.shape[0]) if mod in vision else None
        fed = x.requires_grad
        if fed and out.requires_grad:
            hooks.append(out.register_hook(functools.partial(_hand_over, seen, len(seen), on_grad)))
        seen.append((mod, x.detach(), None if fed else out, segments, fed))
    forward_hooks = [m.register_forward_hook(keep) for m in owners]
    try:
        with torch.enable_grad():
            losses = loss_fn(model, batch)
    finally:
        for h in forward_hooks:
            h.remove()
    n = losses.shape[0]
    for m, x, _, segments, _ in seen:
        if segments is None and x.shape[0] != n:
            raise NotImplementedError(f"a {type(m).__name__} input without the batch axis first")
    return losses, seen, hooks


def backward_calls(losses, seen, hooks, on_grad) -> None:
    """The backward pass of `forward_calls`: it runs down to the calls fed by no gradient (an embedding, the first
    trainable layer after a frozen tower), and every other call's output, on the way there, hands its gradient
    over through its hook. Nothing is kept: beyond the pass's own memory, one layer's gradient at a time. A call the
    loss does not reach is not handed over."""
    ends = [i for i, c in enumerate(seen) if not c[4] and c[2].requires_grad]
    try:
        if ends:
            grads = torch.autograd.grad(losses.sum(), [seen[i][2] for i in ends], allow_unused=True)
        else:       # every call fed by a gradient: the pass runs to the loss's own leaves, the hooks see it all
            grads = ()
            leaves = [t for t in _leaves(losses) if t.requires_grad]
            if leaves:
                torch.autograd.grad(losses.sum(), leaves, allow_unused=True)
    finally:
        for h in hooks:
            h.remove()
    for i, g in zip(ends, grads):
        if g is not None:
            _hand_over(seen, i, on_grad, g)


def _leaves(t) -> list:
    """The leaf tensors (inputs and parameters) the graph of t reaches."""
    out, todo, visited = [], [t.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in visited:
            continue
        visited.add(node)
        if hasattr(node, "variable"):
            out.append(node.variable)
        todo.extend(f for f, _ in node.next_functions)
    return out


def _hand_over(seen, i, on_grad, g):
    """Give call i's output gradient to on_grad, then let go of the call (its input is freed as soon as the
    backward pass is done with it)."""
    m, x, _, segments, _ = seen[i]
    seen[i] = None
    with torch.no_grad():
        on_grad(m, x, g.detach(), segments)
    return None


def calls(model, batch, loss_fn, owners) -> tuple:
    """(per-sample losses (B,), [(layer, its input, the loss gradient at its output, vision segments or None)]) of
    one forward and one backward pass, for every call of a layer in `owners` that the loss reaches (in the order
    the backward pass reaches them)."""
    out = []
    keep = lambda m, x, g, segments: out.append((m, x, g, segments))    # noqa: E731
    losses, seen, hooks = forward_calls(model, batch, loss_fn, owners, keep)
    backward_calls(losses, seen, hooks, keep)
    return losses.detach(), out


def gradients(model, batch, loss_fn, params) -> tuple:
    """(per-sample losses (B,), [per-sample gradient (B, *p.shape) for p in params]) from one pass."""
    owners = _owners(model, params)
    n_batch = len(batch["input_ids"]) if isinstance(batch, dict) and "input_ids" in batch else None
    size = sum(p.numel() * p.element_size() for p in params) * (n_batch or 1)
    if size > MAX_BYTES:
        raise NotImplementedError(f"per-sample gradients of this batch would take {size / 2**30:.1f} GiB "
                                  f"(> MAX_BYTES = {MAX_BYTES / 2**30:.0f} GiB)")
    losses, layer_calls = calls(model, batch, loss_fn, owners)
    n = losses.shape[0]
    index = {id(p): k for k, p in enumerate(params)}
    grads = [torch.zeros(n, *p.shape, dtype=p.dtype, device=p.device) for p in params]
    for m, x, g, segments in layer_calls:
        layer = _layer_grads(m, x, g, n, segments)
        for name, p in owners[m]:
            grads[index[id(p)]] += layer[name]
    return losses, grads


def dots_and_norms(model, batch, loss_fn, params, d, sketch=None) -> tuple:
    """(losses, ⟨d, g_i⟩, ‖g_i‖), each float64 (B,), from one forward and one backward pass; with `sketch`
    (an `ost.method.sketch.BoundSketch`), also the (B, dim) sketch of each g_i / ‖g_i‖ from the same pass."""
    losses, grads = gradients(model, batch, loss_fn, params)
    dots = sum((g.double() * dp.double()).flatten(1).sum(1) for g, dp in zip(grads, d))
    norms = _norms_of(grads)
    if sketch is None:
        return losses.double(), dots, norms
    return losses.double(), dots, norms, sketch(grads, norms)


def _norms_of(grads) -> torch.Tensor:
    """float64 (B,) ‖g_i‖ of per-sample gradients (B, *shape) per parameter."""
    return torch.sqrt(sum((g.double() ** 2).flatten(1).sum(1) for g in grads))


def norms_by_loop(model, batch, loss_fn, params) -> torch.Tensor:
    """float64 (B,): ‖g_i‖ over `params`, one backward per sample (any model, slow)."""
    with torch.enable_grad():
        losses = loss_fn(model, batch)
        out = []
        for b in range(losses.shape[0]):
            gs = torch.autograd.grad(losses[b], params, retain_graph=b + 1 < losses.shape[0], allow_unused=True)
            out.append(torch.sqrt(sum((g.double() ** 2).sum() for g in gs if g is not None)))
    return torch.stack(out) if out else torch.zeros(0, dtype=torch.float64)
