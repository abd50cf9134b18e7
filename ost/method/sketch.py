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
        for k, g in enumerate(grads):
            self.add(out, k, g)
        return out if norms is None else self.normalized(out, norms)

    def add(self, out, k, g) -> None:
        """Add parameter k's per-sample gradients g (n, *shape), or a chunk of them, to the features out (n, dim)."""
        out.index_add_(1, self.buckets[k], g.detach().reshape(len(g), -1).float().cpu() * self.weights[k])

    def add_rows(self, out, k, rows, row_ids, owner) -> None:
        """Add sparse per-sample rows of a 2-D parameter k: rows (U, width) of its rows row_ids, each belonging to
        the sample owner[u] (an embedding's rows a sample's tokens used)."""
        width = rows.shape[-1]
        at = row_ids.cpu()[:, None] * width + torch.arange(width)
        flat = owner.cpu()[:, None] * self.dim + self.buckets[k][at]
        out.view(-1).index_add_(0, flat.reshape(-1), (rows.detach().float().cpu() * self.weights[k][at]).reshape(-1))

    @staticmethod
    def normalized(out, norms) -> torch.Tensor:
        return out / norms.float().cpu().clamp_min(1e-30)[:, None]
