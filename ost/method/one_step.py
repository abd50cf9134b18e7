"""One-step-train (OST) utility: how much one optimiser step on a single sample lowers validation loss.

u_i = L_val(θ) − L_val(θ_i'), θ_i' = θ after one SGD or Adam step on sample i alone. Positive = helps.

`method="exact"` really takes each step (on the live parameters, restored from a saved copy after
each sample) and re-evaluates the validation loss: the reference, one val pass per training sample.
`method="first_order"` is the linearisation u_i ≈ −⟨g_val, Δ_i⟩, with one forward(+backward) per
training batch: ⟨d, g_i⟩ for all samples of a batch is the per-sample directional derivative of the
loss along d, which forward-mode AD (`torch.func.jvp`) gives in one pass. If forward mode fails on a
model, a double-backward trick, then a per-sample autograd loop, take over; the result says which ran.
The normalised step also needs ‖g_i‖: `ost.method.ghost` reads both numbers off one training pass.

All gradients are taken in eval mode (no dropout noise in a one-sample step); the model's
parameters, `.grad` fields and every submodule's train/eval flag are left exactly as found.
"""
import contextlib
import warnings
from typing import NamedTuple

import torch
from torch import nn
from torch.func import functional_call, jvp
from torch.nn.attention import SDPBackend, sdpa_kernel

from ost.method import ghost, per_sample
from ost.method.step import DEFAULT, Step

BACKENDS = ("jvp", "double_backward", "loop", "per_sample", "ghost")


class Utilities(NamedTuple):
    """What one scoring call gives, every row in the training batches' order."""
    utility: torch.Tensor            # float64 (N,)
    loss: torch.Tensor               # float64 (N,): each sample's own loss at θ (free: the forward pass runs anyway)
    features: torch.Tensor | None    # float32 (N, dim) sketches, when a sketch was asked for
    path: str                        # "exact", or the first-order backend that scored the last batch


def one_step_utility(model, train_batches, val_batches, loss_fn, *, lr, method="first_order", optimizer="sgd",
                     adam_state=None, normalize=False, unit_val=False, backend="auto", val_grad=None,
                     return_loss=False, sketch=None):
    """The formula's own entry point, with loose settings that default to the paper's plain step (the settings of
    `ost.method.step.PAPER`; a test holds the two together): they make the `Step` that `utilities` takes (an Adam
    step without `adam_state` starts fresh). Returns the utility tensor, or with `return_loss` (utility, loss), and
    with a sketch its features last."""
    if optimizer == "sgd" and adam_state is not None:
        raise ValueError("adam_state is only used with optimizer='adam'")
    step = Step(method=method, optimizer=optimizer, lr=lr, normalize=normalize, unit_val=unit_val,
                continue_warmup=adam_state is not None)
    r = utilities(model, train_batches, val_batches, loss_fn, step, warm_state=adam_state, backend=backend,
                  val_grad=val_grad, sketch=sketch)
    out = (r.utility, r.loss) if return_loss else (r.utility,)
    out += (r.features,) if sketch is not None else ()
    return out if len(out) > 1 else out[0]


