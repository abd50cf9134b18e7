"""Low-dimensional per-sample gradient features: a seeded count sketch of the default step's gradient.

A selector that looks at more than one number per sample (how two samples' steps interact, which
validation sample a candidate serves) needs every g_i, and keeping them whole costs N copies of the
trainable parameters. A count sketch keeps inner products in expectation at a fixed, small size: every
coordinate is hashed to one of `dim` buckets with a random sign (LESS and TRAK project gradients for the same
reason). The vector sketched is the one the default utility reads, φ_i = D^(-1/2) · g_i / ‖g_i‖
(D = the warm-up Adam's next-step denominator), so ⟨φ_val, φ_i⟩ ≈ ⟨ĝ_val / D, ĝ_i⟩: the sketch's inner
products are the utility's, and the same for any pair of samples.
"""
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Sketch:
    """Settings of the count sketch: its width and the seed of the bucket and sign hashes."""
    dim: int = 4096
    seed: int = 0
    precondition: bool = True      # scale by the warm-up Adam's D^(-1/2) when its state is given

    def __post_init__(self):
        if self.dim < 1:
            raise ValueError(f"Sketch.dim must be ≥ 1, not {self.dim}")

    def bind(self, params, adam=None) -> "BoundSketch":
        """The sketch for these parameters; `adam` is `one_step._adam_states`' list (None: no preconditioning)."""
        return BoundSketch(self, params, adam)


def adam_scale(st) -> torch.Tensor:
    """D^(-1/2) of one tensor's next Adam step (as `one_step._direction` forms D); ones for a fresh state."""
    if st["step"] == 0:
        return torch.ones_like(st["v"])
    beta2, t = st["betas"][1], st["step"] + 1
    return ((st["v"] * beta2 / (1 - beta2 ** t)).sqrt() + st["eps"]).rsqrt()


class BoundSketch:
    """A Sketch fixed to one list of parameters: per coordinate a bucket, a sign and a scale."""

    def __init__(self, settings: Sketch, params, adam=None):
        gen = torch.Generator().manual_seed(settings.seed)
        self.dim = settings.dim
        self.buckets, self.weights = [], []
        for k, p in enumerate(params):
            n = p.numel()
            self.buckets.append(torch.randint(0, self.dim, (n,), generator=gen))
            sign = torch.randint(0, 2, (n,), generator=gen).to(torch.float32) * 2 - 1
            if settings.precondition and adam is not None:
                sign = sign * adam_scale(adam[k]).reshape(-1).float().cpu()
            self.weights.append(sign)

    def __call__(self, grads, norms=None) -> torch.Tensor:
        """(B, dim) float32 features of per-sample gradients [(B, *p.shape)], each divided by its `norms`."""
        n = grads[0].shape[0]
        out = torch.zeros(n, self.dim, dtype=torch.float32)
        for g, b, w in zip(grads, self.buckets, self.weights):
            out.index_add_(1, b, g.detach().reshape(n, -1).float().cpu() * w)
        if norms is not None:
            out = out / norms.float().clamp_min(1e-30)[:, None]
        return out
