"""`python -m ost`: one command from a LLaVA-style JSON file to the subset, the toxic list and the scores."""
import json
import subprocess
import sys

import pandas as pd
import pytest

from conftest import TINY
from ost import cli, loaders, models, paths, score


def _llava_file(folder, records):
    """A LLaVA JSON the way real sets write it: "The answer is X." or a lone choice letter, images on disk."""
    (folder / "images").mkdir(parents=True)
    out = []
    for k, r in enumerate(records):
        r["image"].save(folder / "images" / f"{k}.png")
        if k % 4 == 3:      # multiple choice: the letter of the right option
            question, answer = f"{r['question']} A. {r['final']} B. {int(r['final']) + 1}", "A"
        else:
            question, answer = r["question"], r["answer"].replace("Answer:", "The answer is") + "."
        out.append({"id": f"rec-{k}", "image": f"images/{k}.png",
                    "conversations": [{"from": "human", "value": f"<image>\n{question}"},
                                      {"from": "gpt", "value": answer}]})
    (folder / "mine.json").write_text(json.dumps(out))
    return folder / "mine.json"


@pytest.fixture(scope="module")
def mine(tmp_path_factory, records, tokenizer, processor):
    root = tmp_path_factory.mktemp("cli")
    proxy = models.save(root / "proxy", models.build(TINY, tokenizer, seed=0), tokenizer, processor)
    return _llava_file(root / "data", [dict(r) for r in records[:24]]), str(proxy), root


def test_one_command_writes_every_output(mine, capsys):
    path, proxy, root = mine
    out = root / "out"
    args = ["run", str(path), "--val-fraction", "0.25", "--fraction", "0.5", "--out", str(out), "--proxy", proxy,
            "--warmup-epochs", "1"]
    cli.main(args)
    printed = capsys.readouterr().out
    assert "18 records: 18 ok" in printed and "kept 9" in printed and "seeded 25%" in printed
    frame = score.read_scores(out / "scores.parquet")
    report = json.loads((out / "report.json").read_text())
    assert len(frame) == report["rows"] == 18 and report["prepare"]["validation"] == 6      # rows out = rows in
    assert report["prepare"]["no_final"] == 0                    # "The answer is 12." and "A" both found
    kept = loaders.load_llava_json(out / "selected.json")        # loads back, image paths valid from DIR
    assert len(kept) == 9 and set(kept["id"]) <= set(frame["id"])
    toxic = pd.read_csv(out / "toxic.csv")
    assert list(toxic.columns) == ["id", "utility", "rank", "reason"] and (toxic["utility"] < 0).all()
    assert set(report["seconds"]) == {"prepare", "warmup", "score"}
    before = {p.name: p.read_bytes() for p in out.glob("*.json")}
    cli.main(args)                                               # a rerun redoes nothing and writes the same
    assert {p.name: p.read_bytes() for p in out.glob("*.json")} == before


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
