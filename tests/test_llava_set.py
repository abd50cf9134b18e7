"""Both LLaVA sets (digits in increasing order, shape counts) load through the project's loader, their planted
noise is wrong on its own image while clean records are right, their labels stay outside the JSON, and a
seed fixes every byte."""
import csv
import json
import sys
from pathlib import Path

import pytest
from PIL import Image

from ost.data import loaders
from ost.data.answers import find_final

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import make_llava_set  # noqa: E402

SMALL = dict(n_train=40, noise_rate=0.25, n_val=10, n_test=6, seed=3)
FINAL = {"order": ("true_final", "stated_final"), "counts": ("true_count", "stated_count")}
PLANTED = {"order": {"descending": 4, "dedup": 3, "shuffled_join": 3},
           "counts": {"counts_all": 4, "off_by_one": 3, "shuffled_join": 3}}


def _labels(path) -> dict:
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["split"], r["id"]): r for r in csv.DictReader(f)}


@pytest.mark.parametrize("task", make_llava_set.TASKS)
def test_set_loads_and_plants_wrong_answers(tmp_path, task):
    made = make_llava_set.make_set(tmp_path / "set", **SMALL, task=task)
    assert made["counts"] == {"train": 40, "val": 10, "test": 6}
    assert sorted(p.name for p in made["dir"].iterdir()) == ["images", "labels.csv", "test.json", "train.json",
                                                             "val.json"]
    labels = _labels(made["labels"])
    true, stated = FINAL[task]
    train_ids = [rid for split, rid in labels if split == "train"]
    assert len(train_ids) == len(set(train_ids)) == 40
    for split in ("train", "val"):
        assert all(set(r) == {"id", "image", "conversations"} for r in json.loads(made[split].read_text()))
        ds = loaders.load_llava_json(made[split], on_error="skip")
        assert set(ds["status"]) == {"ok"} and set(ds["noise"]) == {"clean"}   # the JSON carries no label
        assert sorted(ds["id"]) == sorted(rid for s, rid in labels if s == split)
        for rec in ds:
            lab = labels[(split, rec["id"])]
            assert rec["final"] == find_final(rec["answer"]) == lab[stated]
            assert (rec["final"] == lab[true]) == (lab["kind"] == "clean"), lab
            assert rec["image"].size == (56, 56)
    kinds = [lab["kind"] for lab in labels.values() if lab["split"] == "train"]
    assert {k: kinds.count(k) for k in make_llava_set.KINDS[task]} == PLANTED[task]
    assert {lab["kind"] for lab in labels.values() if lab["split"] != "train"} == {"clean"}
    assert all(bool(lab["answer_from"]) == (lab["kind"] == "shuffled_join") for lab in labels.values())


def test_order_noise_follows_its_bug(tmp_path):
    made = make_llava_set.make_set(tmp_path / "set", n_train=120, noise_rate=0.5, n_val=4, n_test=4, seed=1)
    labels = list(_labels(made["labels"]).values())
    for lab in labels:
        assert sorted(lab["digits"]) == list(lab["true_final"]) and lab["cells"].count("_") == 1
        assert lab["cells"].replace("_", "") == lab["digits"]           # the pool's layout keeps reading order
        if lab["kind"] == "descending":
            assert lab["stated_final"] == lab["true_final"][::-1]
        if lab["kind"] == "dedup":
            assert lab["repeated"] == "1" and lab["stated_final"] == "".join(sorted(set(lab["digits"])))
    clean = [lab["repeated"] == "1" for lab in labels if lab["kind"] == "clean"]
    assert 0.1 < sum(clean) / len(clean) < 0.5                          # repeats are common, not the rule
    image = Image.open(made["images"] / "val-000000.png")
    assert image.mode == "RGB" and image.size == (56, 56)


@pytest.mark.parametrize("task", make_llava_set.TASKS)
def test_same_seed_same_bytes(tmp_path, task):
    a = make_llava_set.make_set(tmp_path / "a", **SMALL, task=task)["dir"]
    b = make_llava_set.make_set(tmp_path / "b", **SMALL, task=task)["dir"]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    other = make_llava_set.make_set(tmp_path / "c", **{**SMALL, "seed": 4}, task=task)["dir"]
    assert (other / "train.json").read_bytes() != (a / "train.json").read_bytes()


def test_unknown_task_is_refused(tmp_path):
    with pytest.raises(ValueError, match="task must be one of"):
        make_llava_set.make_set(tmp_path / "set", **SMALL, task="colours")
