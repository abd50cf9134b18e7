import math

import pytest
from conftest import saved_tiny

from ost.experiments import regime
from ost.models import base, train


def test_evaluating_mid_run_leaves_the_trajectory_alone(tmp_path, records, tokenizer, processor):
    """The curve's point at the last epoch is what the same run, never evaluated on the way, scores: greedy
    evaluation between epochs (the tower running on images while SFT feeds it cached features) changes nothing."""
    folder, dd = saved_tiny(tmp_path, tokenizer, processor, pool=records[:24], test=records[24:40])
    row = regime.curve_run(dd["pool"], dd["test"], subset="full", lr=1e-2, seed=3, target=folder, epochs=3,
                           eval_at=[1, 3], batch_size=8)
    assert [p["epoch"] for p in row["points"]] == [1, 3] and row["steps"] == 9
    model, tok, proc = base.load_model(folder, progress=False)
    train.sft(model, tok, proc, dd["pool"], epochs=3, lr=1e-2, batch_size=8, seed=3, progress=False)
    plain = train.evaluate(model, tok, proc, dd["test"])
    assert row["points"][-1]["accuracy"] == plain["accuracy"]
    assert row["points"][-1]["test_loss"] == pytest.approx(plain["loss"], rel=1e-6)
    assert "forward" not in vars(model.model.visual)


def _row(subset, lr, seed, accuracy):
    return {"subset": subset, "lr": lr, "seed": seed,
            "points": [{"epoch": 4, "accuracy": accuracy, "test_loss": 1 - accuracy}]}


def test_summary_pairs_the_noise_gap_by_seed():
    rows = [_row("full", 1e-3, s, a) for s, a in enumerate([0.60, 0.62, 0.64])] + \
           [_row("clean", 1e-3, s, a) for s, a in enumerate([0.70, 0.80, 0.66])]
    (row,) = regime.summarize(rows)
    assert row["gap_per_seed"] == pytest.approx([0.10, 0.18, 0.02]) and row["gap_min"] == pytest.approx(0.02)
    assert row["full_mean"] == pytest.approx(0.62) and row["full_spread"] == pytest.approx(0.04)
    assert row["full_ci95"] == pytest.approx(4.303 * 0.02 / math.sqrt(3), rel=1e-3)   # Student t, 2 df
    assert row["full_test_loss"] == pytest.approx(0.38)



def test_markdown_has_a_row_per_lr_and_epoch():
    rows = [_row("full", 1e-3, s, 0.6) for s in range(3)] + [_row("clean", 1e-3, s, 0.7) for s in range(3)]
    report = {"settings": {"seeds": [0, 1, 2], "n_pool": 10, "n_test": 5, "batch_size": 2, "epochs": 4},
              "wall_seconds": 60, "rows": rows, "summary": regime.summarize(rows)}
    text = regime.markdown(report)
    assert "| 0.001 | 4 | 60.0 ± 0.0 | 0.0 | 70.0 | +10.0 | 0.4000 |" in text
