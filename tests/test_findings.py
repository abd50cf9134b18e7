"""Each notebook's closing findings are read from its run's artifacts: the verdicts follow the numbers, and every
numbered notebook ends on its own findings."""
import json

import pytest

from ost.report import findings
from ost.runs import paths


@pytest.fixture
def run(tmp_path, monkeypatch):
    monkeypatch.setattr(paths, "RESULTS", tmp_path)
    (tmp_path / "r").mkdir()
    return "r"


def _write(run, name, payload):
    (paths.RESULTS / run / name).write_text(json.dumps(payload))


def test_every_numbered_notebook_ends_on_its_own_findings():
    names = sorted(p.stem for p in (paths.ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    assert sorted(findings.FINDINGS) == names
    for name in names:
        last = json.loads((paths.ROOT / "notebooks" / f"{name}.ipynb").read_text())["cells"][-1]
        assert last["cell_type"] == "code" and "".join(last["source"]).strip() == f'findings.show(run, "{name}")'


def test_claims_are_judged_by_their_interval(run, monkeypatch):
    monkeypatch.setattr(findings, "_why", lambda run, summary: [])
    claim = dict(paper_points=8.8, ci95_points=0.5, mdd_points=1.0, significant=True)
    _write(run, "summary.json", {"claims": {
        "top20_fixed_compute_vs_full": {**claim, "difference_points": -1.4, "holds": False, "resolved": True},
        "top50_vs_judge": {**claim, "difference_points": 0.3, "ci95_points": 2.0, "holds": True, "resolved": False},
        "top20_fixed_compute_vs_judge": {**claim, "difference_points": None, "holds": None, "resolved": None},
        "one_seed": {**claim, "difference_points": 2.0, "ci95_points": None, "holds": True, "resolved": None}}})
    text = findings.markdown(run, "07_analyze_results")
    assert "top20 fixed compute vs full: paper +8.8 points, here -1.4 ± 0.5: does not hold: resolved against" in text
    assert ("top50 vs judge: paper +8.8 points, here +0.3 ± 2.0: not shown here: the interval spans 0, and the "
            "paper's figure lies above it.") in text
    assert "top20 fixed compute vs judge: not measured in this run." in text
    assert "one seed: paper +8.8 points, here +2.0: the paper's sign, one seed: no interval." in text


def test_overlaps_near_chance_are_named(run):
    _write(run, "transfer.json", {"proxy_target_spearman": 0.8, "n_transfer": 10, "fraction": 0.2,
                                  "sensitivity_overlap": {"warmup_epochs=3": 0.24, "step_lr=3e-05": 0.97}})
    text = findings.markdown(run, "06_check_proxy_transfer")
    assert "Top-20 % overlap" in text and "Near chance: warmup_epochs=3." in text and "step_lr=3e-05." not in text


def test_the_flag_line_states_the_realised_rate_and_the_kind_caught_least(run):
    auroc = {"all": 0.9, "carry_dropped": 0.8, "garbled": 1.0}
    _write(run, "scoring.json", {
        "n_check": 8, "spearman_first_order_exact": 0.99, "size_spearman": {"ost-paper": 0.8, "ost": -0.7},
        "toxic_auroc": {k: auroc for k in ("ost", "ost-paper", "loss", "shift")},
        "toxic": {"q": 0.05, "n_calibration": 200, "realised_false_flag_rate": 0.033, "expected_false_flag_rate": 0.05,
                  "flagged_share": {"clean": 0.033, "duplicate": 0.0, "carry_dropped": 0.765, "garbled": 1.0},
                  "sign_flagged_share": {"clean": 0.076, "duplicate": 0.0, "carry_dropped": 0.875, "garbled": 1.0}}})
    text = findings.markdown(run, "02_score_utility")
    assert "3.3 % of the pool's clean samples flagged (expected 5.0 %); every toxic kind 76.5 % or more" in text
    assert "(`carry_dropped` least)" in text and "hardest kind is `carry_dropped` (0.800)" in text
    assert "mostly measures size" in text and "now the low-utility ones" in text
