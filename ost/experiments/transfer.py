"""Does the proxy's ranking hold beyond the proxy? Transfer to the target, and sensitivity to settings.

Two questions reviewers of the paper asked, answered with the same two steps (warm a model on the
warm-up slice, score samples with a one-step utility):
* transfer: does the proxy's utility predict the *target's* own one-step validation change?
  (Spearman over a sample of the pool, the target warmed on the same slice the same way);
* sensitivity: how much of the top-20 % survives another proxy size, warm-up length or step size?
  (|A ∩ B| / |A| of the top-20 % sets, on the same samples).
"""
from dataclasses import replace

import numpy as np
import pandas as pd
import torch

from ost import runs
from ost.method import score, select, warmup
from ost.method.step import DEFAULT
from ost.models import base, presets
from ost.runs.settings import Warmup


def score_setting(dd, *, rows, step=DEFAULT, saved=None, warm_up: Warmup = None, warm_ids=(),
                  threads=1) -> pd.Series:
    """One setting's utilities of the pool rows `rows` under `step` (an `ost.Step`), on `threads` threads.

    With `warm_up` (a `Warmup`) its proxy is first fine-tuned on `warm_ids`, and a step that continues the
    warm-up starts from that Adam state; without it, the warm-up artifact in the folder `saved` is read
    (`ost.method.warmup.load`: notebook 01's proxy and its Adam state).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        if warm_up is not None:
            w = warmup.warm_up(dd, warm_up, warm_ids=warm_ids)
            m, tok, proc, state = w.model, w.tokenizer, w.processor, w.adam_state
        else:
            proxy = warmup.load(saved)
            m, tok, proc, state = proxy.model, proxy.tokenizer, proxy.processor, proxy.adam_state
        return score.score_samples(m, tok, proc, dd["pool"].select(rows), dd["validation"], step=step, warm_state=state)
    finally:
        torch.set_num_threads(before)


def score_settings(dd, settings: dict, workers: int = 1, progress: bool = True) -> dict:
    """{name: utilities} of each setting (the keyword arguments of `score_setting`), `workers` at once,
    each in a process of its own.

    Every setting runs on one thread wherever it runs, so its numbers do not depend on `workers`; a model
    this small gains nothing from a second thread (the proxy's exact step: 0.27 s a sample on one thread,
    0.33 s on two), so two processes score two settings in the time of one.
    """
    models = {s["warm_up"].proxy for s in settings.values() if s.get("warm_up")}
    base.build_bases(sorted(m for m in models if m in presets.PRESETS))     # once, not per worker
    order = sorted(settings, key=lambda name: settings[name].get("step", DEFAULT).method != "exact")   # long jobs first
    jobs = {name: ((dd,), settings[name]) for name in order}
    out = dict(runs.as_done(score_setting, jobs, workers, "settings", progress))
    return {name: out[name] for name in settings}


def settings_grid(warm_up: Warmup, warm_ids, step, *, saved, target, transfer_rows, sensitivity_rows,
                  proxy_sizes=(), warmup_epochs_grid=(), step_lrs=()) -> dict:
    """Notebook 06's settings, each a `score_setting` keyword set: the transfer pair (the target warmed as the
    proxy was, and the proxy saved in the warm-up folder `saved`, both scored exactly on `transfer_rows`), then
    one change at a time from the default on `sensitivity_rows` — another proxy size, warm-up length or step lr.
    A value equal to the default is skipped (it would only rescore the default)."""
    saved = dict(saved=str(saved))
    exact = step.with_(method="exact")
    grid = {"transfer: target, exact": dict(warm_up=replace(warm_up, proxy=target), warm_ids=warm_ids,
                                            rows=transfer_rows, step=exact),
            "transfer: proxy, exact": dict(**saved, rows=transfer_rows, step=exact)}
    for size in proxy_sizes:
        if size != warm_up.proxy:
            grid[f"proxy={size}"] = dict(warm_up=replace(warm_up, proxy=size), warm_ids=warm_ids,
                                         rows=sensitivity_rows, step=step)
    for epochs in warmup_epochs_grid:
        if epochs != warm_up.warmup_epochs:
            grid[f"warmup_epochs={epochs:g}"] = dict(warm_up=replace(warm_up, warmup_epochs=float(epochs)),
                                                     warm_ids=warm_ids, rows=sensitivity_rows, step=step)
    for lr in step_lrs:
        if lr != step.lr:
            grid[f"step_lr={lr:g}"] = dict(**saved, rows=sensitivity_rows, step=exact.with_(lr=lr))
    return grid


def describe(settings: dict) -> pd.DataFrame:
    """One row per setting: what it warms (or that it uses notebook 01's saved proxy), its step, its samples."""
    return pd.DataFrame({name: {"model": s["warm_up"].proxy if s.get("warm_up") else "notebook 01's proxy",
                                "warm-up epochs": s["warm_up"].warmup_epochs if s.get("warm_up") else "as saved",
                                "step": s["step"].label, "samples": len(s["rows"])}
                         for name, s in settings.items()}).T


def top_overlap(reference: pd.Series, other: pd.Series, fraction: float = 0.2) -> float:
    """|A ∩ B| / |A| of the two top fractions, over the ids both scored."""
    common = reference.index.intersection(other.index)
    a = set(select.top_fraction(reference.loc[common], fraction))
    b = set(select.top_fraction(other.loc[common], fraction))
    return len(a & b) / len(a)


def sample_rows(n_total: int, n: int, seed: int) -> list:
    """A seeded random sample of row numbers, sorted (so the scored order is the pool's order)."""
    return sorted(np.random.default_rng(seed).choice(n_total, min(n, n_total), replace=False).tolist())


def spearman(a: pd.Series, b: pd.Series) -> float:
    from scipy.stats import spearmanr
    common = a.index.intersection(b.index)
    return float(spearmanr(a.loc[common], b.loc[common])[0])

