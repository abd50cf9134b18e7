import hashlib

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from ost.data import schema
from ost.method import score
from ost.method.step import Step
from ost.models import presets

SGD = Step(optimizer="sgd", normalize=False, unit_val=False)     # an untrained model has no warm-up state to continue


@pytest.fixture(scope="module")
def setup(records, tokenizer, processor):
    pool = schema.to_dataset(records[:10])
    val = schema.to_dataset(records[10:13])
    return presets.build(TINY, tokenizer, seed=0), tokenizer, processor, pool, val


def _md5(path):
    return hashlib.md5(path.read_bytes()).hexdigest()


def test_every_id_scored_once_and_resume_gives_the_same_file(tmp_path, setup):
    model, tok, proc, pool, val = setup
    out = tmp_path / "scores.parquet"
    frame = score.score_pool(model, tok, proc, pool, val, out, part_size=4, batch_size=3, step=SGD, progress=False)
    assert frame["id"].tolist() == pool["id"] and set(frame["status"]) == {"ok"}
    assert list(frame.columns) == list(score.COLUMNS)
    first = _md5(out)
    parts = sorted((tmp_path / "scores.parquet.parts").glob("part-*.parquet"))
    assert len(parts) == 3
    parts[1].unlink()                                            # as if killed before part 1 finished
    (parts[1].parent / (parts[1].name + ".tmp999")).write_bytes(b"half a file")
    again = score.score_pool(model, tok, proc, pool, val, out, part_size=4, batch_size=3, step=SGD, progress=False)
    assert _md5(out) == first
    pd.testing.assert_frame_equal(frame, again)


def test_other_settings_refuse_old_parts(tmp_path, setup):
    model, tok, proc, pool, val = setup
    out = tmp_path / "scores.parquet"
    score.score_pool(model, tok, proc, pool, val, out, part_size=5, step=SGD, progress=False)
    with pytest.raises(ValueError, match="other settings"):
        score.score_pool(model, tok, proc, pool, val, out, part_size=5, step=SGD.with_(lr=1e-2), progress=False)


def test_nonfinite_is_a_status_not_a_drop(tmp_path, setup):
    model, tok, proc, pool, val = setup
    """A NaN weight makes every loss NaN: each sample is still there, marked (isolating one bad
    sample among good ones: test_bad_inputs.py)."""
    import copy

    import torch
    poisoned = copy.deepcopy(model)
    with torch.no_grad():
        poisoned.lm_head.weight[0, 0] = float("nan")
    frame = score.score_pool(poisoned, tok, proc, pool, val, tmp_path / "s.parquet", part_size=5, step=SGD,
                             progress=False)
    assert frame["id"].tolist() == pool["id"] and set(frame["status"]) == {"nonfinite"}


def test_two_processes_give_the_same_file_as_one(tmp_path, setup):
    """torchrun with 2 CPU processes (gloo) scores disjoint parts; the merged file equals one process's."""
    import os
    import subprocess
    import sys
    model, tok, proc, pool, val = setup
    folder = presets.save(tmp_path / "model", model, tok, proc)
    dd = schema.datasets.DatasetDict({"pool": pool, "validation": val, "test": val})
    dd.save_to_disk(str(tmp_path / "pool"))
    args = ["--model", str(folder), "--pool", str(tmp_path / "pool"), "--part-size", "3", "--batch-size", "2",
            "--optimizer", "sgd"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    one = tmp_path / "one.parquet"          # one process, on one thread as each torchrun rank
    subprocess.run([sys.executable, "-m", "ost.method.score", *args, "--out", str(one)], env=env, capture_output=True,
                   text=True, timeout=240, check=True)
    two = tmp_path / "two.parquet"
    run = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                          "--standalone", "-m", "ost.method.score", *args, "--out", str(two)],
                         env=env, capture_output=True, text=True, timeout=240)
    assert run.returncode == 0, run.stderr[-2000:]
    assert _md5(one) == _md5(two)
    assert sorted(p.name for p in (tmp_path / "two.parquet.parts").glob("part-*.parquet")) == \
        [f"part-{k:05d}.parquet" for k in range(4)]


