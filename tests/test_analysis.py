import math

import numpy as np
import pandas as pd
import pytest

from ost.experiments import sft_grid
from ost.report import analysis, metrics, render


def _runs():
    rows = []
    for seed, (full, ost, judge) in enumerate([(0.60, 0.70, 0.62), (0.64, 0.71, 0.60), (0.62, 0.72, 0.64)]):
        rows.append(dict(method="full", fraction=1.0, protocol="same_epochs", seed=seed, accuracy=full,
                         n_train=100, train_seconds=10.0))
        for method, acc in (("ost", ost), ("judge", judge)):
            rows.append(dict(method=method, fraction=0.2, protocol="fixed_compute", seed=seed, accuracy=acc,
                             n_train=20, train_seconds=10.0))
    return pd.DataFrame(rows)


def test_paired_differences_are_by_seed():
    d = analysis.paired(_runs(), "full")
    ost = d[d["method"] == "ost"].sort_values("seed")["diff"].to_numpy()
    assert np.allclose(ost, [0.10, 0.07, 0.10])
    d = analysis.paired(_runs(), "judge")
    assert np.allclose(d[d["method"] == "ost"].sort_values("seed")["diff"], [0.08, 0.11, 0.08])
    assert analysis.paired(_runs(), "loss").empty                   # a reference that did not run


def test_paper_table_and_markdown():
    table = analysis.paper_table(_runs())
    row = table[table["method"] == "ost"].iloc[0]
    assert row["seeds"] == 3 and math.isclose(row["accuracy"], 0.71)
    mean, half = metrics.mean_ci([0.10, 0.07, 0.10])
    assert math.isclose(row["vs_full"], mean) and math.isclose(row["vs_full_ci95"], half)
    assert half > 0 and np.isnan(row["vs_random"])                 # random did not run
    assert math.isclose(row["vs_full_mdd"], metrics.detectable_difference([0.10, 0.07, 0.10]))
    text = render.markdown(table)
    assert "| ost | 0.2 | fixed compute | 3 | 71.0 ± " in text
    assert f"**+9.0 ± {100 * half:.1f}**" in text                    # resolved: its interval excludes zero
    judge = table[table["method"] == "judge"].iloc[0]               # 62/60/64 vs 60/64/62: not resolved
    assert not analysis.resolved(judge["vs_full"], judge["vs_full_ci95"])
    assert f"| +0.0 ± {100 * judge['vs_full_ci95']:.1f} |" in text
    assert "MDD vs full" in text and "with 3 paired seeds" in text


def test_detectable_difference_follows_the_spread_and_the_seeds():
    d = metrics.detectable_difference
    assert math.isnan(d([0.1])) and d([0.05, 0.05, 0.05]) < 1e-12
    assert math.isclose(d([0.0, 0.02, 0.04]), 2 * d([0.0, 0.01, 0.02]))   # scales with the spread
    assert d([0.0, 0.02] * 5) < d([0.0, 0.02, 0.0])                       # more seeds: smaller MDD
    # (t_.975 + t_.8) · sd / √n with n = 3: 4.303 + 1.061 = 5.364
    assert math.isclose(d([0.0, 0.01, 0.02]), 5.364 * 0.01 / math.sqrt(3), rel_tol=1e-3)


def test_toxic_auroc_per_kind():
    noise = np.array(["clean"] * 4 + ["garbled"] * 2 + ["carry_dropped"] * 2 + ["duplicate"])
    scores = np.array([1.0, 0.9, 0.8, 0.7, 0.1, 0.2, 0.95, 0.75, 5.0])
    a = metrics.toxic_auroc(scores, noise)
    assert a["garbled"] == 1.0 and math.isclose(a["carry_dropped"], 0.5) and math.isclose(a["all"], 0.75)
    assert set(a) == {"all", "garbled", "carry_dropped"}                  # duplicates are not toxic


def test_experiment_plan_and_names():
    grid = {"fixed_compute": ["ost@0.2"], "same_epochs": ["ost@0.2", "random@0.5"]}
    plan = sft_grid.plan(grid, [0, 1])
    assert plan[:4] == [("full", "same_epochs", 0), ("ost@0.2", "same_epochs", 0), ("random@0.5", "same_epochs", 0),
                        ("ost@0.2", "fixed_compute", 0)] and len(plan) == 8
    assert sft_grid.split_name("ost-cover@0.2") == ("ost-cover", 0.2)
    assert sft_grid.split_name("full") == ("full", 1.0)
    with pytest.raises(ValueError, match="protocol"):
        sft_grid.plan({"same_steps": ["ost@0.2"]}, [0])
    columns = ["ost@0.2", "ost@0.5", "oracle-clean@0.62"]
    assert sft_grid.resolve(columns, ["oracle-clean", "ost@0.5"]) == ["oracle-clean@0.62", "ost@0.5"]
    with pytest.raises(ValueError, match="'ost' names 2 columns"):
        sft_grid.resolve(columns, ["ost"])
    with pytest.raises(ValueError, match="'judge@0.2' names 0 columns"):
        sft_grid.resolve(columns, ["judge@0.2"])


