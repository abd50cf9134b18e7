"""Toxic flags with a stated false-flag rate: a threshold calibrated on clean samples, not the sign of a step.

The paper flags a sample whose one-step utility is below 0. That sign says little once both sides of the
step are at unit length: a sample that teaches a wrong rule also teaches the answer format and the digit
reading, so its step still lowers the validation loss a little (on the main pool the sign flagged 5 % of the
wrong answers), while on another task it flagged 30 % of the clean samples. A threshold a user can read
needs a reference: clean samples that went through everything a clean pool sample goes through — trained on
in the warm-up, no part of ĝ_val, drawn as the pool's clean samples are — and are scored as the pool is. The
synthetic pool makes such a split (`ost.data.pool.make_calibration_records`); for a user's data
`split_calibration` sets a part of the validation set aside. Either joins the warm-up
(`ost.method.warmup.warm_up`). A validation set drawn unlike the pool (other handwriting, one phrasing per
item) gives a threshold that flags less than q of the clean pool: measured on the main pool, 2.2 % at q = 5 %.

A sample is flagged when, on its worse signal, it ranks below all but a share q of the calibration samples.
The two signals see two failure modes: the utility, a sample whose step works against the clean data (a
wrong rule taught consistently, which the proxy partly learns and so still fits); the proxy's own answer
loss, a sample a competent proxy cannot fit (a random wrong answer, a wrong image). Either alone misses a
kind the other catches (benchmarks/check_toxic.py, docs/toxic.md).

    validation, calibration = split_calibration(dd["validation"])
    ...warm on the pool and `calibration`, score the pool against `validation`...
    ref = reference(model, tok, proc, calibration, validation, step=DEFAULT, warm_state=state)
    flags = flag(scores, ref)          # scores: utility and loss per pool id
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ost.method import score
from ost.method.step import DEFAULT, Step

RULES = ("calibrated", "sign")
CALIBRATION_FRACTION = 0.5     # of the validation set: calibrates the flags; the rest makes ĝ_val
SIGNALS = ("utility", "loss")
LOW_IS_TOXIC = {"utility": True, "loss": False}


@dataclass(frozen=True)
class Flag:
    rule: str = "calibrated"          # "calibrated" (q-quantile of clean calibration samples) or "sign" (utility < 0)
    q: float = 0.05                   # the share of clean samples expected to be flagged
    signals: tuple = ("utility", "loss")  # what a sample is ranked by; two signals share q (see `flag`)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"Flag.rule must be one of {RULES}, not {self.rule!r}")
        if not 0 < self.q < 1:
            raise ValueError(f"Flag.q must be in (0, 1), not {self.q!r}")
        unknown = set(self.signals) - set(SIGNALS)
        if unknown or not self.signals:
            raise ValueError(f"Flag.signals must be a non-empty subset of {SIGNALS}, not {self.signals!r}")


def split_calibration(validation, fraction: float = CALIBRATION_FRACTION, seed: int = 0) -> tuple:
    """(validation, calibration): a seeded `fraction` of the clean validation set set aside to calibrate the flags.

    The rest makes ĝ_val and measures the proxy's competence; the calibration part joins the warm-up as the
    pool does (`ost.method.warmup.warm_up(calibration=…)`) and is scored as the pool is. Clean pool samples
    are trained on in the warm-up and do not shape ĝ_val: the calibration samples must share both, or the
    threshold is off (validation samples the warm-up never saw have a higher loss and a lower utility than
    the pool's clean samples: at q = 5 % they flagged 0 % and 2.5 % of them on the main pool)."""
    if not 0 < fraction < 1:
        raise ValueError(f"the calibration fraction must be in (0, 1), not {fraction!r}")
    n = len(validation)
    k = round(fraction * n)
    if k < 1 or k >= n:
        raise ValueError(f"{n} validation samples cannot be split {fraction:g} / {1 - fraction:g}: each part "
                         "needs at least one sample (a threshold at q needs about 1/q calibration samples)")
    cal = sorted(np.random.default_rng(seed).permutation(n)[:k].tolist())
    rest = sorted(set(range(n)) - set(cal))
    return validation.select(rest), validation.select(cal)


def reference(model, tokenizer, processor, calibration, validation, *, step: Step = DEFAULT, warm_state=None,
              batch_size=32) -> pd.DataFrame:
    """(index = calibration id) `utility` and `loss` of the calibration samples, scored as the pool is."""
    return score.score_samples(model, tokenizer, processor, calibration, validation, step=step,
                               warm_state=warm_state, batch_size=batch_size, with_loss=True)


def write_reference(ref: pd.DataFrame, path) -> None:
    """calibration.parquet: `reference`'s frame, its ids a column (`read_reference` gives them back as the index)."""
    ref.rename_axis("id").reset_index().to_parquet(path, index=False)


def read_reference(path) -> pd.DataFrame:
    """calibration.parquet as `reference` returned it (index = id; utility, loss): what `flag` compares with."""
    return pd.read_parquet(path).set_index("id")


def _p_values(values: np.ndarray, reference: np.ndarray, low_is_toxic: bool, leave_out: bool) -> np.ndarray:
    """Conformal p-values: (1 + #reference at least as extreme) / (n + 1); `leave_out` for the reference itself."""
    ref = np.sort(reference if low_is_toxic else -reference)
    v = values if low_is_toxic else -values
    count = np.searchsorted(ref, v, side="right")
    n = len(ref) - (1 if leave_out else 0)
    return (1 + count - (1 if leave_out else 0)) / (n + 1)


def flag(scores: pd.DataFrame, calib: pd.DataFrame, setting: Flag = Flag()) -> pd.DataFrame:
    """Per row of `scores` (columns `utility` and, if used, `loss`): `p`, the share of clean calibration
    samples that rank at least as badly on the sample's worse signal (named in `signal`), `flag` = p ≤
    threshold, and `rank` (1 = most suspicious: by p, then by how extreme the worse signal is within `scores`).

    One signal: threshold = q, so a clean sample exchangeable with the calibration samples is flagged with
    probability q (up to 1/(n+1)). Two signals: p is the smaller of the two, and the threshold is the largest
    value that flags at most q of the calibration samples (each scored against the others), so q is shared
    by the union, not spent twice. NaN scores (rows not `ok`) are never flagged."""
    if setting.rule == "sign":
        u = scores["utility"].astype(float)
        return pd.DataFrame({"p": np.nan, "flag": (u < 0).to_numpy(), "rank": u.rank(method="first").to_numpy(),
                             "signal": "utility"}, index=scores.index).assign(threshold=0.0)
    ps, cal_ps = [], []
    for s in setting.signals:
        ref = calib[s].to_numpy(dtype=float)
        ps.append(_p_values(scores[s].to_numpy(dtype=float), ref, LOW_IS_TOXIC[s], False))
        cal_ps.append(_p_values(ref, ref, LOW_IS_TOXIC[s], True))
    p, cal_p = np.min(ps, axis=0), np.min(cal_ps, axis=0)
    worse = np.asarray(setting.signals)[np.argmin(ps, axis=0)]
    threshold = setting.q if len(ps) == 1 else _largest_threshold(cal_p, setting.q)
    finite = np.all([np.isfinite(scores[s].to_numpy(dtype=float)) for s in setting.signals], axis=0)
    p = np.where(finite, p, np.nan)
    # many noisy samples lie beyond every calibration sample (p = 1/(n+1)): among equal p, the sample that is
    # more extreme within the pool on its worse signal ranks first
    within = np.min([scores[s].rank(pct=True, ascending=LOW_IS_TOXIC[s]).to_numpy() for s in setting.signals], axis=0)
    order = np.lexsort((within, p))
    rank = np.empty(len(p))
    rank[order] = np.arange(1, len(p) + 1)
    return pd.DataFrame({"p": p, "flag": finite & (p <= threshold), "rank": np.where(finite, rank, np.nan),
                         "signal": np.where(finite, worse, "")}, index=scores.index).assign(threshold=threshold)


def can_flag(threshold: float, n_calibration: int) -> bool:
    """Whether any sample can be flagged: p is at least 1/(n+1), so a threshold below it flags none (too few
    calibration samples for q: a threshold at q needs about 1/q of them, a shared one a few times more)."""
    return threshold >= 1 / (n_calibration + 1)


def _largest_threshold(cal_p: np.ndarray, q: float) -> float:
    """The largest t with mean(cal_p ≤ t) ≤ q (0 when even the smallest p would flag more)."""
    values = np.sort(cal_p)
    flagged = np.searchsorted(values, values, side="right")        # calibration samples at or below each value
    ok = values[flagged <= q * len(values)]
    return float(ok[-1]) if len(ok) else 0.0


def cut_points(calib: pd.DataFrame, q: float) -> dict:
    """Each signal's q-quantile among the calibration samples on its toxic side, in the signal's own units:
    where a flag on that signal alone would cut (what report.json states next to the p threshold)."""
    return {s: float(np.quantile(calib[s], q if LOW_IS_TOXIC[s] else 1 - q)) for s in SIGNALS}