def test_cli_continues_the_warmup_adam_state_from_disk(tmp_path, setup, records):
    """The warmup's own next Adam step, read from a torch.save'd state: same scores as in-process."""
    import torch

    from ost.models import train
    _, tok, proc, pool, val = setup
    model = presets.build(TINY, tok, seed=0)
    log = train.sft(model, tok, proc, schema.to_dataset(records[20:36]), epochs=1, batch_size=8, lr=1e-3,
                    progress=False)
    torch.save(log["adam_state"], tmp_path / "adam_state.pt")
    folder = presets.save(tmp_path / "model", model, tok, proc)
    schema.datasets.DatasetDict({"pool": pool, "validation": val, "test": val}).save_to_disk(str(tmp_path / "pool"))
    score.main(["--model", str(folder), "--pool", str(tmp_path / "pool"), "--out", str(tmp_path / "cli.parquet"),
                "--adam-state", str(tmp_path / "adam_state.pt"), "--part-size", "4"])
    here = score.score_pool(model, tok, proc, pool, val, tmp_path / "here.parquet", warm_state=log["adam_state"],
                            part_size=4, progress=False)
    cli = pd.read_parquet(tmp_path / "cli.parquet")
    assert set(cli["status"]) == {"ok"}
    pd.testing.assert_series_equal(cli["utility"], here["utility"], rtol=1e-5)
    fresh = score.score_pool(model, tok, proc, pool, val, tmp_path / "fresh.parquet", step=Step(continue_warmup=False),
                             part_size=4, progress=False)
    assert not fresh["utility"].equals(here["utility"])
    assert score.device_for("auto") == (torch.device("cuda", 0) if torch.cuda.is_available() else torch.device("cpu"))
    half = tmp_path / "bf16.parquet"        # the GPU setting, run on the CPU: the same ranking, coarser values
    score.main(["--model", str(folder), "--pool", str(tmp_path / "pool"), "--out", str(half), "--adam-state",
                str(tmp_path / "adam_state.pt"), "--part-size", "4", "--device", "cpu", "--dtype", "bfloat16"])
    half = pd.read_parquet(half)
    assert set(half["status"]) == {"ok"} and not half["utility"].equals(cli["utility"])
    assert half["utility"].corr(cli["utility"], method="spearman") > 0.9


def test_parts_of_another_model_are_never_reused(tmp_path, setup):
    import copy

    import torch
    model, tok, proc, pool, val = setup
    out = tmp_path / "s.parquet"
    first = score.score_pool(model, tok, proc, pool, val, out, part_size=5, step=SGD, progress=False)
    other = copy.deepcopy(model)
    with torch.no_grad():
        other.lm_head.weight.mul_(1.5)
    with pytest.raises(ValueError, match="inputs"):
        score.score_pool(other, tok, proc, pool, val, out, part_size=5, step=SGD, progress=False)
    again = score.score_pool(other, tok, proc, pool, val, out, part_size=5, step=SGD, progress=False, overwrite=True)
    assert not np.allclose(again["utility"], first["utility"])
    assert again["utility"].tolist() == score.score_pool(other, tok, proc, pool, val, tmp_path / "t.parquet",
                                                         part_size=5, step=SGD, progress=False)["utility"].tolist()


def test_a_validation_set_overlapping_the_pool_is_refused(tmp_path, setup, records):
    model, tok, proc, pool, val = setup
    renamed = schema.to_dataset([{**records[3], "id": "val-copy"}] + records[10:12])    # same content, new id
    with pytest.raises(ValueError, match="overlaps the pool in 1 sample"):
        score.score_pool(model, tok, proc, pool, renamed, tmp_path / "s.parquet", step=SGD, progress=False)
    with pytest.raises(ValueError, match="overlaps"):
        score.score_pool(model, tok, proc, pool, pool.select([0]), tmp_path / "s.parquet", step=SGD, progress=False)
    assert schema.overlap(pool, val) == []
