"""The selectors OST is compared with, each the real method on a real model, with its cost.

Every scorer returns `Scores`: one float per sample id (higher = keep), so OST and every baseline
go through the same `ost.method.select` functions, plus the wall seconds and an estimated FLOP count of the
scoring work. FLOPs are ≈ 2 × parameters × tokens processed per forward pass (the usual estimate;
a backward pass costs about twice that), so scorers of very different models can be put side by side.

Here: Full, Random-k, Loss (keep lowest or highest), IFD (Cherry), the paper's plain OST step and the
planted-label Oracle.
The LLM-as-a-Judge and DEITA-style scorers live in `ost.baselines.judge` and `ost.baselines.deita`.
"""
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ost.data.pool import TOXIC
from ost.method import select
from ost.method.step import PAPER
from ost.models import collate
from ost.runs.workers import bar


@dataclass
class Scores:
    """One scorer's output. `scores`: float Series indexed by sample id, higher = keep (NaN = never
    selected); `seconds`: wall time of the scoring work; `flops`: its estimated compute."""
    name: str
    scores: pd.Series
    seconds: float = 0.0
    flops: float = 0.0
    extra: dict = field(default_factory=dict)

    def top(self, fraction: float) -> list:
        return select.top_fraction(self.scores, fraction)

    @property
    def seconds_per_1000(self) -> float:
        return 1000 * self.seconds / max(len(self.scores), 1)

    def cost(self) -> dict:
        n = max(len(self.scores), 1)
        return {"name": self.name, "n": len(self.scores), "seconds": self.seconds,
                "seconds_per_1000": self.seconds_per_1000, "flops": self.flops, "flops_per_sample": self.flops / n}


def forward_flops(n_params: int, tokens: int) -> float:
    """≈ 2 × parameters × tokens: one multiply and one add per weight per token (forward only)."""
    return 2.0 * n_params * tokens


def train_flops(n_params: int, tokens: int) -> float:
    """≈ 6 × parameters × tokens: forward plus a backward pass costing about twice the forward."""
    return 3 * forward_flops(n_params, tokens)


def _series(pool, values, dtype="float64") -> pd.Series:
    ids = list(pool["id"])
    if len(set(ids)) != len(ids):
        raise ValueError("the pool has duplicate ids; every scorer needs one score per id")
    return pd.Series(np.asarray(values, dtype=dtype), index=pd.Index(ids, name="id"))


def full(pool) -> Scores:
    """Full-SFT: every sample, all tied (any top fraction then falls back to id order: use fraction 1)."""
    return Scores("full", _series(pool, np.ones(len(pool))))


def random_scores(pool, seed: int = 0) -> Scores:
    """Random-k: a seeded uniform score, so top-k is a uniform random subset of size k."""
    rng = np.random.default_rng([seed, 7])
    return Scores("random", _series(pool, rng.random(len(pool))), extra={"seed": seed})


def oracle_scores(pool, seed: int = 0) -> Scores:
    """Oracle-k from the planted labels: clean first, then exact duplicates, then toxic samples.

    A duplicate (noise == 'duplicate') is a copy of a clean pool sample: its content is clean, only
    its information is already in the pool. So it ranks after every clean sample (a perfect filter
    would not spend a slot twice) but before any toxic one (a wasted slot does not teach anything
    wrong). Within a tier the order is a seeded random one, so top-k is a random clean subset.
    Unknown labels rank with the toxic ones.
    """
    noise = np.asarray(pool["noise"])
    tier = np.where(noise == "clean", 2.0, np.where(noise == "duplicate", 1.0, 0.0))
    u = np.random.default_rng([seed, 11]).random(len(pool))
    return Scores("oracle", _series(pool, tier + 0.5 * u),
                  extra={"seed": seed, "unknown_labels": sorted(set(noise) - {"clean", "duplicate", *TOXIC})})


def oracle_clean(pool) -> Scores:
    """Oracle-clean: exactly the samples whose planted label is clean (NaN elsewhere, so
    `top_fraction(scores, 1.0)` is the clean part: the ceiling a perfect filter reaches)."""
    clean = np.asarray(pool["noise"]) == "clean"
    return Scores("oracle-clean", _series(pool, np.where(clean, 1.0, np.nan)))


def clean_random(pool, seed: int = 0) -> Scores:
    """Clean-random: a seeded uniform score on the samples planted clean, NaN elsewhere, so a top fraction is a
    random pick of that size from the clean part alone — what a perfect filter with no preference reaches at a
    given size (the ceiling a selector of the same size is measured against)."""
    clean = np.asarray(pool["noise"]) == "clean"
    u = np.random.default_rng([seed, 13]).random(len(pool))
    return Scores("clean-random", _series(pool, np.where(clean, u, np.nan)), extra={"seed": seed})


def _split_params(model) -> tuple:
    """(text parameters, vision parameters): a text-only pass never touches the vision tower."""
    visual = getattr(getattr(model, "model", model), "visual", None)
    n_vis = sum(p.numel() for p in visual.parameters()) if visual is not None else 0
    return sum(p.numel() for p in model.parameters()) - n_vis, n_vis


