"""Toxic flags with a stated false-flag rate: a threshold calibrated on clean samples, not the sign of a step.

The paper flags a sample whose one-step utility is below 0. That sign says little once both sides of the
step are at unit length: a sample that teaches a wrong rule also teaches the answer format and the digit
reading, so its step still lowers the validation loss a little. A threshold a user can read needs a
reference: clean samples scored exactly as the pool is. The validation set is clean, but it shaped ĝ_val,
so each validation sample is scored against the gradient of the *others* (leave-one-out; the utility is
linear in ĝ_val, `one_step.self_utilities`). A sample is flagged when it ranks below the q-quantile of
those clean samples on a signal — the utility (low = its step works against the clean data) and, where
chosen, the proxy's own answer loss (high = the proxy cannot fit it) — and the expected share of clean
samples flagged is q.

    calib = calibration(model, tok, proc, validation, step=DEFAULT, warm_state=state)
    flags = flag(scores, calib, Flag(q=0.05))          # scores: utility and loss per pool id
"""
from dataclasses import dataclass

import numpy as np
import pandas as pd

from ost.method import one_step, score
from ost.method.step import DEFAULT, Step
from ost.models import collate, train

RULES = ("calibrated", "sign")
SIGNALS = ("utility", "loss")
LOW_IS_TOXIC = {"utility": True, "loss": False}


@dataclass(frozen=True)
class Flag:
    rule: str = "calibrated"          # "calibrated" (q-quantile of clean calibration samples) or "sign" (utility < 0)
    q: float = 0.05                   # the share of clean samples expected to be flagged
    signals: tuple = ("utility",)     # what a sample is ranked by; two signals share q (see `flag`)

    def __post_init__(self):
        if self.rule not in RULES:
            raise ValueError(f"Flag.rule must be one of {RULES}, not {self.rule!r}")
        if not 0 < self.q < 1:
            raise ValueError(f"Flag.q must be in (0, 1), not {self.q!r}")
        unknown = set(self.signals) - set(SIGNALS)
        if unknown or not self.signals:
            raise ValueError(f"Flag.signals must be a non-empty subset of {SIGNALS}, not {self.signals!r}")


def calibration(model, tokenizer, processor, validation, *, step: Step = DEFAULT, warm_state=None,
                batch_size=32) -> pd.DataFrame:
    """(index = validation id) `utility` of each validation sample against the validation gradient of the
    others, and its answer `loss`: clean samples scored as the pool is, which did not shape the gradient."""
    if step.method != "first_order":
        raise ValueError("the leave-one-out calibration uses the first-order utility's linearity in ĝ_val: "
                         f"score with a first-order step, not {step.label!r}")
    n = len(validation)
    if n < 2:
        raise ValueError(f"calibration needs at least 2 validation samples, got {n}")
    full = score.score_samples(model, tokenizer, processor, validation, validation, step=step,
                               warm_state=warm_state, batch_size=batch_size, with_loss=True)
    col = collate.Collator(tokenizer, processor)
    with train.frozen_vision(model):
        own = one_step.self_utilities(model, collate.batches(validation, col, batch_size), collate.per_sample_loss,
                                      **{k: v for k, v in step.kwargs(warm_state).items() if k != "method"})
    full["utility"] = (n * full["utility"].to_numpy() - own.numpy()) / (n - 1)
    return full


def _p_values(values: np.ndarray, reference: np.ndarray, low_is_toxic: bool, leave_out: bool) -> np.ndarray:
    """Conformal p-values: (1 + #reference at least as extreme) / (n + 1); `leave_out` for the reference itself."""
    ref = np.sort(reference if low_is_toxic else -reference)
    v = values if low_is_toxic else -values
    count = np.searchsorted(ref, v, side="right")
    n = len(ref) - (1 if leave_out else 0)
    return (1 + count - (1 if leave_out else 0)) / (n + 1)


def flag(scores: pd.DataFrame, calib: pd.DataFrame, setting: Flag = Flag()) -> pd.DataFrame:
    """Per row of `scores` (columns `utility` and, if used, `loss`): `p`, the share of clean calibration
    samples that rank at least as badly on the sample's worst signal, and `flag` = p ≤ threshold.

    One signal: threshold = q, so a clean sample exchangeable with the calibration samples is flagged with
    probability q (up to 1/(n+1)). Two signals: p is the smaller of the two, and the threshold is the largest
    value that flags at most q of the calibration samples (each scored against the others), so q is shared
    by the union, not spent twice. NaN scores (rows not `ok`) are never flagged."""
    if setting.rule == "sign":
        u = scores["utility"].to_numpy(dtype=float)
        return pd.DataFrame({"p": np.nan, "flag": u < 0}, index=scores.index).assign(threshold=0.0)
    ps, cal_ps = [], []
    for s in setting.signals:
        ref = calib[s].to_numpy(dtype=float)
        ps.append(_p_values(scores[s].to_numpy(dtype=float), ref, LOW_IS_TOXIC[s], False))
        cal_ps.append(_p_values(ref, ref, LOW_IS_TOXIC[s], True))
    p, cal_p = np.min(ps, axis=0), np.min(cal_ps, axis=0)
    threshold = setting.q if len(ps) == 1 else _largest_threshold(cal_p, setting.q)
    finite = np.all([np.isfinite(scores[s].to_numpy(dtype=float)) for s in setting.signals], axis=0)
    p = np.where(finite, p, np.nan)
    return pd.DataFrame({"p": p, "flag": finite & (p <= threshold)}, index=scores.index).assign(threshold=threshold)


def _largest_threshold(cal_p: np.ndarray, q: float) -> float:
    """The largest t with mean(cal_p ≤ t) ≤ q (0 when even the smallest p would flag more)."""
    candidates = np.unique(cal_p)
    ok = [t for t in candidates if np.mean(cal_p <= t) <= q]
    return float(max(ok)) if ok else 0.0
