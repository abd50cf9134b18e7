"""The width benchmark measures what it names (a training pass, and the default step by the path it says), and
docs/widths.md is its committed JSON rendered."""
import json
import sys

from ost.runs import paths

sys.path.insert(0, str(paths.ROOT / "benchmarks"))
import bench_widths  # noqa: E402


def test_each_mode_reports_its_seconds_memory_and_path():
    width = (32, 1, 2)
    for mode in bench_widths.MODES:
        got = bench_widths._measure(mode, width, samples=4, batch=2)
        assert got["path"] == mode and got["seconds"] > 0 and got["trainable"] > 0
        assert got["resident_mib"] > 0 and got["pass_mib"] >= 0


def test_the_docs_table_is_the_committed_measurement():
    result = json.loads((paths.ROOT / "results/bench/widths.json").read_text())
    assert len(result["rows"]) >= 4 and len(result["batches"]) == 2
    assert (paths.ROOT / "docs/widths.md").read_text() == bench_widths.render(result)
