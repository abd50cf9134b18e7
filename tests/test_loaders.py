"""The loaders map the LLaVA-JSON and saved-HF fixtures into the schema, and fail naming the culprit."""
import json
import shutil

import datasets
import pytest
from PIL import Image

from ost.data import loaders
from ost.data.schema import FEATURES, FIELDS, to_dataset
from ost.runs.paths import FIXTURES

LLAVA = FIXTURES / "llava" / "mini.json"
HF = FIXTURES / "hf_mini"
HF_COLUMNS = {"question": "problem", "answer": "solution"}


def _plain(row):
    return {k: row[k] for k in FIELDS if k != "image"}


def _assert_images(ds):
    for im in ds["image"]:
        assert isinstance(im, Image.Image) and im.mode == "RGB" and im.size == (56, 56)


def test_llava_json_maps_every_field():
    ds = loaders.load_llava_json(LLAVA)
    assert ds.column_names == list(FIELDS) and ds.features == FEATURES and len(ds) == 4
    _assert_images(ds)
    rows = [_plain(r) for r in ds]
    assert rows[0] == {"id": "q-three", "question": "Which digit is drawn?",
                       "answer": "The segments form a 3.\nAnswer: 3", "final": "3", "task": "real",
                       "difficulty": 0, "noise": "clean", "group": "images/three.png"}
    assert rows[1]["question"] == "What is the digit plus 5?"           # trailing <image> removed
    assert (rows[1]["answer"], rows[1]["final"]) == ("12", "12")        # MathV360K bare answer
    # explicit final/task/difficulty/noise win; only the first human→gpt pair is kept; int id → str
    assert rows[2] == {"id": "42", "question": "Name the digit.", "answer": "It looks like a five to me.",
                       "final": "5", "task": "digits", "difficulty": 2, "noise": "wrong_final",
                       "group": "images/five.png"}
    assert rows[3]["id"] == "mini-000003" and rows[3]["final"] == "3"  # id-less; trailing "." dropped
    assert rows[3]["group"] == rows[0]["group"]                          # shared image → one group
    assert ds[3]["image"].tobytes() == ds[0]["image"].tobytes()
    assert ds[0]["image"].getpixel((0, 0)) == (255, 255, 255)          # grayscale source → RGB


def test_llava_task_and_image_root(tmp_path):
    shutil.copy(LLAVA, tmp_path / "mini.json")                          # images left behind
    ds = loaders.load_llava_json(tmp_path / "mini.json", image_root=LLAVA.parent, task="mathv")
    assert ds["task"] == ["mathv", "mathv", "digits", "mathv"]


def test_hf_dataset_maps_every_field():
    ds = loaders.load_hf_dataset(HF, columns=HF_COLUMNS)                 # split defaults to "train"
    assert ds.column_names == list(FIELDS) and ds.features == FEATURES and len(ds) == 3
    _assert_images(ds)
    rows = [_plain(r) for r in ds]
    assert rows[0] == {"id": "000000", "question": "Which digit is drawn?",
                       "answer": "Four segments: a 4.\nAnswer: 4", "final": "4", "task": "real",
                       "difficulty": 0, "noise": "clean", "group": "000000"}
    assert [r["final"] for r in rows] == ["4", "18", "15"]
    assert [r["group"] for r in rows] == [r["id"] for r in rows] == ["000000", "000001", "000002"]


def test_load_any_dispatches():
    assert loaders.load_any(LLAVA)["id"] == loaders.load_llava_json(LLAVA)["id"]
    ds = loaders.load_any(HF, split="train", columns=HF_COLUMNS)
    assert ds.column_names == list(FIELDS) and len(ds) == 3
    ds = loaders.load_any(HF / "train", columns=HF_COLUMNS)              # a plain saved Dataset
    assert len(ds) == 3


@pytest.mark.parametrize("name", ["notes.txt", "empty_dir", "missing.json"])
def test_load_any_rejects_unknown_formats(tmp_path, name):
    target = tmp_path / name
    if name == "notes.txt":
        target.write_text("hi")
    elif name == "empty_dir":
        target.mkdir()
    with pytest.raises(ValueError, match="accepted: a LLaVA-style .json.*save_to_disk"):
        loaders.load_any(target)