@torch.no_grad()
def _losses(model, tokenizer, processor, samples, batch_size, desc, progress):
    """Mean answer loss per sample (float64 numpy), and the FLOPs of the forward passes."""
    was = model.training
    model.eval()
    col = collate.Collator(tokenizer, processor)
    n_text, n_vis = _split_params(model)
    out, flops = [], 0.0
    try:
        for i in bar(range(0, len(samples), batch_size), desc=desc, progress=progress):
            batch = col(samples[i:i + batch_size])
            out.append(collate.per_sample_loss(model, batch).double())
            flops += forward_flops(n_text, int(batch["attention_mask"].sum()))
            if "pixel_values" in batch:
                flops += forward_flops(n_vis, int(batch["pixel_values"].shape[0]))
    finally:
        model.train(was)
    return torch.cat(out).numpy() if out else np.zeros(0), flops


def answer_losses(model, tokenizer, processor, pool, *, batch_size: int = 32, with_prompt: bool = True,
                  progress: bool = False) -> tuple:
    """(loss per sample as a Series by id, seconds, flops): the proxy's mean answer cross-entropy.

    `with_prompt=False` scores the answer alone: same chat layout, but an empty user turn with no
    question and no image (what IFD divides by; `ost.models.collate` needs no change for it).
    """
    start = time.perf_counter()
    cols = ["id", "image", "question", "answer"]
    samples = list(pool.select_columns(cols)) if with_prompt else \
        [{"id": i, "image": None, "question": "", "answer": a} for i, a in zip(pool["id"], pool["answer"])]
    desc = "answer loss" + ("" if with_prompt else " (answer alone)")
    loss, flops = _losses(model, tokenizer, processor, samples, batch_size, desc, progress)
    loss = np.where(np.isfinite(loss), loss, np.nan)
    return _series(pool, loss), time.perf_counter() - start, flops


def loss_scores(model, tokenizer, processor, pool, keep: str = "low", *, batch_size: int = 32,
                losses: tuple | None = None, progress: bool = False) -> Scores:
    """Loss-k on the warmed proxy: keep the lowest-loss samples ("low": what the model already agrees
    with, a strong toxic filter) or the highest ("high": the hardest, most informative ones).

    The literature uses both, so both are reported. Pass `losses=answer_losses(...)` to reuse one
    forward pass for the two variants (its seconds and FLOPs are then reported for each).
    """
    if keep not in ("low", "high"):
        raise ValueError(f"keep must be 'low' or 'high', not {keep!r}")
    loss, seconds, flops = losses if losses is not None else \
        answer_losses(model, tokenizer, processor, pool, batch_size=batch_size, progress=progress)
    return Scores(f"loss-{keep}", -loss if keep == "low" else loss.copy(), seconds, flops, {"loss": loss})


def ifd_scores(model, tokenizer, processor, pool, *, ratio: str = "loss", over_one: str = "last",
               batch_size: int = 32, progress: bool = False) -> Scores:
    """IFD (Cherry): answer loss given question + image ÷ answer loss alone, on the warmed proxy.

    A high IFD in (0, 1] means the prompt helps only a little: a hard instruction, kept first.
    IFD > 1 means the prompt makes the answer *less* likely (it does not fit it); the method filters
    such samples out. `over_one="last"` ranks them after every other sample (by −IFD, so barely-over
    ones come first) so a top-50 subset still has its full size; "drop" gives them NaN (never kept).
    Departures: the original scores text instructions with a text LLM briefly trained on a small
    slice ("pre-experienced"); here the prompt is image + question on the warmed tiny VL proxy, and
    the answer-alone loss keeps the chat layout with an empty user turn rather than raw text.
    `ratio="loss"` is the paper's ratio of mean cross-entropies; "ppl" is the perplexity ratio
    exp(l_cond − l_alone) that the released code uses. Both cross 1 at the same samples.
    """
    if ratio not in ("loss", "ppl") or over_one not in ("last", "drop"):
        raise ValueError(f"ratio must be 'loss' or 'ppl' and over_one 'last' or 'drop', got {ratio!r}, {over_one!r}")
    cond, s1, f1 = answer_losses(model, tokenizer, processor, pool, batch_size=batch_size, progress=progress)
    alone, s2, f2 = answer_losses(model, tokenizer, processor, pool, batch_size=batch_size, with_prompt=False,
                                  progress=progress)
    with np.errstate(divide="ignore", invalid="ignore"):
        ifd = cond / alone if ratio == "loss" else np.exp(cond - alone)
    ifd = ifd.where(np.isfinite(ifd) & (ifd > 0))
    over = ifd > 1
    score = ifd.where(~over, -ifd if over_one == "last" else np.nan)
    return Scores(f"ifd-{ratio}", score.astype("float64"), s1 + s2, f1 + f2,
                  {"ifd": ifd, "loss_conditioned": cond, "loss_alone": alone, "n_over_one": int(over.sum()),
                   "ratio": ratio, "over_one": over_one})



def ost_paper_scores(model, tokenizer, processor, pool, validation, *, batch_size: int = 32) -> Scores:
    """The paper's plain one-step utility (first-order SGD, `ost.method.step.PAPER`) on the warmed proxy, so the
    table shows what the paper's step gives next to the project's default step.

    FLOPs: the forward pass and its forward-mode derivative, counted as a training step's 6 × N × tokens.
    """
    from ost.method.score import score_samples  # score builds on the model code; nothing here is needed there
    start = time.perf_counter()
    u = score_samples(model, tokenizer, processor, pool, validation, step=PAPER, batch_size=batch_size)
    seconds = time.perf_counter() - start
    col = collate.Collator(tokenizer, processor)
    n_text, _ = _split_params(model)
    flops = train_flops(n_text, sum(col.n_tokens(s) for s in pool))
    return Scores("ost-paper", _series(pool, u.loc[list(pool["id"])].to_numpy()), seconds, flops,
                  {"step": PAPER.as_dict()})
