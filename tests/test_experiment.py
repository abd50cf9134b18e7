"""SFT runs over subsets: resumable, in plan order, and the same whether run serially or in workers."""
import pandas as pd
import pytest
import torch
from conftest import saved_tiny

from ost.experiments import sft_grid
from ost.report import analysis
from ost.runs.settings import SFT


@pytest.fixture(scope="module")
def setup(tmp_path_factory, records, tokenizer, processor):
    root = tmp_path_factory.mktemp("exp")
    folder, dd = saved_tiny(root, tokenizer, processor, pool=records[:32], test=records[32:44])
    ids = dd["pool"]["id"]
    member = pd.DataFrame({"a@0.5": [i % 2 == 0 for i in range(len(ids))]}, index=pd.Index(ids, name="id"))
    return root, folder, dd, member


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def test_workers_give_the_serial_rows_and_resume(setup):
    root, target, dd, member = setup
    kw = dict(sft=SFT(target=str(target), sft_seeds=(0, 1), sft_epochs=2.0, sft_lr=1e-2, sft_batch_size=8),
              grid={"same_epochs": ["a@0.5"], "fixed_compute": ["a@0.5"]}, progress=False)
    torch.set_num_threads(1)          # workers run one thread each; match it so floats agree exactly
    serial = sft_grid.train_subsets(dd, member, root / "serial.jsonl", workers=1, **kw)
    parallel = sft_grid.train_subsets(dd, member, root / "parallel.jsonl", workers=2, **kw)
    planned = sft_grid.plan(kw["grid"], kw["sft"].sft_seeds)
    assert [(r["subset"], r["protocol"], r["seed"]) for r in parallel] == planned     # plan order
    assert _strip(parallel) == _strip(serial)
    assert {r["steps"] for r in parallel if r["protocol"] == "fixed_compute"} == {8}  # Full: 4 steps × 2 epochs
    assert len((root / "parallel.jsonl").read_text().splitlines()) == len(planned)
    again = sft_grid.train_subsets(dd, member, root / "parallel.jsonl", workers=2, **kw)   # all done: no rerun
    assert again == parallel
    assert len((root / "parallel.jsonl").read_text().splitlines()) == len(planned)
    sft_grid.write_runs(again, root / "table.jsonl")
    assert analysis.load_runs(root / "table.jsonl").to_dict("records") == again


def test_a_logged_run_is_reused_only_for_the_same_ids(setup):
    """Same subset name, other members (notebook 03 rerun with other scores): retrained, not reused."""
    root, target, dd, member = setup
    kw = dict(sft=SFT(target=str(target), sft_seeds=(0,), sft_epochs=1.0, sft_lr=1e-2, sft_batch_size=8),
              grid={"same_epochs": ["a@0.5"]}, progress=False, workers=1)
    log = root / "changed.jsonl"
    first = sft_grid.train_subsets(dd, member, log, **kw)
    flipped = ~member
    second = sft_grid.train_subsets(dd, flipped, log, **kw)
    lines = log.read_text().splitlines()
    assert len(lines) == 3                                  # full reused; a@0.5 trained twice
    a_first, a_second = first[1], second[1]
    assert a_first["subset"] == a_second["subset"] == "a@0.5"
    assert a_first["subset_sha"] != a_second["subset_sha"] and second[0] == first[0]
    ids = dd["pool"]["id"]
    assert a_second["subset_sha"] == sft_grid.subset_sha([i for i, m in zip(ids, flipped["a@0.5"]) if m])
