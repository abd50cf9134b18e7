"""`python -m ost`: one command from a LLaVA-style JSON file to the subset, the toxic list and the scores."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import TINY
from ost import cli, loaders, models, paths, score


MINE = paths.FIXTURES / "llava_mine"       # 48 records ("The answer is 7.", choice letters) + 8 clean ones


@pytest.fixture(scope="module")
def mine(tmp_path_factory, tokenizer, processor):
    root = tmp_path_factory.mktemp("cli")
    proxy = models.save(root / "proxy", models.build(TINY, tokenizer, seed=0), tokenizer, processor)
    return MINE / "mine.json", str(proxy), root


def test_one_command_writes_every_output(mine, capsys):
    path, proxy, root = mine
    out = root / "out"
    args = ["run", str(path), "--val", str(MINE / "mine_val.json"), "--fraction", "0.25", "--out", str(out),
            "--proxy", proxy, "--warmup-epochs", "1"]
    cli.main(args)
    printed = capsys.readouterr().out
    assert "48 records: 48 ok" in printed and "kept 12" in printed and "validation: 8 records (VAL)" in printed
    frame = score.read_scores(out / "scores.parquet")
    report = json.loads((out / "report.json").read_text())
    assert len(frame) == report["rows"] == 48 and frame["id"].tolist() == loaders.load_llava_json(path)["id"]
    assert report["prepare"]["no_final"] == 0                    # "The answer is 12." and "A" both found
    kept = loaders.load_llava_json(out / "selected.json")        # loads back, image paths valid from DIR
    assert len(kept) == 12 and set(kept["id"]) <= set(frame["id"])
    toxic = pd.read_csv(out / "toxic.csv")
    assert list(toxic.columns) == ["id", "utility", "rank", "reason"] and (toxic["utility"] < 0).all()
    assert set(report["seconds"]) == {"prepare", "warmup", "score"}
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    cli.main(args)                                               # a rerun redoes nothing and writes the same
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before


def test_a_validation_slice_carved_from_data(mine, tmp_path):
    path, _, _ = mine
    report = cli.prepare(path, tmp_path, val_fraction=0.25, seed=3)["report"]
    assert report["pool"] == 36 and report["validation"] == 12 and "should be clean" in report["validation_source"]


def test_mistakes_are_named(mine, tmp_path):
    path, proxy, root = mine
    with pytest.raises(ValueError, match="--val VAL"):
        cli.prepare(path, tmp_path / "a")
    with pytest.raises(ValueError, match=r"shares \d+ record"):
        cli.prepare(path, tmp_path / "b", val=path)
    with pytest.raises(FileNotFoundError, match="python -m ost prepare"):
        cli.warmup(tmp_path / "c")
    from ost import data
    with pytest.raises(ValueError, match="is a file.*python -m ost run"):     # a JSON file where a folder goes
        data.load_pool(path)


def test_help_lists_the_stages():
    run = subprocess.run([sys.executable, "-m", "ost", "--help"], capture_output=True, text=True, cwd=paths.ROOT)
    assert run.returncode == 0
    for stage in ("run", "prepare", "warmup", "score", "select"):
        assert stage in run.stdout
