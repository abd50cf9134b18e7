"""ost.method.toxic: the leave-one-out calibration against scoring each validation sample with the others
as the validation set, and the calibrated flag's false-flag rate on clean samples."""
import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from test_utility import warmed_adam

from ost.data import schema
from ost.method import score, toxic
from ost.method.step import DEFAULT, PAPER, Step
from ost.models import collate, presets


@pytest.fixture(scope="module")
def tiny(tokenizer, processor, records):
    model = presets.build(TINY, tokenizer)
    col = collate.Collator(tokenizer, processor)
    warm, state = warmed_adam(model, [col(records[0:4]), col(records[4:8])], collate.per_sample_loss, steps=30,
                              lr=1e-3)
    return warm, state, schema.to_dataset(records[20:25])


@pytest.mark.parametrize("step", [DEFAULT, PAPER, Step(optimizer="sgd", normalize=True, unit_val=True,
                                                       continue_warmup=False)], ids=lambda s: s.label)
def test_calibration_scores_each_validation_sample_against_the_others(tiny, tokenizer, processor, step):
    model, state, val = tiny
    warm_state = state if step.optimizer == "adam" else None
    got = toxic.calibration(model, tokenizer, processor, val, step=step, warm_state=warm_state)
    for j in range(len(val)):
        others = val.select([k for k in range(len(val)) if k != j])
        want = score.score_samples(model, tokenizer, processor, val.select([j]), others, step=step,
                                   warm_state=warm_state, with_loss=True)
        row = got.loc[val[j]["id"]]
        assert row["utility"] == pytest.approx(want["utility"].iloc[0], rel=1e-4, abs=1e-12)
        assert row["loss"] == pytest.approx(want["loss"].iloc[0], rel=1e-6)


def test_calibration_refuses_the_exact_step(tiny, tokenizer, processor):
    model, state, val = tiny
    with pytest.raises(ValueError, match="first-order"):
        toxic.calibration(model, tokenizer, processor, val, step=DEFAULT.with_(method="exact"), warm_state=state)


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
        single = toxic.flag(_clean(n_pool, 100), _clean(n_cal, 0), toxic.Flag(q=q))["flag"].mean()
        assert abs(rates[0] - single) < 4 * sd


def test_flags_follow_the_signals_and_skip_unscored_rows():
    cal = _clean(500, 1)
    scores = pd.DataFrame({"utility": [-5.0, 0.0, 0.0, np.nan], "loss": [0.0, 5.0, 0.0, 0.0]}, index=list("abcd"))
    both = toxic.flag(scores, cal, toxic.Flag(signals=("utility", "loss")))
    assert both["flag"].tolist() == [True, True, False, False]
    assert toxic.flag(scores, cal)["flag"].tolist() == [True, False, False, False]     # utility alone
    assert np.isnan(both.loc["d", "p"])
    sign = toxic.flag(scores, cal, toxic.Flag(rule="sign"))
    assert sign["flag"].tolist() == [True, False, False, False] and (sign["threshold"] == 0).all()


@pytest.mark.parametrize("bad", [dict(rule="negative"), dict(q=0.0), dict(q=1.5), dict(signals=("shift",)),
                                 dict(signals=())])
def test_flag_settings_are_checked(bad):
    with pytest.raises(ValueError):
        toxic.Flag(**bad)


def test_self_utilities_is_the_utility_against_the_sample_alone(tiny, tokenizer, processor):
    model, state, val = tiny
    from ost.method import one_step
    from ost.models.train import frozen_vision
    col = collate.Collator(tokenizer, processor)
    batches = [col([val[j]]) for j in range(len(val))]
    with frozen_vision(model):
        own = one_step.self_utilities(model, batches, collate.per_sample_loss,
                                      **{k: v for k, v in DEFAULT.kwargs(state).items() if k != "method"})
        alone = torch.stack([DEFAULT.utility(model, [b], [b], collate.per_sample_loss, warm_state=state)[0]
                             for b in batches])
    torch.testing.assert_close(own, alone, rtol=1e-4, atol=1e-12)
