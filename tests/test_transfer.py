"""Notebook 06's settings: each scored on one thread, the same numbers in worker processes as in-process."""
import pytest
import torch
from conftest import saved_tiny

from ost.experiments import transfer
from ost.method.step import Step


@pytest.fixture(scope="module")
def setup(tmp_path_factory, records, tokenizer, processor):
    return saved_tiny(tmp_path_factory.mktemp("transfer"), tokenizer, processor, pool=records[:24],
                      validation=records[24:32])


def test_settings_give_the_same_utilities_in_workers(setup):
    folder, dd = setup
    ids = dd["pool"]["id"]
    warm_up = dict(warm_ids=ids[:8], epochs=1.0, lr=1e-2, batch_size=4, seed=0)
    step = Step(lr=1e-3)       # continues each warm-up's Adam state
    settings = {"saved, exact": dict(model=folder, rows=[1, 5, 9, 13],
                                     step=step.with_(method="exact", continue_warmup=False)),
                "warmed, first order": dict(model=folder, warm_up=warm_up, rows=list(range(8, 24)), step=step),
                "warmed longer": dict(model=folder, warm_up={**warm_up, "epochs": 2.0}, rows=list(range(8, 24)),
                                      step=step)}
    serial = transfer.score_settings(dd, settings, workers=1, progress=False)
    assert torch.get_num_threads() == 2                         # one thread while scoring, then given back
    parallel = transfer.score_settings(dd, settings, workers=2, progress=False)
    assert list(parallel) == list(settings)
    for name, u in serial.items():
        assert u.index.tolist() == [ids[i] for i in settings[name]["rows"]] and u.notna().all()
        assert u.equals(parallel[name])
    assert not serial["warmed, first order"].equals(serial["warmed longer"])   # the warm-up length matters