def utilities(model, train_batches, val_batches, loss_fn, step: Step = DEFAULT, *, warm_state=None, backend="auto",
              val_grad=None, sketch=None) -> Utilities:
    """Utility of every training sample, in iteration order, as a float64 tensor of shape (N,), with each
    sample's loss, its sketch if asked for, and the path taken (`Utilities`). `step` (an `ost.method.step.Step`, checked
    when it was made) says which step is simulated; `warm_state` is the warm-up's Adam state_dict, which a step that
    continues the warm-up starts from (`Step.adam_state`).

    loss_fn(model, batch) → per-sample losses (B,). L_val weighs every validation sample equally.
    optimizer="sgd": Δ_i = −lr·g_i. optimizer="adam": one torch.optim.Adam step with this lr from
    the warm-up's state (the state_dict of an Adam over `model.parameters()`), or from a fresh state.

    First-order Adam. Continuing state (m, v, t) per tensor, with t' = t + 1, the exact step is
        Δ_i = −lr/(1−β1^t') · m_i / (√(v_i/(1−β2^t')) + eps),
        m_i = β1 m + (1−β1) g_i,   v_i = β2 v + (1−β2) g_i².
    v_i depends on g_i only through g_i², so its derivative at g_i = 0 vanishes: the first-order
    Taylor expansion of Δ_i in g_i freezes the denominator at D = √(β2 v/(1−β2^t')) + eps, giving
        u_i ≈ lr/(1−β1^t') · (β1 ⟨g_val, m/D⟩ + (1−β1) ⟨g_val/D, g_i⟩)
    (the β1 term, the momentum part of the step, is the same for every sample). This is first order
    in g_i, not in lr: it is close to exact once (1−β2)·g_i² ≪ β2·v, i.e. after a long warm-up (on
    the test MLP, Spearman vs exact is 0.86 after 5 Adam steps, 0.98 after 50, 0.9994 after 200).
    A tensor without
    state (fresh Adam, v = 0) has a sign-like first step with no linear form: it falls back to the
    SGD form lr·⟨g_val, g_i⟩ with a warning (the ranking is gradient alignment, the scale is SGD's).
    Coordinates of a stepped tensor whose v is still 0 keep D = eps, the literal linearisation.

    normalize: the step takes g_i / ‖g_i‖ (the norm over all trainable parameters) in place of g_i, so
    every sample's step has the same length and the ranking is by direction. First order, that is
    ⟨d, g_i⟩ / ‖g_i‖ (plus Adam's momentum constant). "auto" then tries "ghost" first (`ost.method.ghost`:
    ⟨d, g_i⟩ and ‖g_i‖ of a batch from one forward and one backward pass, with no per-sample copy of the
    parameters); on the other backends the norms take one backward per sample. "per_sample" (every g_i of a
    batch held at once: B copies of the parameters) is the reference the tests compare the ghost way with.

    unit_val: the validation loss weighs each sample by 1/‖g_j‖ (frozen at θ), so its gradient is the
    mean of the validation samples' unit gradients: every validation sample votes once. Without it,
    L_val's gradient is dominated by the few samples the proxy gets most wrong.

    backend ("auto" or one of BACKENDS) picks the first-order path; "auto" tries them in order.
    val_grad (first order): ∇L_val per trainable parameter from `val_gradient`, for a caller that
    scores one pool in several calls (the validation pass then runs once, not once per call).
    sketch (an `ost.method.sketch.Sketch`; first order, normalize, the ghost or per-sample backend): also the
    (N, dim) sketch of every D^(-1/2) g_i / ‖g_i‖ from the same pass.
    """
    method, lr, normalize, unit_val = step.method, step.lr, step.normalize, step.unit_val
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    params = [p for _, p in named]
    adam = _adam_states(model, params, step.adam_state(warm_state)) if step.optimizer == "adam" else None
    val = list(val_batches)
    modes = [(m, m.training) for m in model.modules()]
    # tensors a forward caches on a module (Qwen2-VL's rope_deltas): under jvp they would be left as
    # functorch wrappers, which copy.deepcopy(model) and later calls cannot use
    cached = [(m, k, v) for m in model.modules() for k, v in vars(m).items()
              if not k.startswith("_") and (v is None or torch.is_tensor(v))]
    grads = [(p, p.grad) for p in model.parameters()]
    saved = [p.detach().clone() for p in params] if method == "exact" else None
    model.eval()
    try:
        with torch.enable_grad():
            weights = _unit_weights(model, val, loss_fn, params) if unit_val and (
                method == "exact" or val_grad is None) else None
            if method == "exact":
                u, loss = _exact(model, train_batches, val, loss_fn, params, saved, lr, adam, normalize, weights)
                return Utilities(u, loss, None, "exact")
            if val_grad is None:
                val_grad = _val_loss(model, val, loss_fn, params, weights)[1]
            bound = None if sketch is None else sketch.bind(params, adam)
            if bound is not None and (not normalize or backend not in ("auto", "ghost", "per_sample")):
                raise ValueError("a sketch comes from the per-sample pass: it needs normalize=True and "
                                 "backend 'auto', 'ghost' or 'per_sample'")
            return _first_order(model, train_batches, val, loss_fn, named, lr, adam, backend, val_grad, normalize,
                                bound)
    finally:
        if saved is not None:
            with torch.no_grad():
                for p, s in zip(params, saved):
                    p.copy_(s)
        for p, g in grads:
            p.grad = g
        for m, mode in modes:
            m.training = mode
        for m, k, v in cached:
            setattr(m, k, v)


