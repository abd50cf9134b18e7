"""Numbers the analysis reports: toxic detection per noise kind, and means with 95 % intervals.

The pool's noise labels are planted, so unlike the paper we can ask how well any scorer separates
toxic from clean samples: AUROC of "higher score = clean" against each toxic kind.
"""
import math

import numpy as np
from scipy import stats
from sklearn.metrics import roc_auc_score

from ost.data.pool import TOXIC


def toxic_auroc(scores, noise) -> dict:
    """{"all": AUROC clean vs every toxic kind, "<kind>": AUROC clean vs that kind}; non-finite scores
    are left out (they are never selected anyway). 0.5 = no separation; below 0.5 = prefers toxic."""
    scores, noise = np.asarray(scores, dtype=float), np.asarray(noise)
    ok = np.isfinite(scores)
    clean = (noise == "clean") & ok
    out = {}
    kinds = sorted(k for k in set(noise.tolist()) if k in TOXIC)
    for name, toxic in [("all", np.isin(noise, list(TOXIC)) & ok)] + [(k, (noise == k) & ok) for k in kinds]:
        mask = clean | toxic
        if clean.any() and toxic.any():
            out[name] = float(roc_auc_score(clean[mask], scores[mask]))
    return out


def mean_ci(values, level: float = 0.95) -> tuple:
    """(mean, half-width) of a Student-t interval; half-width is NaN for a single value."""
    x = np.asarray(values, dtype=float)
    if len(x) < 2:
        return float(x.mean()) if len(x) else math.nan, math.nan
    half = stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x))
    return float(x.mean()), float(half)


def detectable_difference(differences, level: float = 0.95, power: float = 0.8) -> float:
    """Minimum detectable difference of a paired comparison: the smallest true mean difference that a
    two-sided t-test at `level` over this many paired seeds finds with probability `power`, given the
    spread of the observed differences ((t_level + t_power) · sd / √n). NaN below two pairs."""
    x = np.asarray(differences, dtype=float)
    if len(x) < 2:
        return math.nan
    n = len(x)
    t = stats.t.ppf(0.5 + level / 2, n - 1) + stats.t.ppf(power, n - 1)
    return float(t * x.std(ddof=1) / math.sqrt(n))
