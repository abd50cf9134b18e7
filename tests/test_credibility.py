"""The regime checks: read from a run table, never typed; a rebuilt base never replaces the one in use."""
import pandas as pd

from ost.experiments import credibility
from ost.models import base


def _runs(full, clean):
    rows = [dict(method="full", fraction=1.0, protocol="same_epochs", seed=s, accuracy=a) for s, a in enumerate(full)]
    rows += [dict(method="oracle-clean", fraction=0.62, protocol="same_epochs", seed=s, accuracy=a)
             for s, a in enumerate(clean)]
    rows.append(dict(method="oracle-clean", fraction=0.62, protocol="fixed_compute", seed=0, accuracy=0.0))
    return pd.DataFrame(rows)


def test_checks_a_and_b_come_from_the_runs():
    steady = credibility.from_runs(_runs([0.66, 0.67, 0.665], [0.80, 0.78, 0.79]))
    assert steady["a_full_ci95"] and steady["b_noise_gap"] and steady["full_ci95"] < 0.03
    assert [round(g, 3) for g in steady["gap_per_seed"]] == [0.14, 0.11, 0.125]   # same epochs only
    chaotic = credibility.from_runs(_runs([0.54, 0.42, 0.22], [0.64, 0.52, 0.40]))
    assert not chaotic["a_full_ci95"] and chaotic["b_noise_gap"]
    one_short = credibility.from_runs(_runs([0.66, 0.67, 0.665], [0.80, 0.72, 0.79]))
    assert one_short["a_full_ci95"] and not one_short["b_noise_gap"]                # one seed's gap is 5
    missing = credibility.from_runs(_runs([0.66, 0.67, 0.665], [0.80, 0.78]))
    assert not missing["b_noise_gap"]                                                # a seed without a clean run
    text = credibility.markdown({**steady, "reproduce_seconds": 3900.0, "d_reproduce_seconds": False})
    assert "| (a) Full-SFT 95 % CI half-width | ≤ 3 points | 66.5 ± " in text and "+14.0 / +11.0 / +12.5" in text
    assert "| 65 min | **no** |" in text and "(c)" not in text
    reused = credibility.markdown({**steady, "reproduce_seconds": 1900.0, "reproduce_reused_sft_runs": 48,
                                   "d_reproduce_seconds": None})
    assert "| 32 min, not a clean clone's: 48 SFT runs came from the run's log | – |" in reused


def test_a_reproduce_that_reused_logged_runs_does_not_count_for_d(tmp_path, monkeypatch):
    import json

    from ost.runs import paths
    monkeypatch.setattr(paths, "RESULTS", tmp_path)
    monkeypatch.setattr(credibility.analysis, "load_runs", lambda path: _runs([0.66, 0.67, 0.665], [0.80, 0.78, 0.79]))
    (tmp_path / "r").mkdir()
    (tmp_path / "r" / "sft_runs.jsonl").write_text("")
    for logged, holds in ((0, True), (12, None)):
        (tmp_path / "r" / "reproduce.json").write_text(json.dumps({"wall_seconds": 1800, "sft_runs_logged_before":
                                                                   logged}))
        assert credibility.report("r", {}, rebuild=False, progress=False)["d_reproduce_seconds"] is holds


def test_a_base_built_with_other_threads_gets_its_own_folder():
    default = base.base_dir("target")
    assert base.base_dir("target", base.BUILD_THREADS["target"]) == default
    other = base.base_dir("target", 2)
    assert other != default and other.name == default.name + "-2threads"
