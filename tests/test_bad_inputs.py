"""Bad input, interrupted runs, determinism: every bad record is refused by name or kept with a status.

Loader cases edit a copy of the LLaVA fixture (or build a small saved HF dataset) one fault at a time
and check both modes: `on_error="raise"` names file, record, id and field; `on_error="skip"` returns as
many rows as records, the bad one marked `skipped:<reason>`, the others untouched.
"""
import io
import json
import shutil
import struct
import warnings
import zlib

import datasets
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from ost import runs
from ost.data import loaders, schema, validate
from ost.data.schema import FIELDS
from ost.method.step import Step
from ost.runs.paths import FIXTURES, NOTEBOOKS

SGD = Step(optimizer="sgd", normalize=False, unit_val=False)     # untrained models: no warm-up state to continue

LLAVA = FIXTURES / "llava" / "mini.json"
N_LLAVA = len(json.loads(LLAVA.read_text()))
HF_FEATURES = datasets.Features({"id": datasets.Value("string"), "question": datasets.Value("string"),
                                 "answer": datasets.Value("string"), "image": datasets.Image()})


def _png(im) -> bytes:
    buf = io.BytesIO()
    im.save(buf, "PNG")
    return buf.getvalue()


def _noise_png(side=56) -> bytes:
    """A PNG that compresses badly, so half of it is really half of the pixel data."""
    rng = np.random.default_rng(0)
    return _png(Image.fromarray(rng.integers(0, 255, (side, side, 3), dtype=np.uint8)))


def _bomb_png(w=100_000, h=100_000) -> bytes:
    """A valid PNG header claiming w×h pixels with almost no data: a decompression bomb."""
    def chunk(kind, body):
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


def _llava_copy(tmp_path, edit=None, raw=None):
    """The fixture copied to tmp_path, records edited; `raw` (old, new) then replaces bytes in the file."""
    shutil.copytree(LLAVA.parent, tmp_path / "llava")
    path = tmp_path / "llava" / "mini.json"
    records = json.loads(path.read_text())
    if edit:
        edit(records, tmp_path / "llava")
    text = json.dumps(records).encode()
    if raw:
        assert raw[0] in text
        text = text.replace(*raw)
    path.write_bytes(text)
    return path, records


def _write(folder, name, payload: bytes):
    (folder / "images" / name).write_bytes(payload)


def _set(i, **kw):
    return lambda rs, folder: rs[i].update(**kw)


def _turn(i, k, value):
    return lambda rs, folder: rs[i]["conversations"][k].update(value=value)


LLAVA_CASES = {   # name → (edit, raw byte replacement, record index, reason, field named in the error)
    "image path to no file": (_set(1, image="images/gone.png"), None, 1, "image_missing", "image"),
    "image not an image": (lambda rs, f: (_write(f, "bad.png", b"this is text"), rs[0].update(image="images/bad.png")),
                           None, 0, "image_unreadable", "image"),
    "image truncated": (lambda rs, f: (_write(f, "half.png", _noise_png()[:2000]),
                                       rs[2].update(image="images/half.png")),
                        None, 2, "image_truncated", "image"),
    "image zero-size": (lambda rs, f: (_write(f, "zero.png", b""), rs[1].update(image="images/zero.png")),
                        None, 1, "image_empty", "image"),
    "image a decompression bomb": (lambda rs, f: (_write(f, "bomb.png", _bomb_png()),
                                                  rs[3].update(image="images/bomb.png")),
                                   None, 3, "image_too_large", "image"),
    "image field a number": (_set(0, image=7), None, 0, "bad_field", "image"),
    "image field absent": (lambda rs, f: rs[2].pop("image"), None, 2, "missing_field", "image"),
    "question only the image tag": (_turn(0, 0, "<image>"), None, 0, "empty_question", "question"),
    "answer blank": (_turn(1, 1, "   "), None, 1, "empty_answer", "answer"),
    "question a number": (_turn(2, 0, 17), None, 2, "not_a_string", "question"),
    "answer a list": (_turn(0, 1, ["4"]), None, 0, "not_a_string", "answer"),
    "answer bytes not UTF-8": (_turn(1, 1, "@@BAD@@"), (b"@@BAD@@", b"caf\xe9 \xff"), 1, "not_utf8", "answer"),
    "question a lone surrogate escape": (_turn(0, 0, "@@BAD@@"), (b"@@BAD@@", b"\\udc80 what?"), 0, "not_utf8",
                                         "question"),
    "final a list": (_set(0, final=["3"]), None, 0, "bad_field", "final"),
    "difficulty not a number": (_set(0, difficulty="hard"), None, 0, "bad_field", "difficulty"),
    "unknown field": (_set(3, source="mathv360k"), None, 3, "unknown_field", "source"),
    "conversations absent": (lambda rs, f: rs[1].pop("conversations"), None, 1, "missing_field", "conversations"),
    "conversations roles swapped": (lambda rs, f: rs[0]["conversations"].reverse(), None, 0, "bad_field",
                                    "conversations"),
    "duplicate id": (_set(1, id="q-three"), None, 1, "duplicate_id", "id"),
    "id a float": (_set(0, id=1.5), None, 0, "bad_field", "id"),
    "id empty": (_set(2, id=" "), None, 2, "bad_field", "id"),
    "record not an object": (lambda rs, f: rs.insert(2, "just a string"), None, 2, "not_a_record", None),
}


