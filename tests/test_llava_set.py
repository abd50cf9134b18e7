"""The shape-counting LLaVA set loads through the project's loader, its planted noise is wrong on its own
image while clean records are right, its labels stay outside the JSON, and a seed fixes every byte."""
import csv
import json
import sys
from pathlib import Path

from ost.data import loaders
from ost.data.answers import find_final

sys.path.insert(0, str(Path(__file__).parents[1] / "benchmarks"))
import make_llava_set  # noqa: E402

SMALL = dict(n_train=40, noise_rate=0.25, n_val=10, n_test=6, seed=3)


def _labels(path) -> dict:
    with open(path, newline="", encoding="utf-8") as f:
        return {(r["split"], r["id"]): r for r in csv.DictReader(f)}


def test_set_loads_and_plants_wrong_answers(tmp_path):
    made = make_llava_set.make_set(tmp_path / "set", **SMALL)
    assert made["counts"] == {"train": 40, "val": 10, "test": 6}
    assert sorted(p.name for p in made["dir"].iterdir()) == ["images", "labels.csv", "test.json", "train.json",
                                                             "val.json"]
    labels = _labels(made["labels"])
    train_ids = [rid for split, rid in labels if split == "train"]
    assert len(train_ids) == len(set(train_ids)) == 40
    for split in ("train", "val"):
        assert all(set(r) == {"id", "image", "conversations"} for r in json.loads(made[split].read_text()))
        ds = loaders.load_llava_json(made[split], on_error="skip")
        assert set(ds["status"]) == {"ok"} and set(ds["noise"]) == {"clean"}   # the JSON carries no label
        assert sorted(ds["id"]) == sorted(rid for s, rid in labels if s == split)
        for rec in ds:
            lab = labels[(split, rec["id"])]
            assert rec["final"] == find_final(rec["answer"]) == lab["stated_count"]
            assert (rec["final"] == lab["true_count"]) == (lab["kind"] == "clean"), lab
    kinds = [lab["kind"] for lab in labels.values() if lab["split"] == "train"]
    assert {k: kinds.count(k) for k in make_llava_set.KINDS} == {"counts_all": 4, "off_by_one": 3, "shuffled_join": 3}
    assert {lab["kind"] for lab in labels.values() if lab["split"] != "train"} == {"clean"}


def test_same_seed_same_bytes(tmp_path):
    a = make_llava_set.make_set(tmp_path / "a", **SMALL)["dir"]
    b = make_llava_set.make_set(tmp_path / "b", **SMALL)["dir"]
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    other = make_llava_set.make_set(tmp_path / "c", **{**SMALL, "seed": 4})["dir"]
    assert (other / "train.json").read_bytes() != (a / "train.json").read_bytes()
