"""The toxic-flag table in docs/toxic.md and its summary in README.md are what `benchmarks/check_toxic.py
--render` writes from the committed results/bench/toxic_flags.json: neither can drift from the measurement."""
import json
import shutil
import sys
from pathlib import Path

from ost.report.render import fill_block
from ost.runs import paths

sys.path.insert(0, str(paths.ROOT / "benchmarks"))
import check_toxic  # noqa: E402

RESULT = paths.ROOT / "results" / "bench" / "toxic_flags.json"


def test_docs_and_readme_hold_the_committed_measurement(tmp_path):
    result = json.loads(RESULT.read_text())
    for name in ("docs/toxic.md", "README.md"):
        shutil.copy(paths.ROOT / name, tmp_path / Path(name).name)
    check_toxic.render(result, tmp_path / "toxic.md")
    fill_block(tmp_path / "README.md", check_toxic.summary(result), "<!-- toxic:start -->", "<!-- toxic:end -->")
    assert (tmp_path / "toxic.md").read_text() == (paths.ROOT / "docs" / "toxic.md").read_text()
    assert (tmp_path / "README.md").read_text() == (paths.ROOT / "README.md").read_text()


def test_the_summary_names_the_kind_flagged_least_and_the_lowest_auroc():
    row = {"sign": 0.0, "utility": 0.0, "loss": 0.0}
    result = {"q": 0.05, "sets": {"s": {"kinds": {
        "clean": {**row, "utility+loss": 0.04},
        "a": {**row, "utility+loss": 0.9, "auroc_utility+loss": 0.91, "auroc_loss": 0.95},
        "b": {**row, "utility+loss": 0.7, "auroc_utility+loss": 0.99, "auroc_loss": 0.5}}}}}
    line = check_toxic.summary(result).splitlines()[-1]
    assert line == ("- s: 4.0% of clean samples flagged; every kind 70.0% or more (b least); AUROC 0.910 or more "
                    "(a; the loss filter there: 0.950)")