@pytest.mark.parametrize("case", list(LLAVA_CASES))
def test_llava_bad_record_raises_naming_file_record_and_field(tmp_path, case):
    edit, raw, i, reason, field = LLAVA_CASES[case]
    path, records = _llava_copy(tmp_path, edit, raw)
    with pytest.raises(validate.BadRecord) as err:
        loaders.load_llava_json(path)
    msg = str(err.value)
    assert err.value.reason == reason, msg
    assert msg.startswith(f"{path}: record {i} (id ")
    rest = msg.split(": ", 2)[-1]                                        # what follows file and record
    assert err.value.field == field and (field is None or repr(field) in rest or rest.startswith(field)), rest
    if reason == "image_missing":
        assert isinstance(err.value, FileNotFoundError)


@pytest.mark.parametrize("case", list(LLAVA_CASES))
def test_llava_bad_record_skipped_with_its_status(tmp_path, case):
    edit, raw, i, reason, _ = LLAVA_CASES[case]
    path, records = _llava_copy(tmp_path, edit, raw)
    with pytest.warns(UserWarning, match=f"1 of {len(records)} records skipped .*{reason}"):
        ds = loaders.load_llava_json(path, on_error="skip")
    assert len(ds) == len(records)                                        # count in == count out
    status = ds["status"]
    assert status[i] == f"skipped:{reason}" and ds[i]["image"] is None and ds[i]["note"]
    assert [s for k, s in enumerate(status) if k != i] == ["ok"] * (len(records) - 1)
    if case != "record not an object":                                  # the good rows are what raise mode gives
        clean = loaders.load_llava_json(LLAVA)
        for k in range(len(records)):
            if k != i:
                assert (ds[k]["question"], ds[k]["final"]) == (clean[k]["question"], clean[k]["final"])
    rep = validate.report(ds)
    assert rep["total"] == len(records) and rep["ok"] == len(records) - 1
    assert rep["by_status"][f"skipped:{reason}"] == 1
    assert rep["examples"][f"skipped:{reason}"][0]["id"] == ds[i]["id"]
    assert f"skipped:{reason}: 1" in validate.format_report(rep)


def test_the_first_of_two_duplicate_ids_is_kept(tmp_path):
    path, _ = _llava_copy(tmp_path, _set(2, id="mathv-0001"))
    with pytest.warns(UserWarning):
        ds = loaders.load_llava_json(path, on_error="skip")
    assert ds["id"][1] == ds["id"][2] == "mathv-0001"
    assert ds["status"][1:3] == ["ok", "skipped:duplicate_id"] and "already used by record 1" in ds["note"][2]


def test_ignore_fields_accepts_a_known_extra_field(tmp_path):
    path, _ = _llava_copy(tmp_path, lambda rs, f: [r.update(source="mathv360k") for r in rs])
    ds = loaders.load_llava_json(path, ignore_fields=["source"])
    assert ds["id"] == loaders.load_llava_json(LLAVA)["id"]


