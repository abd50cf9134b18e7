"""Notebook 06's settings: each scored on one thread, the same numbers in worker processes as in-process."""
import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from conftest import saved_tiny

from ost.experiments import transfer
from ost.method.step import Step
from ost.runs.settings import Warmup


@pytest.fixture(scope="module")
def setup(tmp_path_factory, records, tokenizer, processor):
    return saved_tiny(tmp_path_factory.mktemp("transfer"), tokenizer, processor, pool=records[:24],
                      validation=records[24:32])


def test_settings_give_the_same_utilities_in_workers(setup):
    folder, dd = setup
    ids = dd["pool"]["id"]
    warm_up = Warmup(proxy=str(folder), warmup_epochs=1.0, warmup_lr=1e-2, warmup_batch_size=4)
    step = Step(lr=1e-3, normalize=False, unit_val=False)       # continues each warm-up's Adam state
    saved = Path(folder).parent / "warmed"           # a warm-up artifact (ost.method.warmup.save's layout)
    shutil.copytree(folder, saved / "proxy", dirs_exist_ok=True)
    torch.save({"state": {}, "param_groups": []}, saved / "adam_state.pt")   # unread: the step below is fresh
    settings = {"saved, exact": dict(saved=saved, rows=[1, 5, 9, 13],
                                     step=step.with_(method="exact", continue_warmup=False)),
                "warmed, first order": dict(warm_up=warm_up, warm_ids=ids[:8], rows=list(range(8, 24)), step=step),
                "warmed longer": dict(warm_up=replace(warm_up, warmup_epochs=2.0), warm_ids=ids[:8],
                                      rows=list(range(8, 24)), step=step)}
    serial = transfer.score_settings(dd, settings, workers=1, progress=False)
    assert torch.get_num_threads() == 2                         # one thread while scoring, then given back
    parallel = transfer.score_settings(dd, settings, workers=2, progress=False)
    assert list(parallel) == list(settings)
    for name, u in serial.items():
        assert u.index.tolist() == [ids[i] for i in settings[name]["rows"]] and u.notna().all()
        assert u.equals(parallel[name])
    assert not serial["warmed, first order"].equals(serial["warmed longer"])   # the warm-up length matters


def test_settings_grid_changes_one_thing_at_a_time():
    warm = Warmup(warmup_epochs=3.0)
    step = Step(lr=1e-4, normalize=False, unit_val=False)
    grid = transfer.settings_grid(warm, ["a", "b"], step, saved="w", target="target",
                                  transfer_rows=[0, 1], sensitivity_rows=[2, 3, 4], proxy_sizes=["proxy", "big"],
                                  warmup_epochs_grid=[3.0, 6.0], step_lrs=[1e-4, 3e-4])
    assert list(grid) == ["transfer: target, exact", "transfer: proxy, exact", "proxy=big", "warmup_epochs=6",
                          "step_lr=0.0003"]                    # values equal to the default are not rescored
    assert grid["transfer: target, exact"]["warm_up"] == Warmup(proxy="target", warmup_epochs=3.0)
    assert grid["transfer: proxy, exact"]["saved"] == "w" and grid["transfer: proxy, exact"]["step"].method == "exact"
    assert grid["proxy=big"]["warm_up"].proxy == "big" and grid["proxy=big"]["step"] == step
    assert grid["warmup_epochs=6"]["warm_up"] == Warmup(warmup_epochs=6.0)
    assert grid["step_lr=0.0003"]["step"] == step.with_(method="exact", lr=3e-4)
    assert transfer.describe(grid).loc["proxy=big", "model"] == "big"
