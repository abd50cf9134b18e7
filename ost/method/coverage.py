"""Subset rules that read more than one utility number: strata, subset lookahead, per-validation coverage.

Plain top-k by utility ranks each sample against the mean validation gradient alone. That mean is
dominated by what most validation samples share (the easy part of the task), so top-k keeps many samples
that all teach the same thing and drops the hard ones. The rules here use only what the scorer emits —
`utility`, `loss`, `status` and, where a rule needs them, the gradient sketches of
`ost.method.sketch` (pool `features`, `val_features`) — and never a label column:

* `filter_stratify` (CCS): drop the worst `drop` by utility, cut the rest into equal-width utility
  strata, and spend the budget evenly over them, the smallest stratum first;
* `lookahead_greedy` (GREATS-style): grow the subset by the candidate whose addition most improves the
  one-step lookahead of the whole subset; a candidate's gain falls with its similarity to what is chosen;
* `round_robin` (RDS+/TAROT-style): each validation sample in turn claims its best-aligned remaining
  candidate, so every validation question gets an equal share of the budget, as exact match counts it once;
* `max_alignment`: top-k by a candidate's best alignment with any single validation sample;
* `filter_random`: drop the share of the pool that the worse of two harm signals (utility, validation shift:
  `ost.method.shift`) puts lowest, then a seeded uniform pick of the rest — the score removes harm, chance keeps
  coverage.

Every rule first removes rows that are not `ok` or have a non-finite utility, then (where set) applies a
harm filter; ties break by id, and every random choice takes the rule's seed.
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ost.method import select
from ost.runs.settings import Selection


@dataclass(frozen=True)
class FilterStratify:
    drop: float = 0.2        # share of the eligible rows dropped first, lowest utility
    drop_negative: bool = False  # drop utility < 0 too (the toxic sign)
    strata: int = 10         # equal-width utility strata of the rest
    seed: int = 0


@dataclass(frozen=True)
class FilterRandom:
    drop: float = 0.4        # share of the usable rows dropped first, by their worse harm signal (`harm_rank`)
    seed: int = 0            # the uniform pick among the rest


@dataclass(frozen=True)
class Lookahead:
    drop: float = 0.0        # harm filter: share of the eligible rows dropped first, lowest utility
    drop_negative: bool = False  # drop utility < 0 too (the toxic sign)
    step: float = 1.0        # η of the lookahead, in units where the subset's step is its mean feature


@dataclass(frozen=True)
class RoundRobin:
    drop: float = 0.2
    centre: bool = True      # subtract the pool's mean feature (the shared direction) before aligning
    drop_negative: bool = False


@dataclass(frozen=True)
class MaxAlignment:
    drop: float = 0.2
    centre: bool = True
    drop_negative: bool = False


def eligible(scores: pd.DataFrame, drop: float = 0.0, drop_negative: bool = False) -> np.ndarray:
    """Row positions a rule may choose: status `ok`, finite utility, not in the lowest `drop` share of
    those by utility (ties by id), and with `drop_negative` not below zero — the paper's own toxic sign: a
    step on the sample alone raises the validation loss. Reads only `id`, `utility` and `status`."""
    if not 0 <= drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {drop}")
    u = scores["utility"].to_numpy(dtype="float64")
    ok = np.isfinite(u)
    if "status" in scores.columns:
        ok &= (scores["status"] == "ok").to_numpy()
    if drop_negative:
        ok &= ~(u < 0)
    rows = np.flatnonzero(ok)
    ids = scores["id"].astype(str).to_numpy()[rows]
    order = rows[np.lexsort((ids, u[rows]))]           # worst first, ties by id
    return np.sort(order[int(round(drop * len(order))):])


def _k(scores, fraction, n_eligible):
    k = select.n_for(fraction, len(scores))
    if k > n_eligible:
        raise ValueError(f"asked for {k} samples, only {n_eligible} are eligible")
    return k


def _ids(scores, rows) -> list:
    return scores["id"].to_numpy()[np.asarray(rows, dtype=int)].tolist()


def top_k(scores: pd.DataFrame, fraction: float) -> list:
    """Plain top-k by utility (the reference the rules are measured against)."""
    return select.top_fraction(scores.set_index("id")["utility"].where(scores.set_index("id")["status"] == "ok"),
                               fraction)


def filter_stratify(scores: pd.DataFrame, fraction: float, rule: FilterStratify = FilterStratify()) -> list:
    """CCS: harm filter, then equal budgets over equal-width utility strata, smallest stratum first (a stratum
    smaller than its share gives it all and passes the rest on). Within a stratum the pick is seeded random:
    the stratum already says how useful; what is left to decide is spread."""
    rows = eligible(scores, rule.drop, rule.drop_negative)
    k = _k(scores, fraction, len(rows))
    u = scores["utility"].to_numpy(dtype="float64")[rows]
    edges = np.linspace(u.min(), u.max(), rule.strata + 1)
    which = np.clip(np.searchsorted(edges, u, side="right") - 1, 0, rule.strata - 1)
    groups = [rows[which == s] for s in range(rule.strata)]
    groups = sorted((g for g in groups if len(g)), key=len)
    rng = np.random.default_rng(rule.seed)
    chosen, left = [], k
    for n, g in enumerate(groups):
        take = min(len(g), left // (len(groups) - n))
        chosen += rng.choice(g, take, replace=False).tolist()
        left -= take
    if left:        # integer remainders: the largest strata take one more each
        rest = np.setdiff1d(np.concatenate(groups[::-1]), chosen)
        chosen += rng.choice(rest, left, replace=False).tolist()
    return _ids(scores, chosen)


def harm_rank(scores: pd.DataFrame) -> np.ndarray:
    """Each row's percentile rank among the usable rows by its worse harm signal (low = harmful): the utility
    and, when the frame has a `shift` column (`ost.method.shift`), the validation shift. Each signal misses harm
    the other sees: a wrong rule that still teaches the format keeps a small positive utility, but its loss rises
    once the proxy learns clean data; a lone wrong answer barely moves while the proxy learns the validation set,
    but its step points away from it. NaN for rows that are not usable."""
    rows = eligible(scores)
    signals = ["utility"] + (["shift"] if "shift" in scores.columns else [])
    ranks = [scores[c].iloc[rows].rank(pct=True, method="average").to_numpy() for c in signals]
    out = np.full(len(scores), np.nan)
    out[rows] = np.minimum.reduce(ranks)
    return out


def filter_random(scores: pd.DataFrame, fraction: float, rule: FilterRandom = FilterRandom()) -> list:
    """Drop the `rule.drop` share of the usable rows that `harm_rank` puts lowest, then a seeded uniform pick
    of the asked size from the rest.

    Why not the best-ranked rest: the mean validation gradient favours the easy samples most validation samples
    agree on, so ranking by it gives up the hard regions of the task (plain top-k keeps almost no hard item),
    and at small fractions a score-ordered pick falls below random (CCS). The score is trusted to find harm;
    among what it keeps, a random pick keeps every region near its pool share."""
    if not 0 <= rule.drop < 1:
        raise ValueError(f"drop must be in [0, 1), got {rule.drop}")
    rows = eligible(scores)
    k = _k(scores, fraction, len(rows))
    harm = harm_rank(scores)[rows]
    ids = scores["id"].astype(str).to_numpy()[rows]
    order = rows[np.lexsort((ids, harm))]                  # most harmful first, ties by id
    kept = np.sort(order[min(int(round(rule.drop * len(rows))), len(rows) - k):])   # never fewer than asked
    return _ids(scores, np.sort(np.random.default_rng(rule.seed).choice(kept, k, replace=False)))


def _unit(x):
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def lookahead_greedy(scores: pd.DataFrame, features, val_features, fraction: float,
                     rule: Lookahead = Lookahead()) -> list:
    """Greedy on the one-step lookahead of the whole subset, interaction term included.

    With a subset S of k samples stepping along its mean feature (1/k)Σφ_s, and the validation loss taken as
    quadratic around θ in the preconditioned space with its gradient the mean validation feature v, the
    lookahead is L − η⟨v, Σφ_s⟩/k + η²‖Σφ_s‖²/(2k²). Adding c to S changes it by (η/k)·[⟨v, φ_c⟩ −
    (η/k)(⟨φ_c, Σ_S φ_s⟩ + ‖φ_c‖²/2)]: the utility less what c repeats of the chosen samples. With η = 1 the
    subset's step lands where the validation gradient points (gradient matching), scale-free: no knob is tuned.
    """
    rows = eligible(scores, rule.drop, rule.drop_negative)
    k = _k(scores, fraction, len(rows))
    f = np.asarray(features, dtype="float64")[rows]
    v = np.asarray(val_features, dtype="float64").mean(0)
    gain = f @ v - rule.step / k * 0.5 * (f ** 2).sum(1)
    ids = scores["id"].astype(str).to_numpy()[rows]
    tie = np.argsort(np.argsort(ids, kind="stable"))        # rank of the id: the last resort
    taken = np.zeros(len(rows), dtype=bool)
    chosen = []
    for _ in range(k):
        best = np.flatnonzero(gain == gain[~taken].max())
        best = best[~taken[best]]
        j = best[np.argmin(tie[best])]
        chosen.append(rows[j])
        taken[j] = True
        gain -= rule.step / k * (f @ f[j])
    return _ids(scores, chosen)


def _aligned(scores, features, val_features, rule):
    rows = eligible(scores, rule.drop, rule.drop_negative)
    f = np.asarray(features, dtype="float64")[rows]
    v = np.asarray(val_features, dtype="float64")
    if rule.centre:      # what every sample shares says nothing about which validation sample it serves
        mean = f.mean(0)
        f, v = f - mean, v - mean
    return rows, _unit(v) @ _unit(f).T                      # (n_val, n_eligible) cosines


def round_robin(scores: pd.DataFrame, features, val_features, fraction: float,
                rule: RoundRobin = RoundRobin()) -> list:
    """Validation samples take turns (in their given order), each claiming its best-aligned candidate not yet
    taken, until the budget is spent: each validation question gets the same share of the subset, so the few
    hard ones are served as well as the many easy ones the mean gradient stands for."""
    rows, a = _aligned(scores, features, val_features, rule)
    k = _k(scores, fraction, len(rows))
    ids = scores["id"].astype(str).to_numpy()[rows]
    prefs = [np.lexsort((ids, -a[j])) for j in range(len(a))]   # best first, ties by id
    at = np.zeros(len(a), dtype=int)
    taken = np.zeros(len(rows), dtype=bool)
    chosen = []
    while len(chosen) < k:
        for j, pref in enumerate(prefs):
            while taken[pref[at[j]]]:
                at[j] += 1
            taken[pref[at[j]]] = True
            chosen.append(rows[pref[at[j]]])
            if len(chosen) == k:
                break
    return _ids(scores, chosen)


def max_alignment(scores: pd.DataFrame, features, val_features, fraction: float,
                  rule: MaxAlignment = MaxAlignment()) -> list:
    """Top-k by max_j cos(φ_c, φ_val_j): a candidate counts for the one validation sample it serves best."""
    rows, a = _aligned(scores, features, val_features, rule)
    k = _k(scores, fraction, len(rows))
    best = pd.Series(a.max(0), index=_ids(scores, rows))
    return list(select._ranked(best).index[:k])


# Every rule by the name `ost.select`, the CLI's --selector and notebook 03 use. Rules marked as needing
# features read the gradient sketches of `ost.method.sketch` (pool `features`, `val_features`).
RULES = {
    "filter-random": lambda s, f, seed, feats, val: filter_random(s, f, FilterRandom(seed=seed)),
    "filter-random-utility": lambda s, f, seed, feats, val: filter_random(s.drop(columns="shift", errors="ignore"), f,
                                                                          FilterRandom(seed=seed)),
    "topk": lambda s, f, seed, feats, val: top_k(s, f),
    "ccs": lambda s, f, seed, feats, val: filter_stratify(s, f, FilterStratify(drop=0.35, seed=seed)),
    "lookahead": lambda s, f, seed, feats, val: lookahead_greedy(s, feats, val, f, Lookahead(drop_negative=True)),
    "round-robin": lambda s, f, seed, feats, val: round_robin(s, feats, val, f, RoundRobin(drop=0.0,
                                                                                          drop_negative=True)),
    "max-align": lambda s, f, seed, feats, val: max_alignment(s, feats, val, f),
}
NEEDS_FEATURES = ("lookahead", "round-robin", "max-align")
# The default, chosen by principle and then checked unchanged on a second pool (docs/selection.md): the score
# removes harm, chance keeps every region.
DEFAULT = Selection().selector       # "filter-random", named once in ost.runs.settings


def choose(scores: pd.DataFrame, fraction: float, rule: str = DEFAULT, *, seed: int = 0, features=None,
           val_features=None) -> list:
    """The ids `rule` (a name of RULES) keeps from `scores` (id, utility, status and, for the default, shift)."""
    if rule not in RULES:
        raise ValueError(f"unknown selector {rule!r}; known: {sorted(RULES)}")
    if rule in NEEDS_FEATURES and (features is None or val_features is None):
        raise ValueError(f"selector {rule!r} needs the gradient features of the scoring pass (score with a "
                         "sketch: ost.method.sketch); the rules that need only scores are "
                         f"{sorted(set(RULES) - set(NEEDS_FEATURES))}")
    return RULES[rule](scores, fraction, seed, features, val_features)
