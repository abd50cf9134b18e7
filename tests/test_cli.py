"""`python -m ost`: one command from a LLaVA-style JSON file to the subset, the toxic list and the scores."""
import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from conftest import TINY

from ost import cli
from ost.data import loaders
from ost.method import coverage, prepare, score, shift, subset
from ost.method import toxic as tox
from ost.method.prepare import Prepare
from ost.models import presets
from ost.runs import paths, read_meta
from ost.runs.settings import Selection

MINE = paths.FIXTURES / "llava_mine"       # 48 records ("The answer is 7.", choice letters) + 40 clean ones


@pytest.fixture(scope="module")
def mine(tmp_path_factory, tokenizer, processor):
    root = tmp_path_factory.mktemp("cli")
    proxy = presets.save(root / "proxy", presets.build(TINY, tokenizer, seed=0), tokenizer, processor)
    return MINE / "mine.json", str(proxy), root


def test_one_command_writes_every_output(mine, capsys):
    path, proxy, root = mine
    out = root / "out"
    args = ["run", str(path), "--val", str(MINE / "mine_val.json"), "--fraction", "0.25", "--out", str(out),
            "--proxy", proxy, "--warmup-epochs", "1", "--toxic-q", "0.3"]     # 20 calibration records
    cli.main(args)
    printed = capsys.readouterr().out
    assert "48 records: 48 ok" in printed and "kept 12" in printed
    assert "validation: 20 records (VAL), and 20 more" in printed
    assert "do not trust this ranking yet" in printed           # an untrained tiny proxy: 0 % exact match
    frame = score.read_scores(out / "scores.parquet")
    report = json.loads((out / "report.json").read_text())
    assert len(frame) == report["rows"] == 48 and frame["id"].tolist() == loaders.load_llava_json(path)["id"]
    assert report["prepare"]["no_final"] == 0                    # "The answer is 12." and "A" both found
    kept = loaders.load_llava_json(out / "selected.json")        # loads back, image paths valid from DIR
    assert len(kept) == 12 and set(kept["id"]) <= set(frame["id"])
    toxic = pd.read_csv(out / "toxic.csv")
    assert list(toxic.columns) == ["id", "utility", "loss", "shift", "p", "rank", "signal", "reason"]
    ref = tox.read_reference(out / "calibration.parquet")
    assert len(ref) == 20 and not set(ref.index) & set(frame["id"])
    flags = tox.flag(frame.set_index("id")[["utility", "loss"]], ref, tox.Flag(q=0.3))
    assert sorted(toxic["id"]) == sorted(flags.index[flags["flag"]]) and len(toxic)    # exactly the flagged ids
    assert toxic["rank"].is_monotonic_increasing and (toxic["p"] <= report["toxic"]["threshold_p"]).all()
    shifts = shift.read(out / "shift.parquet")["shift"]
    assert shifts.notna().all() and np.allclose(toxic["shift"], shifts.loc[toxic["id"]], rtol=1e-12, atol=0)
    harm = frame.join(shifts, on="id").assign(harm=lambda f: coverage.harm_rank(f)).sort_values(["harm", "id"])
    worst = set(harm["id"][:round(0.4 * 48)])
    assert not worst & set(kept["id"])                          # the default never keeps the 40 % ranked worst
    assert report["selector"] == {"name": "filter-random", "seed": 0, "signals": ["utility", "shift"]}
    assert report["toxic"] | {"threshold_p": 0, "utility_below": 0, "loss_above": 0} == dict(
        rule="calibrated", q=0.3, signals=["utility", "loss"], calibration=20, flagged=len(toxic), threshold_p=0,
        expected_false_flag_rate=0.3, can_flag=True, utility_below=0, loss_above=0)
    assert report["toxic"]["utility_below"] == pytest.approx(np.quantile(ref["utility"], 0.3))
    assert set(report["seconds"]) == {"prepare", "warmup", "score", "shift"}
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    cli.main(args)                                               # a rerun redoes nothing and writes the same
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before
    top = cli.select_stage(out, fraction=0.25, selection=Selection(selector="topk"))  # the paper's rule, by name
    assert top["selector"]["name"] == "topk"
    best = frame.query("status == 'ok'").sort_values(["utility", "id"], ascending=[False, True])["id"][:12]
    assert set(loaders.load_llava_json(out / "selected.json")["id"]) == set(best)
    member = subset.read(out / "subsets.parquet", frame["id"])      # the same subset, as notebook 03 keeps them
    assert set(member.index[member["ost@0.25"]]) == set(best)
    assert read_meta(out / "subsets.parquet")["selector"] == "topk"


