"""ost.method.toxic: the calibration split, the warm-up it joins, and the calibrated flag's false-flag rate
on clean samples."""
import numpy as np
import pandas as pd
import pytest

from ost.data import schema
from ost.method import toxic, warmup
from ost.runs.settings import Warmup


def _clean(n, seed, rho=0.5):
    """Two correlated signals of clean samples: utility (low = bad) and loss (high = bad)."""
    x = np.random.default_rng(seed).multivariate_normal([0, 0], [[1, -rho], [-rho, 1]], size=n)
    return pd.DataFrame({"utility": x[:, 0], "loss": x[:, 1]})


@pytest.mark.parametrize("signals", [("utility",), ("loss",), ("utility", "loss")])
@pytest.mark.parametrize("q", [0.05, 0.2])
def test_the_realised_false_flag_rate_on_clean_samples_is_q(signals, q):
    """Clean samples drawn like the calibration set are flagged at rate q, within sampling error (4 sd of
    the two draws' binomial spread): the claim toxic.csv states."""
    n_cal, n_pool = 2000, 20000
    rates = [toxic.flag(_clean(n_pool, 100 + s), _clean(n_cal, s), toxic.Flag(q=q, signals=signals))["flag"].mean()
             for s in range(3)]
    sd = np.sqrt(q * (1 - q) * (1 / n_cal + 1 / n_pool))
    assert all(abs(r - q) < 4 * sd for r in rates), rates
    if len(signals) == 2:                   # the union spends q once, not once per signal
        single = toxic.flag(_clean(n_pool, 100), _clean(n_cal, 0), toxic.Flag(q=q, signals=("utility",)))["flag"].mean()
        assert abs(rates[0] - single) < 4 * sd


def test_flags_follow_the_signals_and_skip_unscored_rows():
    cal = _clean(500, 1)
    scores = pd.DataFrame({"utility": [-5.0, 0.0, 0.0, np.nan], "loss": [0.0, 5.0, 0.0, 0.0]}, index=list("abcd"))
    both = toxic.flag(scores, cal, toxic.Flag(signals=("utility", "loss")))
    assert both["flag"].tolist() == [True, True, False, False]
    alone = toxic.flag(scores, cal, toxic.Flag(signals=("utility",)))
    assert alone["flag"].tolist() == [True, False, False, False]
    assert np.isnan(both.loc["d", "p"])
    sign = toxic.flag(scores, cal, toxic.Flag(rule="sign"))
    assert sign["flag"].tolist() == [True, False, False, False] and (sign["threshold"] == 0).all()


@pytest.mark.parametrize("bad", [dict(rule="negative"), dict(q=0.0), dict(q=1.5), dict(signals=("shift",)),
                                 dict(signals=())])
def test_flag_settings_are_checked(bad):
    with pytest.raises(ValueError):
        toxic.Flag(**bad)


def test_rank_breaks_ties_beyond_the_calibration_by_how_extreme_the_worse_signal_is():
    cal = _clean(200, 2)
    scores = pd.DataFrame({"utility": [-9.0, -20.0, 0.0, -7.0], "loss": [0.0, 0.0, 30.0, np.nan]}, index=list("abcd"))
    out = toxic.flag(scores, cal)
    assert out["p"].iloc[:3].nunique() == 1                      # all three lie beyond every calibration sample
    # within the pool: b has the lowest utility (1/4), c the highest loss (1/3), a the second-lowest utility (2/4)
    assert out["rank"].iloc[:3].tolist() == [3, 1, 2] and np.isnan(out.loc["d", "rank"])


def test_split_calibration_is_seeded_disjoint_and_complete(records):
    val = schema.to_dataset(records[:40])
    rest, cal = toxic.split_calibration(val, 0.25, seed=3)
    assert len(cal) == 10 and len(rest) == 30
    assert set(rest["id"]) | set(cal["id"]) == set(val["id"]) and not set(rest["id"]) & set(cal["id"])
    assert toxic.split_calibration(val, 0.25, seed=3)[1]["id"] == cal["id"]
    assert toxic.split_calibration(val, 0.25, seed=4)[1]["id"] != cal["id"]
    for bad in (0.0, 1.0, 0.01):
        with pytest.raises(ValueError):
            toxic.split_calibration(val, bad)


def test_the_calibration_samples_join_the_warm_up_in_the_pools_share(records, monkeypatch):
    import datasets
    monkeypatch.setattr(warmup.base, "load_model", lambda *a, **k: (None, None, None))
    monkeypatch.setattr(warmup.train, "sft", lambda m, t, p, data, **k: {"adam_state": {}, "ids": list(data["id"])})
    dd = datasets.DatasetDict(pool=schema.to_dataset(records[:40]))
    cal = schema.to_dataset(records[40:60])
    warmed = warmup.warm_up(dd, Warmup(warmup_fraction=0.5), calibration=cal)
    ids = warmed.log["ids"]
    assert len(ids) == 20 + 10 and len(set(ids) & set(cal["id"])) == 10
    assert warmed.warm_ids + warmed.calibration_ids == ids and set(warmed.calibration_ids) <= set(cal["id"])
    alone = warmup.warm_up(dd, Warmup(warmup_fraction=0.5))
    assert len(alone.log["ids"]) == 20 and not set(alone.log["ids"]) & set(cal["id"]) and not alone.calibration_ids
    dd["calibration"] = cal                  # a pool's own calibration split joins by default
    assert warmup.warm_up(dd, Warmup(warmup_fraction=0.5)).log["ids"] == ids