def test_an_image_over_max_pixels_is_refused(tmp_path):
    with pytest.raises(validate.BadRecord, match=r"record 0 .*56×56 = 3,136 pixels, over the limit of 3,000"):
        loaders.load_llava_json(LLAVA, max_pixels=3000)


def test_a_file_that_is_not_json_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text('[{"id": 1,')
    with pytest.raises(ValueError, match=f"{path}: not valid JSON"):
        loaders.load_llava_json(path)
    path.write_text("[1, 2]")
    with pytest.raises(ValueError, match="record 0 .*expected a JSON object, got int"):
        loaders.load_llava_json(path)
    with pytest.raises(ValueError, match="on_error must be one of"):
        loaders.load_llava_json(LLAVA, on_error="ignore")


@pytest.mark.parametrize("mode,make", [
    ("CMYK", lambda: Image.new("RGB", (56, 56), (20, 120, 250)).convert("CMYK")),
    ("RGBA", lambda: Image.new("RGBA", (56, 56), (0, 0, 0, 0))),
    ("LA", lambda: Image.new("LA", (56, 56), (0, 0))),
    ("L", lambda: Image.new("L", (56, 56), 255)),
    ("1", lambda: Image.new("1", (56, 56), 1)),
    ("P", lambda: Image.new("RGB", (56, 56), (255, 255, 255)).convert("P")),
    ("I;16", lambda: Image.fromarray(np.full((56, 56), 65535, dtype=np.uint16))),
])
def test_other_image_modes_become_rgb_with_a_note(tmp_path, mode, make):
    """Not errors: converted to 8-bit RGB. Transparent pixels become white (the fixtures' background)."""
    im = make()
    fmt = "JPEG" if mode == "CMYK" else "PNG"
    name = f"odd.{fmt.lower()}"
    path, _ = _llava_copy(tmp_path, lambda rs, f: (im.save(f / "images" / name, fmt),
                                                   rs[0].update(image=f"images/{name}")))
    ds = loaders.load_llava_json(path, on_error="skip")
    assert ds["status"] == ["ok"] * N_LLAVA
    assert ds[0]["image"].mode == "RGB" and ds[0]["image"].size == (56, 56)
    assert ds["note"][0].startswith("image mode ") and ds["note"][0].endswith("converted to RGB")
    r, g, b = ds[0]["image"].getpixel((5, 5))
    if mode == "CMYK":
        assert (r, g, b) != (255, 255, 255) and b > r
    else:
        assert (r, g, b) == (255, 255, 255)


# ------------------------------------------------------------------ HF datasets saved with save_to_disk

def _hf(tmp_path, rows, features=HF_FEATURES, question="Which digit?"):
    """Four good rows saved with save_to_disk, then `rows` {index: {column: value}} applied."""
    cols = {"id": [f"h{k}" for k in range(4)], "question": [question] * 4, "answer": ["It is a 3.\nAnswer: 3"] * 4,
            "image": [{"bytes": _png(Image.new("RGB", (56, 56))), "path": None}] * 4}
    for k, changes in rows.items():
        for col, value in changes.items():
            cols.setdefault(col, [None] * 4)[k] = value
    datasets.Dataset.from_dict(cols, features=features).save_to_disk(str(tmp_path / "hf"))
    return tmp_path / "hf"