def test_records_kept_without_their_outputs_run_again(mine, tmp_path):
    """A folder committed without what git ignores (the prepared data, the proxy's weights) still runs: the
    stages whose outputs are missing run again instead of being taken as done."""
    import shutil
    path, proxy, _ = mine
    out = tmp_path / "out"
    args = ["run", str(path), "--val", str(MINE / "mine_val.json"), "--fraction", "0.25", "--out", str(out),
            "--proxy", proxy, "--warmup-epochs", "1", "--toxic-q", "0.3"]
    cli.main(args)
    first = (out / "toxic.csv").read_bytes()
    for name in ("prepared", "proxy", "shift.parquet"):
        shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
    cli.main(args)
    assert (out / "prepared").exists() and (out / "proxy").exists() and (out / "shift.parquet").exists()
    assert (out / "toxic.csv").read_bytes() == first             # the same outputs again


def test_a_validation_slice_carved_from_data(mine, tmp_path):
    path, _, _ = mine
    report = prepare.prepare(Prepare(data=str(path), val_fraction=0.25, split_seed=3), tmp_path)["report"]
    assert report["pool"] == 36 and report["validation"] == report["calibration"] == 6
    assert "should be clean" in report["validation_source"]


def test_mistakes_are_named(mine, tmp_path):
    path, proxy, root = mine
    with pytest.raises(ValueError, match="--val VAL"):
        Prepare(data=str(path))
    with pytest.raises(ValueError, match=r"shares \d+ record"):
        prepare.prepare(Prepare(data=str(path), val=str(path)), tmp_path / "b")
    with pytest.raises(FileNotFoundError, match="python -m ost prepare"):
        cli.warmup(tmp_path / "c")
    from ost.data import schema
    with pytest.raises(ValueError, match="is a file.*python -m ost run"):     # a JSON file where a folder goes
        schema.load_pool(path)


def test_help_lists_the_stages():
    run = subprocess.run([sys.executable, "-m", "ost", "--help"], capture_output=True, text=True, cwd=paths.ROOT)
    assert run.returncode == 0
    for stage in ("run", "prepare", "warmup", "score", "select"):
        assert stage in run.stdout


def test_a_geometry3k_style_parquet_end_to_end(mine, tmp_path, capsys):
    import datasets
    from PIL import Image
    _, proxy, _ = mine
    features = datasets.Features({"problem": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "choices": datasets.Sequence(datasets.Value("string")),
                                  "images": datasets.Sequence(datasets.Image())})
    n = 20
    datasets.Dataset.from_dict({
        "problem": [f"<image>Find x in figure {k}." for k in range(n)], "answer": ["ABCD"[k % 4] for k in range(n)],
        "choices": [[str(k), str(k + 1), str(k + 2), str(k + 3)] for k in range(n)],
        "images": [[Image.new("RGB", (56, 56), (10 * k, 0, 0))] for k in range(n)]},
        features=features).to_parquet(tmp_path / "geo.parquet")
    out = tmp_path / "out"
    cli.main(["run", str(tmp_path / "geo.parquet"), "--columns", "question=problem", "--val-fraction", "0.2",
              "--fraction", "0.25", "--out", str(out), "--proxy", proxy, "--warmup-epochs", "1"])
    assert "16 records: 16 ok" in capsys.readouterr().out
    assert len(score.read_scores(out / "scores.parquet")) == 16
    kept = loaders.load_any(out / "selected.parquet", columns={"question": "problem"})     # loads back
    assert len(kept) == 4 == len(json.loads((out / "selected.json").read_text())["ids"])