def test_summary_rows_and_readme_block(tmp_path):
    import json
    runs = _runs()
    with pytest.raises(KeyError, match="judge"):
        analysis.summary_rows(runs, {"ost": 5.0})
    rows = analysis.summary_rows(runs, {"ost": 5.0, "judge": 50.0})
    assert set(rows[0]) == set(analysis.ROW_FIELDS) - {"test_loss"} and len(rows) == len(runs)
    with_loss = analysis.summary_rows(runs.assign(test_loss=0.05), {"ost": 5.0, "judge": 50.0})
    assert set(with_loss[0]) == set(analysis.ROW_FIELDS)
    assert {r["method"]: r["score_seconds"] for r in rows} == {"full": 0.0, "ost": 5.0, "judge": 50.0}
    (tmp_path / "summary.json").write_text(json.dumps({"rows": rows}))
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- table:start -->\nold\n<!-- table:end -->\nrest\n")
    render.render_readme(tmp_path / "summary.json", readme)
    text = readme.read_text()
    assert text.startswith("intro\n<!-- table:start -->\n| method") and text.endswith("<!-- table:end -->\nrest\n")
    assert "old" not in text and "| ost | 0.2 | fixed compute | 3 |" in text
    table = analysis.paper_table(runs)
    full = {"rows": rows, "claims": analysis.claims(table), "toxic_auroc": {"ost": {"all": 0.7, "garbled": 0.99}},
            "cost": {"training_cost_reduction_top50": 0.5, "judge_to_ost_total_time": 8.0,
                     "pipeline_seconds_judge50": 80.0, "pipeline_seconds_ost50": 10.0},
            "proxy_target_spearman": 0.31, "sensitivity_overlap": {"proxy=target": 0.4}}
    (tmp_path / "summary.json").write_text(json.dumps(full))
    block = render.render_readme(tmp_path / "summary.json", readme)
    assert "| top20 fixed compute vs full | +8.8 | +9.0 " in block and "**50 % less**" in block
    assert "**88 % less** time (10 s vs 80 s; paper: 17 % less)" in block
    assert "| ost | 0.70 | 0.99 |" in block and "Spearman **0.31**" in block
    assert readme.read_text().count("<!-- table:start -->") == 1 and block in readme.read_text()
    slower = {**full, "cost": {**full["cost"], "pipeline_seconds_ost50": 84.0}}
    assert "**5 % more** time (84 s vs 80 s" in render.readme_block(slower)       # a loss reads as one
    readme.write_text("no block")
    with pytest.raises(ValueError, match="block"):
        render.render_readme(tmp_path / "summary.json", readme)


def test_claims_and_cost_ratios():
    runs = _runs()
    c = analysis.claims(analysis.paper_table(runs))
    vs_full = c["top20_fixed_compute_vs_full"]
    assert math.isclose(vs_full["difference_points"], 9.0) and vs_full["holds"] and vs_full["paper_points"] == 8.8
    assert c["top50_vs_judge"]["difference_points"] is None and c["top50_vs_judge"]["holds"] is None
    half = runs.assign(method=runs["method"].replace({"ost": "judge", "judge": "ost"}))
    assert analysis.claims(analysis.paper_table(half))["top20_fixed_compute_vs_judge"]["holds"] is False
    extra = pd.DataFrame([dict(method=m, fraction=0.5, protocol="same_epochs", seed=0, accuracy=0.5, n_train=50,
                               train_seconds=4.0) for m in ("ost", "judge")])
    r = analysis.cost_ratios(pd.concat([runs, extra]), {"ost": 2.0, "judge": 46.0})
    assert math.isclose(r["training_cost_reduction_top50"], 0.6)
    assert math.isclose(r["judge_to_ost_total_time"], 50.0 / 6.0)


def test_load_runs_keeps_the_latest_settings(tmp_path):
    import json
    path = tmp_path / "runs.jsonl"
    old, new = {"target": "a"}, {"target": "b"}
    rows = [dict(subset="full", protocol="same_epochs", seed=0, accuracy=0.1, settings=old),
            dict(subset="full", protocol="same_epochs", seed=0, accuracy=0.2, settings=new),
            dict(subset="ost@0.2", protocol="same_epochs", seed=0, accuracy=0.3, settings=new)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    frame = analysis.load_runs(path)
    assert frame["accuracy"].tolist() == [0.2, 0.3]
    path.write_text("")
    with pytest.raises(ValueError, match="no runs"):
        analysis.load_runs(path)


def test_selection_seconds_charge_the_warmup_to_every_proxy_scorer():
    warmup, scoring = {"train_seconds": 100.0}, {"score_seconds": 7.0, "shift_seconds": 3.0}
    costs = {"costs": [{"name": "loss", "seconds": 2.0}, {"name": "judge", "seconds": 50.0},
                       {"name": "random", "seconds": 0.01}]}
    s = analysis.selection_seconds(warmup, scoring, costs)
    assert s["ost-topk"] == s["ost-cover"] == 107.0 and s["ost"] == 110.0 and s["loss"] == 102.0
    assert s["judge"] == 50.0 and "ifd" not in s and "deita" not in s
    assert s["random"] == s["full"] == s["oracle-clean"] == s["clean-random"] == 0.0