def _val_loss(model, val, loss_fn, params=None, weights=None):
    """Mean per-sample val loss (float); with `params`, also its gradient (zeros where unused).
    `weights` (one tensor per val batch) weigh each sample's loss: `_unit_weights`' 1/‖g_j‖."""
    total, n = 0.0, 0
    grad = [torch.zeros_like(p) for p in params] if params is not None else None
    for k, batch in enumerate(val):
        with torch.set_grad_enabled(params is not None):
            losses = loss_fn(model, batch)
        if weights is not None:
            losses = losses * weights[k].to(losses.dtype)
        s = losses.sum()
        total, n = total + float(s.detach().double()), n + losses.numel()
        if params is not None:
            for acc, g in zip(grad, _grads(s, params)):
                acc.add_(g)
    if n == 0:
        raise ValueError("val_batches holds no samples")
    if params is None:
        return total / n
    return total / n, [g / n for g in grad]


def _unit_weights(model, val, loss_fn, params):
    """1/‖g_j‖ for every validation sample (one tensor per batch): the weights under which every
    validation gradient has unit length, so each validation sample votes once whatever its loss."""
    out = []
    for batch in val:
        norm = ghost.norms(model, batch, loss_fn, params)
        if not (norm > 0).all():
            raise ValueError("a validation sample has a zero gradient: unit_val cannot weigh it")
        out.append(1.0 / norm)
    return out


def val_gradient(model, val_batches, loss_fn, unit_val=False) -> list:
    """∇L_val for each trainable parameter, in eval mode, for one_step_utility(val_grad=…); with
    `unit_val`, the mean of the validation samples' unit gradients (one_step_utility's `unit_val`)."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        with torch.enable_grad():
            params = [p for p in model.parameters() if p.requires_grad]
            val = list(val_batches)
            weights = _unit_weights(model, val, loss_fn, params) if unit_val else None
            return _val_loss(model, val, loss_fn, params, weights)[1]
    finally:
        for m, mode in modes:
            m.training = mode


def gradient_features(model, batches, loss_fn, sketch, adam_state=None) -> torch.Tensor:
    """(N, dim) sketches of D^(-1/2) g_j / ‖g_j‖ for samples scored by no step (the validation set), bound
    exactly as `one_step_utility(sketch=…)` binds it, so the two sides' inner products compare."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        params = [p for p in model.parameters() if p.requires_grad]
        bound = sketch.bind(params, _adam_states(model, params, adam_state) if adam_state is not None else None)
        out = []
        with torch.enable_grad():
            for batch in batches:
                out.append(ghost.dots_and_norms(model, batch, loss_fn, params, sketch=bound)[3])
        return torch.cat(out) if out else torch.zeros(0, sketch.dim)
    finally:
        for m, mode in modes:
            m.training = mode


def _cat(xs):
    return torch.cat(xs) if xs else torch.zeros(0, dtype=torch.float64)


def _grads(loss, params, retain_graph=False):
    gs = torch.autograd.grad(loss, params, retain_graph=retain_graph, allow_unused=True)
    return [torch.zeros_like(p) if g is None else g for p, g in zip(params, gs)]


# ---------------------------------------------------------------- exact path