def test_loader_records_survive_to_dataset():
    for records in (loaders.read_llava_json(LLAVA), loaders.read_hf_dataset(HF, columns=HF_COLUMNS)):
        ds = to_dataset(records)
        for rec, row in zip(records, ds, strict=True):
            assert list(rec) == list(FIELDS) and _plain(row) == _plain(rec)
            assert row["image"].convert("RGB").tobytes() == rec["image"].tobytes()


def _broken_llava(tmp_path, edit):
    shutil.copytree(LLAVA.parent, tmp_path / "llava")
    path = tmp_path / "llava" / "mini.json"
    records = json.loads(path.read_text())
    edit(records)
    path.write_text(json.dumps(records))
    return path


def test_missing_image_file_names_file_record_and_path(tmp_path):
    path = _broken_llava(tmp_path, lambda rs: rs[1].update(image="images/gone.png"))
    with pytest.raises(FileNotFoundError) as err:
        loaders.load_llava_json(path)
    msg = str(err.value)
    assert str(path) in msg and "record 1" in msg and "mathv-0001" in msg and "images/gone.png" in msg


def test_missing_conversations_names_record_and_field(tmp_path):
    path = _broken_llava(tmp_path, lambda rs: rs[2].pop("conversations"))
    with pytest.raises(ValueError, match=r"mini\.json: record 2 \(id '42'\): missing field 'conversations'"):
        loaders.load_llava_json(path)


def test_turns_must_start_human_then_gpt(tmp_path):
    path = _broken_llava(tmp_path, lambda rs: rs[0]["conversations"].reverse())
    with pytest.raises(ValueError, match=r"record 0 \(id 'q-three'\): field 'conversations'.*\['gpt', 'human'\]"):
        loaders.load_llava_json(path)


def test_missing_column_names_field_and_available_columns(tmp_path):
    with pytest.raises(ValueError, match=r"field 'question' needs column 'question'.*'problem', 'solution', 'image'"):
        loaders.load_hf_dataset(HF)                                      # no mapping: 'question' absent
    datasets.load_from_disk(str(HF)).remove_columns("image").save_to_disk(str(tmp_path / "noimg"))
    with pytest.raises(ValueError,
                       match=r"field 'image' needs column 'image'.*available columns: \['problem', 'solution'\]"):
        loaders.load_hf_dataset(tmp_path / "noimg", columns=HF_COLUMNS)


def test_split_choice(tmp_path):
    with pytest.raises(ValueError, match=r"split 'test'; available splits: \['train'\]"):
        loaders.load_hf_dataset(HF, split="test", columns=HF_COLUMNS)
    dd = datasets.load_from_disk(str(HF))
    datasets.DatasetDict({"pool": dd["train"], "val": dd["train"]}).save_to_disk(str(tmp_path / "nt"))
    with pytest.raises(ValueError, match=r"available splits: \['pool', 'val'\]"):
        loaders.load_hf_dataset(tmp_path / "nt", columns=HF_COLUMNS)
    assert len(loaders.load_hf_dataset(tmp_path / "nt", split="val", columns=HF_COLUMNS)) == 3


def test_a_geometry3k_style_parquet(tmp_path):
    """problem / answer (a letter) / choices / images (a list of one), as Geometry3K ships on the hub."""
    from PIL import Image
    features = datasets.Features({"problem": datasets.Value("string"), "answer": datasets.Value("string"),
                                  "choices": datasets.Sequence(datasets.Value("string")),
                                  "images": datasets.Sequence(datasets.Image())})
    rows = datasets.Dataset.from_dict({
        "problem": ["<image>Find x.", "<image>Find the area."], "answer": ["B", "C"],
        "choices": [["3", "4", "5", "6"], ["12", "14", "16", "18"]],
        "images": [[Image.new("RGB", (40, 30), "white")], [Image.new("RGB", (30, 40), "white")]]}, features=features)
    rows.to_parquet(tmp_path / "geo.parquet")
    ds = loaders.load_any(tmp_path / "geo.parquet", columns={"question": "problem"})
    assert len(ds) == 2 and ds["final"] == ["B", "C"] and ds["id"] == ["000000", "000001"]
    assert ds["question"][0] == "Find x. Choices: A. 3 B. 4 C. 5 D. 6" and ds["image"][1].size == (30, 40)
