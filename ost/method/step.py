"""The one step OST simulates, as one typed object that scoring, the notebooks, transfer and the benchmarks share.

u_i = L_val(θ) − L_val(θ − Δ_i), Δ_i one optimiser step on sample i alone (`ost.method.one_step`). A Step says
how Δ_i is formed:

* `optimizer`: "sgd" (Δ_i = lr·g_i) or "adam" (one Adam step);
* `continue_warmup` (adam): from the warm-up's own Adam state, as training would go on; False: a fresh Adam;
* `normalize`: step on g_i / ‖g_i‖, so a sample is ranked by where its gradient points, not by how
  large it is (a wrong answer on a competent proxy has a large gradient; LESS normalises for this reason);
* `unit_val`: the validation side counts each validation sample's gradient with unit length (weights
  1/‖g_j‖), so every validation sample votes once; the plain mean gradient is dominated by the few samples
  the proxy gets most wrong (LESS normalises both sides);
* `method`: "first_order" (one pass per batch) or "exact" (really step and re-evaluate: the reference);
* `lr`: the step's learning rate (first order: a scale that does not change the ranking).

`Step()` is the step the project scores with (`DEFAULT`); `PAPER` is the paper's plain first-order SGD utility.
The object itself goes down to the formula: `ost.method.one_step.utilities(model, train, val, loss_fn, step)`.
In a config or a notebook's parameters the fields are `step_method`, `step_optimizer`, `step_lr`, … (`from_params`).
"""
from dataclasses import dataclass, fields, replace

from ost.runs.settings import _Stage

METHODS = ("first_order", "exact")
OPTIMIZERS = ("sgd", "adam")


@dataclass(frozen=True)
class Step(_Stage):
    """One simulated step. The defaults are the project's choice: the warm-up's own Adam step, both sides at unit
    length. Chosen on the main pool with a competent proxy and checked unchanged on a second pool with two noise
    kinds it never had (`make step-variants`; docs/step_choice.md has the table)."""
    PREFIX = "step_"    # its fields in configs/*.yaml and the notebooks' parameters: step_lr, step_normalize, …
    method: str = "first_order"
    optimizer: str = "adam"
    lr: float = 1e-4
    normalize: bool = True
    unit_val: bool = True
    continue_warmup: bool = True

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"Step.method must be one of {METHODS}, not {self.method!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"Step.optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if not self.lr > 0:
            raise ValueError(f"Step.lr must be > 0, not {self.lr!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "Step":
        """A Step from a config or notebook dict; an unknown key is an error, not a silent default."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise TypeError(f"unknown Step setting(s) {sorted(unknown)}; known: {sorted(known)}")
        return cls(**d)

    def with_(self, **changes) -> "Step":
        return replace(self, **changes)

    def adam_state(self, warm_state):
        """The Adam state the step starts from: the warm-up's when it continues it, else None (fresh)."""
        if self.optimizer != "adam" or not self.continue_warmup:
            return None
        if warm_state is None:
            raise ValueError("this Step continues the warm-up's Adam state (continue_warmup=True), but no state "
                             "was given: pass the warm-up's optimizer state_dict, or use continue_warmup=False")
        return warm_state

    @property
    def label(self) -> str:
        opt = self.optimizer if self.optimizer == "sgd" else f"{'warm' if self.continue_warmup else 'fresh'} adam"
        unit = ", unit g_i" * self.normalize + ", unit val" * self.unit_val
        return f"{self.method.replace('_', '-')} {opt}{unit}, lr {self.lr:g}"


DEFAULT = Step()       # the step the project scores with, defined by Step's own defaults
PAPER = Step(optimizer="sgd", normalize=False, unit_val=False, continue_warmup=False)    # the paper's plain utility