def _exact(model, train_batches, val, loss_fn, params, saved, lr, adam, normalize=False, weights=None):
    """Reference: step the live parameters for each sample, evaluate, restore from `saved`."""
    base, out, seen = _val_loss(model, val, loss_fn, weights=weights), [], []
    for batch in train_batches:
        losses = loss_fn(model, batch)      # all of the batch's gradients before any step touches θ
        seen.append(losses.detach().double())
        grads = [_grads(losses[b], params, retain_graph=True) for b in range(losses.shape[0])]
        del losses
        for g in grads:
            if normalize:
                norm = float(torch.sqrt(sum((gi.double() ** 2).sum() for gi in g)))
                g = [gi / norm for gi in g] if norm > 0 else g
            with torch.no_grad():
                for i, (p, gi) in enumerate(zip(params, g)):
                    _step(p, gi, lr, None if adam is None else adam[i])
            with torch.no_grad():
                out.append(base - _val_loss(model, val, loss_fn, weights=weights))
                for p, s in zip(params, saved):
                    p.copy_(s)
    return torch.tensor(out, dtype=torch.float64), _cat(seen)


def _step(p, g, lr, st):
    """One in-place SGD or Adam step, written with the same tensor ops torch.optim uses (bit-for-bit)."""
    if st is None:
        p.add_(g, alpha=-lr)
        return
    beta1, beta2 = st["betas"]
    t = st["step"] + 1
    m = st["m"].lerp(g, 1 - beta1)
    v = st["v"].mul(beta2).addcmul_(g, g, value=1 - beta2)
    denom = (v.sqrt() / (1 - beta2 ** t) ** 0.5).add_(st["eps"])
    p.addcdiv_(m, denom, value=-(lr / (1 - beta1 ** t)))


def _adam_states(model, params, state_dict):
    """Per trainable parameter: m, v, step, betas, eps — continued from `state_dict`, else fresh."""
    if state_dict is None:
        return [dict(m=torch.zeros_like(p), v=torch.zeros_like(p), step=0.0, betas=(0.9, 0.999), eps=1e-8)
                for p in params]
    groups, state = state_dict["param_groups"], state_dict["state"]
    for g in groups:
        for key in ("amsgrad", "maximize"):
            if g.get(key):
                raise NotImplementedError(f"Adam with {key}=True is not supported")
        if g.get("weight_decay", 0):
            raise NotImplementedError("Adam with weight_decay != 0 is not supported")
    order = [(g, i) for g in groups for i in g["params"]]
    everything = list(model.parameters())
    pool = everything if len(order) == len(everything) else params if len(order) == len(params) else None
    if pool is None:
        raise ValueError(f"adam_state covers {len(order)} tensors; the model has {len(everything)} "
                         f"({len(params)} trainable)")
    where = {id(p): (g, state.get(i, {})) for p, (g, i) in zip(pool, order)}
    out = []
    for p in params:
        if id(p) not in where:
            raise ValueError("a trainable parameter is not in adam_state")
        g, s = where[id(p)]
        zeros = torch.zeros_like(p)
        out.append(dict(m=s["exp_avg"].to(p) if "exp_avg" in s else zeros,
                        v=s["exp_avg_sq"].to(p) if "exp_avg_sq" in s else zeros,
                        step=float(s["step"]) if "step" in s else 0.0,
                        betas=tuple(g["betas"]), eps=g["eps"]))
    return out


# ---------------------------------------------------------------- first-order path

def _direction(gval, lr, adam):
    """(d, c) with u_i ≈ c + ⟨d, g_i⟩ — see one_step_utility's docstring for the Adam form."""
    if adam is None:
        return [lr * g for g in gval], 0.0
    d, c, fresh = [], 0.0, False
    for g, st in zip(gval, adam):
        if st["step"] == 0:
            fresh = True
            d.append(lr * g)
            continue
        beta1, beta2 = st["betas"]
        t = st["step"] + 1
        scale = lr / (1 - beta1 ** t)
        denom = (st["v"] * beta2 / (1 - beta2 ** t)).sqrt() + st["eps"]
        d.append(scale * (1 - beta1) * g / denom)
        c += scale * beta1 * float((g * st["m"] / denom).sum())
    if fresh:
        warnings.warn("Adam state missing for some parameters (fresh Adam): its first step is sign-like "
                      "and has no linear form; using the SGD form lr·<g_val, g_i> for those tensors",
                      stacklevel=3)
    return d, c


