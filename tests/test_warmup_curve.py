"""The warm-up curve: notebook 01's slices, one honest point per length, a report that renders."""
import numpy as np
from conftest import saved_tiny

from ost.data import pool
from ost.experiments import warmup_curve
from ost.method import warmup


def test_warm_rows_are_notebook_01s_slice_and_grow_with_the_share():
    small, large = warmup.warm_rows(100, 0.2, 0), warmup.warm_rows(100, 0.5, 0)
    assert small == sorted(np.random.default_rng(0).permutation(100)[:20].tolist())
    assert len(large) == 50 and set(small) <= set(large)          # a longer slice extends the shorter one


def test_a_point_scores_every_sample_and_counts_the_warmed_ones(tmp_path, records, tokenizer, processor):
    folder, dd = saved_tiny(tmp_path, tokenizer, processor, pool=records[:40], validation=records[40:52])
    score_rows = list(range(0, 40, 2))
    p = warmup_curve.point(dd, score_rows, proxy=folder, fraction=0.5, epochs=1.0, lr=1e-2, step_lr=1e-3, seed=0)
    assert p["n_warm"] == 20 and p["steps"] == 1 and 0 <= p["val_accuracy"] <= 1
    warmed = set(warmup.warm_rows(40, 0.5, 0))
    assert p["scored_in_warmup"] == sum(r in warmed for r in score_rows)
    kinds = {k for k in dd["pool"].select(score_rows)["noise"] if k in pool.TOXIC}
    if kinds:
        assert set(p["auroc_ost"]) == {"all", *kinds} and set(p["auroc_loss"]) == set(p["auroc_ost"])
    report = {"settings": {"fractions": [0.5]}, "points": [p]}
    assert warmup_curve.markdown(report).count("\n") == 2 and "| 0.5 × 1 | 1 |" in warmup_curve.markdown(report)
