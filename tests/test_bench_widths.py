"""The width benchmark measures what it names: a training pass, and the default step by the path it says."""
import sys

from ost.runs import paths

sys.path.insert(0, str(paths.ROOT / "benchmarks"))
import bench_widths  # noqa: E402


def test_each_mode_reports_its_seconds_memory_and_path():
    width = (32, 1, 2)
    for mode, path in (("train", "train"), ("ghost", "ghost"), ("per_sample", "per_sample")):
        got = bench_widths._measure(mode, width, samples=4, batch=2)
        assert got["path"] == path and got["seconds"] > 0 and got["peak_mib"] > 0 and got["trainable"] > 0