class _LossOf(nn.Module):
    """loss_fn(model, batch) as a module's forward, so torch.func.functional_call can swap parameters."""

    def __init__(self, model, loss_fn):
        super().__init__()
        self.model, self.loss_fn = model, loss_fn

    def forward(self, batch):
        return self.loss_fn(self.model, batch)


def _directional(path, model, batch, loss_fn, named, d):
    """Per-sample losses and ⟨d, ∇L_b⟩ for one batch, each of shape (B,)."""
    # SDPA's fused CPU kernel has neither forward AD nor double backward; its math form has both.
    with sdpa_kernel(SDPBackend.MATH) if path != "loop" else contextlib.nullcontext():
        return _directional_in(path, model, batch, loss_fn, named, d)


def _directional_in(path, model, batch, loss_fn, named, d):
    params = [p for _, p in named]
    if path == "jvp":
        wrapper = _LossOf(model, loss_fn)
        primals = {"model." + n: p.detach() for n, p in named}
        tangents = dict(zip(primals, d))
        return jvp(lambda ps: functional_call(wrapper, ps, (batch,)), (primals,), (tangents,))
    losses = loss_fn(model, batch)
    if path == "double_backward":     # h(w) = Σ_b w_b ∇L_b is linear in w; ∂⟨d, h(w)⟩/∂w_b = ⟨d, ∇L_b⟩
        w = torch.zeros_like(losses, requires_grad=True)
        h = torch.autograd.grad((losses * w).sum(), params, create_graph=True, allow_unused=True)
        s = sum((hp * dp).sum() for hp, dp in zip(h, d) if hp is not None)
        return losses, torch.autograd.grad(s, w)[0]
    return losses, torch.stack([sum((g * dp).sum() for g, dp in zip(_grads(losses[b], params, True), d))
                                for b in range(losses.shape[0])])


def _first_order(model, train_batches, val, loss_fn, named, lr, adam, backend, gval, normalize=False,
                 sketch=None) -> Utilities:
    d, c = _direction(gval, lr, adam)
    if sketch is not None:
        candidates = ["ghost"] if backend == "auto" else [backend]     # only these two see every g_i
    elif backend == "auto":
        candidates = ["ghost", *BACKENDS[:3]] if normalize else list(BACKENDS[:3])
    else:
        candidates = [backend]
    if any(b not in BACKENDS for b in candidates):
        raise ValueError(f"backend must be 'auto' or one of {BACKENDS}, not {backend!r}")
    params = [p for _, p in named]
    out, seen, feats = [], [], []
    for batch in train_batches:
        while True:
            try:
                if candidates[0] == "per_sample":
                    loss, jv, norm, *f = per_sample.dots_and_norms(model, batch, loss_fn, params, d, sketch)
                    feats += f
                elif candidates[0] == "ghost":
                    loss, jv, norm, *f = ghost.dots_and_norms(model, batch, loss_fn, params, d, sketch)
                    feats += f
                else:
                    loss, jv = _directional(candidates[0], model, batch, loss_fn, named, d)
                    norm = per_sample.norms_by_loop(model, batch, loss_fn, params) if normalize else None
                break
            except (RuntimeError, NotImplementedError) as err:
                if len(candidates) == 1:
                    raise
                warnings.warn(f"first-order path {candidates[0]!r} failed ({type(err).__name__}: "
                              f"{str(err)[:200]}); trying {candidates[1]!r}", stacklevel=3)
                candidates.pop(0)
        jv = jv.detach().double()
        if normalize:
            jv = torch.where(norm > 0, jv / norm.clamp_min(1e-300), jv)
        out.append(c + jv)
        seen.append(loss.detach().double())
    features = (torch.cat(feats) if feats else torch.zeros(0, sketch.dim)) if sketch else None
    return Utilities(_cat(out), _cat(seen), features, candidates[0])