def test_killed_mid_score_then_rerun_gives_the_same_files(mine, tmp_path):
    import os
    import signal
    import time
    path, proxy, _ = mine
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(paths.ROOT)}
    args = lambda out: [sys.executable, "-m", "ost", "run", str(path), "--val", str(MINE / "mine_val.json"),
                        "--out", str(out), "--proxy", proxy, "--warmup-epochs", "1", "--part-size", "4"]
    subprocess.run(args(tmp_path / "whole"), env=env, cwd=paths.ROOT, capture_output=True, timeout=300, check=True)
    out = tmp_path / "killed"
    proc = subprocess.Popen(args(out), env=env, cwd=paths.ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    while not list((out / "scores.parquet.parts").glob("part-*.parquet")) and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL and not (out / "scores.parquet").exists()      # killed mid-score
    subprocess.run(args(out), env=env, cwd=paths.ROOT, capture_output=True, timeout=300, check=True)
    for name in ("scores.parquet", "selected.json", "toxic.csv"):
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_the_command_on_a_saved_checkpoint_of_a_width_no_preset_has(tmp_path, tokenizer, processor):
    """`python -m ost run --proxy FOLDER` on a Qwen2-VL folder laid out as a real checkpoint (config, weights,
    tokenizer, image processor) of its own width: it warms, scores the ghost way, selects and flags."""
    width = dict(hidden=48, layers=3, heads=4, vision_width=48, vision_depth=1, vision_heads=2, rope_theta=10.0)
    assert width not in presets.PRESETS.values()
    folder = presets.save(tmp_path / "ckpt", presets.build(width, tokenizer, seed=3), tokenizer, processor)
    assert {"config.json", "model.safetensors", "tokenizer.json", "preprocessor_config.json"} <= {
        p.name for p in folder.iterdir()}
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(paths.ROOT)}
    done = subprocess.run([sys.executable, "-m", "ost", "run", str(MINE / "mine.json"), "--val",
                           str(MINE / "mine_val.json"), "--fraction", "0.5", "--out", str(out), "--proxy", str(folder),
                           "--warmup-epochs", "1"], env=env, cwd=paths.ROOT, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "kept 24" in done.stdout
    scored = json.loads((out / "score.json").read_text())
    assert scored["paths"] == ["ghost"] and scored["status"] == {"ok": 48}
    frame = score.read_scores(out / "scores.parquet")
    assert np.isfinite(frame["utility"]).all() and frame["utility"].nunique() == 48
    model, _, _ = presets.load(out / "proxy")
    assert model.config.text_config.hidden_size == 48 and model.config.text_config.num_hidden_layers == 3


def test_pool_scores_the_sharded_command_wrote_are_taken_up_by_the_score_stage(mine, tmp_path):
    """docs/own_data.md's GPU route: `ost.method.score` (under torchrun, one process here) scores work/prepared's
    pool into work/scores.parquet; `python -m ost score` then reuses every part and adds what the stages need."""
    path, proxy, _ = mine
    out = tmp_path / "work"
    cli.main(["prepare", str(path), "--val", str(MINE / "mine_val.json"), "--out", str(out)])
    cli.main(["warmup", "--out", str(out), "--proxy", proxy, "--warmup-epochs", "1"])
    score.main(["--model", str(out / "proxy"), "--adam-state", str(out / "adam_state.pt"), "--pool",
                str(out / "prepared"), "--out", str(out / "scores.parquet"), "--part-size", "16"])
    parts = {p.name: p.stat().st_mtime_ns for p in (out / "scores.parquet.parts").glob("part-*.parquet")}
    before = score.read_scores(out / "scores.parquet")
    cli.main(["score", "--out", str(out), "--part-size", "16"])
    assert len(parts) == 3 and parts == {p.name: p.stat().st_mtime_ns
                                         for p in (out / "scores.parquet.parts").glob("part-*.parquet")}
    pd.testing.assert_frame_equal(score.read_scores(out / "scores.parquet"), before)
    cli.main(["select", "--out", str(out), "--fraction", "0.25"])
    assert len(loaders.load_llava_json(out / "selected.json")) == 12