BINARY_Q = datasets.Features({**HF_FEATURES, "question": datasets.Value("binary")})
HF_CASES = {   # name → (row changes, features, the other rows' question, row, reason)
    "image null": ({1: {"image": None}}, HF_FEATURES, "Which digit?", 1, "missing_field"),
    "image bytes empty": ({2: {"image": {"bytes": b"", "path": None}}}, HF_FEATURES, "Which digit?", 2, "image_empty"),
    "image bytes not an image": ({0: {"image": {"bytes": b"GIF? no", "path": None}}}, HF_FEATURES, "Which digit?", 0,
                                 "image_unreadable"),
    "image bytes truncated": ({3: {"image": {"bytes": _noise_png()[:1500], "path": None}}}, HF_FEATURES,
                              "Which digit?", 3, "image_truncated"),
    "image a bomb": ({1: {"image": {"bytes": _bomb_png(), "path": None}}}, HF_FEATURES, "Which digit?", 1,
                     "image_too_large"),
    "question null": ({2: {"question": None}}, HF_FEATURES, "Which digit?", 2, "missing_field"),
    "answer empty": ({0: {"answer": ""}}, HF_FEATURES, "Which digit?", 0, "empty_answer"),
    "question binary, not UTF-8": ({1: {"question": b"\xff\xfeA"}}, BINARY_Q, b"Which digit?", 1, "not_utf8"),
    "duplicate id": ({3: {"id": "h0"}}, HF_FEATURES, "Which digit?", 3, "duplicate_id"),
    "id empty": ({2: {"id": ""}}, HF_FEATURES, "Which digit?", 2, "bad_field"),
}


@pytest.mark.parametrize("case", list(HF_CASES))
def test_hf_bad_row_raises_or_is_skipped(tmp_path, case):
    rows, features, question, i, reason = HF_CASES[case]
    path = _hf(tmp_path, rows, features, question)
    with pytest.raises(validate.BadRecord) as err:
        loaders.load_hf_dataset(path)
    assert err.value.reason == reason and str(err.value).startswith(f"{path}: row {i} (id ")
    with pytest.warns(UserWarning, match=f"1 of 4 records skipped .*{reason}"):
        ds = loaders.load_hf_dataset(path, on_error="skip")
    assert ds["id"] == ["h0", "h1", "000002" if case == "id empty" else "h2",
                        "h0" if reason == "duplicate_id" else "h3"]
    assert ds["status"] == ["ok"] * i + [f"skipped:{reason}"] + ["ok"] * (3 - i)
    if features is BINARY_Q:                                              # UTF-8 bytes are fine text
        assert ds["question"][0] == "Which digit?"


def test_a_record_without_a_final_is_kept_with_a_note_and_one_warning(tmp_path):
    path, _ = _llava_copy(tmp_path, _turn(1, 1, "The digit is seven and adding five gives a larger number, "
                                               "which we leave to the reader."))
    with pytest.warns(UserWarning, match="1 of .* records have no final answer"):
        ds = loaders.load_llava_json(path, on_error="skip")
    assert set(ds["status"]) == {"ok"} and ds["final"][1] == "" and "no final answer found" in ds["note"][1]
    with pytest.warns(UserWarning, match="no final answer"):       # raise mode keeps it too
        assert loaders.load_llava_json(path)["final"][1] == ""
    hf = _hf(tmp_path, {2: {"answer": "So it goes: the digit is 3, as one sees, once the picture is read."}})
    with pytest.warns(UserWarning, match="no final answer"):
        assert loaders.load_hf_dataset(hf)["final"] == ["3", "3", "", "3"]
    mine = loaders.load_hf_dataset(hf, final_pattern=r"the digit is (\d)")    # a pattern of your own, first
    assert mine["final"][2] == "3"


def test_hf_question_of_another_type_is_refused_in_every_row(tmp_path):
    path = _hf(tmp_path, {}, datasets.Features({**HF_FEATURES, "question": datasets.Value("int64")}), 12)
    with pytest.raises(validate.BadRecord, match=r"row 0 \(id 'h0'\): field 'question' must be text, got int"):
        loaders.load_hf_dataset(path)
    with pytest.warns(UserWarning, match="4 of 4 records skipped"):
        assert loaders.load_hf_dataset(path, on_error="skip")["status"] == ["skipped:not_a_string"] * 4


def test_hf_unmapped_column_is_refused_not_ignored(tmp_path):
    feats = datasets.Features({**HF_FEATURES, "source": datasets.Value("string")})
    path = _hf(tmp_path, {k: {"source": "web"} for k in range(4)}, feats)
    with pytest.raises(ValueError,
                       match=r"column\(s\) \['source'\] map to no schema field.*ignore_fields=\['source'\]"):
        loaders.load_hf_dataset(path)
    assert len(loaders.load_hf_dataset(path, ignore_fields=["source"])) == 4


