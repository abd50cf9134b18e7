"""SFT runs over subsets: resumable, in plan order, and the same whether run serially or in workers."""
import json

import datasets
import pandas as pd
import pytest
import torch

from ost import data, experiment, models
from conftest import TINY


@pytest.fixture(scope="module")
def setup(tmp_path_factory, records, tokenizer, processor):
    root = tmp_path_factory.mktemp("exp")
    folder = models.save(root / "target", models.build(TINY, tokenizer, seed=0), tokenizer, processor)
    dd = datasets.DatasetDict({"pool": data.to_dataset(records[:32]), "test": data.to_dataset(records[32:44])})
    dd.save_to_disk(root / "pool")
    dd = datasets.load_from_disk(root / "pool")
    ids = dd["pool"]["id"]
    member = pd.DataFrame({"a@0.5": [i % 2 == 0 for i in range(len(ids))]}, index=pd.Index(ids, name="id"))
    return root, str(folder), dd, member


def _strip(rows):
    return [{k: v for k, v in r.items() if k != "train_seconds"} for r in rows]


def test_workers_give_the_serial_rows_and_resume(setup):
    root, target, dd, member = setup
    kw = dict(target=target, protocols=["same_epochs", "fixed_compute"], seeds=[0, 1], epochs=2.0, lr=1e-2,
              batch_size=8, progress=False)
    torch.set_num_threads(1)          # workers run one thread each; match it so floats agree exactly
    serial = experiment.train_subsets(dd, member, root / "serial.jsonl", workers=1, **kw)
    parallel = experiment.train_subsets(dd, member, root / "parallel.jsonl", workers=2, **kw)
    planned = experiment.plan(member, kw["protocols"], kw["seeds"])
    assert [(r["subset"], r["protocol"], r["seed"]) for r in parallel] == planned     # plan order
    assert _strip(parallel) == _strip(serial)
    assert {r["steps"] for r in parallel if r["protocol"] == "fixed_compute"} == {8}  # Full: 4 steps × 2 epochs
    assert len((root / "parallel.jsonl").read_text().splitlines()) == len(planned)
    again = experiment.train_subsets(dd, member, root / "parallel.jsonl", workers=2, **kw)   # all done: no rerun
    assert again == parallel
    assert len((root / "parallel.jsonl").read_text().splitlines()) == len(planned)