# ------------------------------------------------------------------ a pool folder (generated or your own)

@pytest.fixture
def saved_pool(tmp_path, records):
    def save(edit=None):
        dd = datasets.DatasetDict({"pool": schema.to_dataset(records[:6]),
                                   "validation": schema.to_dataset(records[6:8])})
        if edit:
            dd = edit(dd)
        folder = tmp_path / "pool"
        dd.save_to_disk(str(folder))
        return folder
    return save


@pytest.mark.parametrize("edit,message", [
    (lambda dd: datasets.DatasetDict({**dd, "pool": dd["pool"].map(
        lambda r, i: {"id": "pool-x" if i in (1, 4) else r["id"]}, with_indices=True)}),
     r"split 'pool': row 4 \(id 'pool-x'\): field 'id' duplicates row 1"),
    (lambda dd: datasets.DatasetDict({**dd, "pool": dd["pool"].map(
        lambda r, i: {"question": " " if i == 2 else r["question"]}, with_indices=True)}),
     r"split 'pool': row 2 \(id '[^']+'\): field 'question' is empty"),
    (lambda dd: datasets.DatasetDict({**dd, "validation": dd["validation"].add_column("extra", [1, 2])}),
     r"split 'validation': columns .* do not match the schema .*unknown: \['extra'\]"),
    (lambda dd: datasets.DatasetDict({"pool": dd["pool"]}), r"split\(s\) \['validation'\] missing"),
])
def test_a_broken_pool_folder_is_refused_on_load(saved_pool, edit, message):
    with pytest.raises(ValueError, match=message):
        schema.load_pool(saved_pool(edit))


def test_a_pool_folder_may_carry_skipped_rows(saved_pool, records):
    def mark(dd):
        skipped = {**schema.to_dataset(records[:1]).to_list()[0], "image": None, "question": "",
                   "id": "bad-1", "status": "", "note": ""}
        pool = [{**r, "status": "ok", "note": ""} for r in records[:6]] + [
            {**skipped, "status": "skipped:image_missing", "note": "no image file"}]
        return datasets.DatasetDict({**dd, "pool": schema.to_dataset(pool)})
    dd = schema.load_pool(saved_pool(mark))
    assert dd["pool"]["status"][-1] == "skipped:image_missing" and len(dd["pool"]) == 7


# ------------------------------------------------------------------ any record: refused or marked, never lost

_values = st.one_of(st.none(), st.integers(-3, 3), st.text(max_size=12), st.just("<image>"), st.just("Answer: 4"),
                    st.lists(st.integers(0, 2), max_size=2), st.just("images/three.png"), st.just("images/none.png"))
_turns = st.lists(st.fixed_dictionaries({"from": st.sampled_from(["human", "gpt", "system"]), "value": _values}),
                  max_size=3)
_records = st.one_of(st.fixed_dictionaries({}, optional={"id": _values, "image": _values, "conversations": _turns,
                                                         "final": _values, "difficulty": _values, "extra": _values}),
                     _values)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(recs=st.lists(_records, max_size=6))
def test_any_json_records_are_refused_by_name_or_kept_with_a_status(tmp_path, recs):
    path = tmp_path / "any.json"
    (tmp_path / "images").mkdir(exist_ok=True)
    shutil.copy(LLAVA.parent / "images" / "three.png", tmp_path / "images" / "three.png")
    path.write_text(json.dumps(recs))
    if not recs:
        with pytest.raises(ValueError, match="holds no records"):
            loaders.read_llava_json(path, on_error="skip")
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = loaders.read_llava_json(path, on_error="skip")
    assert len(out) == len(recs)
    for rec in out:
        reason = rec["status"].removeprefix("skipped:")
        assert rec["status"] == "ok" or (reason in validate.REASONS and rec["note"].startswith(f"{path}: record "))
        assert list(rec)[:len(FIELDS)] == list(FIELDS)
    assert len({r["id"] for r in out if r["status"] == "ok"}) == sum(r["status"] == "ok" for r in out)
    try:
        strict = loaders.read_llava_json(path)
        assert len(strict) == len(recs) and all(r["status"] == "ok" for r in out)
    except validate.BadRecord as err:
        first_bad = next(k for k, r in enumerate(out) if r["status"] != "ok")
        assert str(err).startswith(f"{path}: record {first_bad} ")
    schema.to_dataset(out)                                                   # every row fits the schema


# ------------------------------------------------------------------ mistakes users make

def test_an_unknown_notebook_parameter_is_refused():
    nb = NOTEBOOKS / "02_score_utility.ipynb"
    with pytest.raises(ValueError, match="'part_sise' is a parameter of no notebook"):
        runs.check_config({"part_sise": 64}, notebooks=[nb])
    with pytest.raises(ValueError, match="'n_groups' is a parameter of no notebook"):   # 00's, not 02's
        runs.check_config({"n_groups": 10}, notebooks=[nb])


# ------------------------------------------------------------------ scoring: statuses, over-long, non-finite

@pytest.fixture(scope="module")
def scoring(records, tokenizer, processor):
    from conftest import TINY

    from ost.models import presets
    pool = schema.to_dataset(records[:12])
    val = schema.to_dataset(records[12:15])
    return presets.build(TINY, tokenizer, seed=0), tokenizer, processor, pool, val


def _with_status(ds, bad: dict):
    """The dataset with a status column: rows in `bad` {index: reason} marked skipped, image removed."""
    rows = [{**r, "status": "ok", "note": ""} for r in ds]
    for i, reason in bad.items():
        rows[i].update(image=None, status=f"skipped:{reason}", note="marked by the test")
    return schema.to_dataset(rows)


def test_skipped_rows_reach_the_score_file_unscored(tmp_path, scoring):
    from ost.method import score, select
    model, tok, proc, pool, val = scoring
    bad = {2: "image_missing", 7: "not_utf8"}
    frame = score.score_pool(model, tok, proc, _with_status(pool, bad), val, tmp_path / "s.parquet",
                             part_size=5, batch_size=4, step=SGD, progress=False)
    assert frame["id"].tolist() == pool["id"]                             # count in == count out, same order
    assert [frame["status"][i] for i in bad] == ["skipped:image_missing", "skipped:not_utf8"]
    assert frame["utility"][list(bad)].isna().all() and (frame["status"] == "ok").sum() == len(pool) - len(bad)
    good = [i for i in range(len(pool)) if i not in bad]
    alone = score.score_pool(model, tok, proc, pool.select(good), val, tmp_path / "g.parquet", part_size=5,
                             batch_size=4, step=SGD, progress=False)
    np.testing.assert_allclose(frame["utility"][good], alone["utility"], rtol=1e-4, atol=1e-9)
    utility = frame.set_index("id")["utility"]
    chosen = select.top_fraction(utility, 1.0)
    assert set(chosen) == set(frame["id"][good]) and set(select.excluded(utility)) == set(frame["id"][list(bad)])
    rep = validate.report(frame)
    assert rep["by_status"] == {"ok": len(good), "skipped:image_missing": 1, "skipped:not_utf8": 1}
    with pytest.raises(ValueError, match="validation set holds 1 record"):
        score.score_pool(model, tok, proc, pool, _with_status(val, {0: "empty_answer"}), tmp_path / "v.parquet",
                         step=SGD, progress=False)


def test_over_long_samples_are_marked_too_long_and_counted(tmp_path, scoring):
    """Policy: no truncation; a sample over max_length tokens is skipped:too_long, rows out = rows in."""
    from ost.method import score
    from ost.models import collate
    model, tok, proc, pool, val = scoring
    col = collate.Collator(tok, proc)
    lengths = [col.n_tokens(s) for s in pool]
    assert lengths == [int(col([s])["attention_mask"].sum()) for s in pool]     # the count the batch gets
    cut = sorted(lengths)[len(lengths) // 2]
    assert min(lengths) <= cut < max(lengths)
    frame = score.score_pool(model, tok, proc, pool, val, tmp_path / "s.parquet", part_size=5, max_length=cut,
                             step=SGD, progress=False)
    assert len(frame) == len(pool)
    assert frame["status"].tolist() == ["ok" if n <= cut else "skipped:too_long" for n in lengths]
    assert frame["utility"][frame["status"] == "ok"].notna().all()


def _poison(model, tok, marker):
    """A copy of the model whose embedding rows for `marker`'s tokens are NaN: only a sample that
    contains the marker has a non-finite forward pass."""
    import copy

    import torch
    bad = copy.deepcopy(model)
    ids = tok(marker, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        bad.get_input_embeddings().weight[ids] = float("nan")
    return bad, set(ids)


@pytest.mark.parametrize("method", ["first_order", "exact"])
def test_one_nonfinite_sample_does_not_poison_its_batch(tmp_path, scoring, method):
    from ost.method import score
    model, tok, proc, pool, val = scoring
    marker = "§¤"
    poisoned, ids = _poison(model, tok, marker)
    for s in list(pool) + list(val):                                       # no other sample touches those rows
        assert not ids & set(tok(s["question"] + s["answer"], add_special_tokens=False)["input_ids"])
    rows = pool.to_list()
    rows[3] = {**rows[3], "question": rows[3]["question"] + " " + marker}
    with_bad = schema.to_dataset(rows)
    frame = score.score_pool(poisoned, tok, proc, with_bad, val, tmp_path / "s.parquet", step=SGD.with_(method=method),
                             part_size=len(pool), batch_size=len(pool), progress=False)   # all in one batch
    assert frame["status"].tolist() == ["ok"] * 3 + ["nonfinite"] + ["ok"] * (len(pool) - 4)
    others = [i for i in range(len(pool)) if i != 3]
    clean = score.score_pool(poisoned, tok, proc, pool.select(others), val, tmp_path / "c.parquet",
                             step=SGD.with_(method=method),
                             part_size=len(pool), batch_size=len(pool), progress=False)
    np.testing.assert_allclose(frame["utility"][others], clean["utility"], rtol=1e-4, atol=1e-9)
    assert validate.report(frame)["by_status"]["nonfinite"] == 1


# ------------------------------------------------------------------ interruption and determinism

@pytest.fixture(scope="module")
def on_disk(tmp_path_factory, records, tokenizer, processor):
    """A saved tiny model and pool folder, as `python -m ost.method.score` reads them."""
    from conftest import TINY

    from ost.models import presets
    folder = tmp_path_factory.mktemp("score_cli")
    model = presets.build(TINY, tokenizer, seed=0)
    presets.save(folder / "model", model, tokenizer, processor)
    datasets.DatasetDict({"pool": schema.to_dataset(records[:40]), "validation": schema.to_dataset(records[40:44]),
                          "test": schema.to_dataset(records[44:46])}).save_to_disk(str(folder / "pool"))
    return folder


def _cli(folder, out, *extra):
    return ["--model", str(folder / "model"), "--pool", str(folder / "pool"), "--out", str(out),
            "--part-size", "2", "--batch-size", "2", "--optimizer", "sgd", *extra]


def test_sigkill_mid_run_then_rerun_gives_the_uninterrupted_file(tmp_path, on_disk):
    import os
    import signal
    import subprocess
    import sys
    import time

    from ost.method import score
    from ost.runs import paths
    n_parts = 20
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(paths.ROOT)}
    whole = tmp_path / "whole.parquet"      # the uninterrupted run, on the same one thread as the killed one
    subprocess.run([sys.executable, "-m", "ost.method.score", *_cli(on_disk, whole)], cwd=paths.ROOT, env=env,
                   capture_output=True, text=True, timeout=240, check=True)
    out = tmp_path / "killed.parquet"
    parts = tmp_path / "killed.parquet.parts"
    proc = subprocess.Popen([sys.executable, "-m", "ost.method.score", *_cli(on_disk, out)], cwd=paths.ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while not list(parts.glob("part-*.parquet")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, err.decode()[-2000:]
    done = sorted(parts.glob("part-*.parquet"))
    assert 1 <= len(done) < n_parts and not out.exists()                  # killed mid-run, after a part
    with pytest.raises(ValueError, match="no manifest"):
        score.read_scores(out)
    again = subprocess.run([sys.executable, "-m", "ost.method.score", *_cli(on_disk, out)], cwd=paths.ROOT, env=env,
                           capture_output=True, text=True, timeout=240)
    assert again.returncode == 0, again.stderr[-2000:]
    assert f"{n_parts * 2} records: {n_parts * 2} ok" in again.stdout
    assert out.read_bytes() == whole.read_bytes()
    assert score.read_scores(out)["id"].tolist() == score.read_scores(whole)["id"].tolist()


def test_a_changed_or_half_written_score_file_is_not_taken_as_finished(tmp_path, scoring):
    from ost.method import score
    model, tok, proc, pool, val = scoring
    out = tmp_path / "s.parquet"
    score.score_pool(model, tok, proc, pool, val, out, part_size=5, step=SGD, progress=False)
    assert len(score.read_scores(out)) == len(pool)
    whole = out.read_bytes()
    out.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(ValueError, match="does not match its manifest"):
        score.read_scores(out)


def test_same_parameters_give_byte_identical_scores_and_subsets(tmp_path, scoring):
    import pyarrow.parquet as pq

    from ost.method import score, select
    model, tok, proc, pool, val = scoring
    files = []
    for run in ("a", "b"):
        out = tmp_path / run / "scores.parquet"
        out.parent.mkdir()
        frame = score.score_pool(model, tok, proc, pool, val, out, part_size=5, seed=3, step=SGD, progress=False)
        utility = frame.set_index("id")["utility"].where(frame.set_index("id")["status"] == "ok")
        subsets = {select.subset_name("ost", f): select.top_fraction(utility, f) for f in (0.2, 0.5)}
        select.membership(subsets, frame["id"]).to_parquet(tmp_path / run / "subsets.parquet")
        files.append(out)
    assert files[0].read_bytes() == files[1].read_bytes()
    assert (tmp_path / "a" / "subsets.parquet").read_bytes() == (tmp_path / "b" / "subsets.parquet").read_bytes()
    meta = json.loads(pq.read_schema(files[0]).metadata[b"ost"])
    assert meta["seed"] == 3 and meta["settings"]["seed"] == 3 and meta["rows"] == len(pool)
    manifest = json.loads(score.manifest_path(files[0]).read_text())
    assert manifest["seed"] == 3 and manifest["status"] == {"ok": len(pool)}
    other = score.score_pool(model, tok, proc, pool, val, tmp_path / "c.parquet", part_size=5, seed=4, step=SGD,
                             progress=False)
    assert json.loads(pq.read_schema(tmp_path / "c.parquet").metadata[b"ost"])["seed"] == 4
    assert other["utility"].tolist() == frame["utility"].tolist()         # scoring draws no random numbers


def test_your_own_data_end_to_end_every_record_accounted_for(tmp_path, on_disk, records, capsys):
    """LLaVA JSON with a broken record, loaded in skip mode, saved as a pool folder, scored by the CLI:
    the score file has every record once and the printed report names the skipped one."""
    from ost.method import score
    path, recs = _llava_copy(tmp_path, _set(1, image="images/gone.png"))
    with pytest.warns(UserWarning, match="1 of 4 records skipped"):
        pool = loaders.load_llava_json(path, on_error="skip")
    datasets.DatasetDict({"pool": pool, "validation": schema.to_dataset(records[40:44])}).save_to_disk(
        str(tmp_path / "mine"))
    out = tmp_path / "scores.parquet"
    score.main(["--model", str(on_disk / "model"), "--pool", str(tmp_path / "mine"), "--out", str(out),
                "--optimizer", "sgd"])
    frame = score.read_scores(out)
    assert frame["id"].tolist() == pool["id"] and len(frame) == len(recs)
    assert frame["status"].tolist() == ["ok", "skipped:image_missing", "ok", "ok"]
    printed = capsys.readouterr().out
    assert "4 records: 3 ok, 1 not scored or excluded" in printed
    assert "skipped:image_missing: 1" in printed and "mathv-0001: " in printed and "images/gone.png" in printed
