"""Map real-world SFT data into the sample schema of `ost.data.schema`, so selection runs on it unchanged.

Two sources: a LLaVA-style JSON list (MathV360K and friends) with images on disk, and a Hugging Face
dataset saved with `save_to_disk`. Fields the source lacks get the defaults of real data: `noise`
"clean" (nothing is planted), `difficulty` 0 (unknown), `task` "real". Broken input fails loudly,
naming the file, the record and the field; with `on_error="skip"` a bad record stays as a row with a
`skipped:<reason>` status instead (`ost.data.validate`), never dropped in silence.
"""
import json
import warnings
from pathlib import Path

import datasets

from ost.data import answers, validate
from ost.data.schema import FIELDS, to_dataset
from ost.data.validate import BadRecord

NO_FINAL = ("no final answer found (" + ", ".join(answers.PATTERNS) + ", a short answer): scored all the same; "
            "evaluation needs one: add a 'final' field or pass final_pattern")
REQUIRED = ("question", "answer", "image")
LLAVA_FIELDS = ("id", "image", "conversations", "final", "task", "difficulty", "noise")
FORMATS = ("a LLaVA-style .json file (list of records with 'image' and 'conversations')",
           "a folder written by datasets' save_to_disk (dataset_dict.json, or dataset_info.json + state.json)",
           "a .parquet file (a Hugging Face dataset's rows, e.g. Geometry3K's problem / answer / choices / images)")
CHOICE_LETTERS = "ABCDEFGH"


def _defaults(rec: dict, task: str = "real", final_pattern=None) -> tuple:
    """(record in FIELDS order, note): the optional fields filled the way real (unlabelled) data needs
    them; a field of the wrong type is a bad record. An explicit `final` wins, else `ost.data.answers` finds
    it in the answer; a record without one is kept with a note (scoring needs only the answer text)."""
    given = rec.get("final")
    if given is not None and not isinstance(given, (str, int, float)):
        raise BadRecord("bad_field", "final", f"field 'final' must be text or a number, got {type(given).__name__}")
    rec["final"] = str(given).strip() if given is not None else answers.find_final(rec["answer"], final_pattern)
    note = "" if rec["final"] else NO_FINAL
    for k in ("task", "noise", "group"):
        if k in rec and not isinstance(rec[k], str):
            raise BadRecord("bad_field", k, f"field {k!r} must be text, got {type(rec[k]).__name__} {rec[k]!r}")
    rec.setdefault("task", task)
    d = rec.get("difficulty", 0)
    d = int(d) if isinstance(d, float) and d.is_integer() else d
    if isinstance(d, bool) or not isinstance(d, (int, float, str)) or not str(d).strip().lstrip("-").isdigit():
        raise BadRecord("bad_field", "difficulty", f"field 'difficulty' must be a whole number, got {d!r}")
    rec["difficulty"] = int(d)
    rec.setdefault("noise", "clean")
    rec.setdefault("group", rec["id"])
    return {k: rec[k] for k in FIELDS}, note


def _notes(*notes) -> str:
    return "; ".join(n for n in notes if n)


def _question(value) -> str:
    q = validate.text(value, "question").replace("<image>", "").strip()
    if not q:
        raise BadRecord("empty_question", "question", "field 'question' holds nothing but the <image> tag")
    return q


def _llava_record(r, rid, root, task, ignore, max_pixels, final_pattern=None) -> tuple:
    """One LLaVA-style record → schema dict, or BadRecord naming the field."""
    unknown = sorted(set(r) - set(LLAVA_FIELDS) - set(ignore))
    if unknown:
        raise BadRecord("unknown_field", unknown[0], f"unknown field(s) {unknown}; known: {list(LLAVA_FIELDS)} "
                                                     f"(pass ignore_fields={unknown} to accept them)")
    for field in ("conversations", "image"):
        if r.get(field) is None:
            raise BadRecord("missing_field", field, f"missing field {field!r}")
    turns = r["conversations"]
    roles = [t.get("from") if isinstance(t, dict) else None for t in turns[:2]] if isinstance(turns, list) else None
    if roles != ["human", "gpt"]:
        raise BadRecord("bad_field", "conversations", "field 'conversations' must start with a human turn then "
                                                      f"a gpt turn, got roles {roles}")
    if not isinstance(r["image"], str):
        raise BadRecord("bad_field", "image", f"field 'image' must be a path, got {type(r['image']).__name__}")
    question, answer = _question(turns[0].get("value")), validate.text(turns[1].get("value"), "answer")
    image, note = validate.open_image(root / r["image"], max_pixels=max_pixels)
    rec = {"id": rid, "image": image, "question": question, "answer": answer, "group": r["image"]}
    rec.update({k: r[k] for k in ("final", "task", "difficulty", "noise") if k in r})
    rec, final_note = _defaults(rec, task, final_pattern)
    return rec, _notes(note, final_note)


def _finish(records: list, on_error: str, source) -> list:
    """Raise mode: plain schema records. Skip mode: every record with a status and a note. Either way
    records without a final answer are counted in one warning: kept, but evaluation cannot use them."""
    no_final = [r["id"] for r in records if r["status"] == "ok" and not r["final"]]
    if no_final:
        warnings.warn(f"{source}: {len(no_final)} of {len(records)} records have no final answer we can find "
                      f"(e.g. {no_final[:3]}); they are scored all the same, but evaluation needs one: add "
                      "'final' fields or pass final_pattern (a regex with one group)", stacklevel=3)
    if on_error == "raise":
        return [{k: r[k] for k in FIELDS} for r in records]
    validate.warn_skipped(source, records)
    return records


def record_id(r, i: int, path) -> str:
    """The id a LLaVA record gets: its own when usable, else `<file stem>-<index>` (a bad id is refused,
    and its row keeps this one), so a selection can be mapped back onto the file's records."""
    given = r.get("id") if isinstance(r, dict) else None
    usable = isinstance(given, (str, int)) and not isinstance(given, bool) and str(given).strip()
    return str(given) if usable else f"{Path(path).stem}-{i:06d}"


def read_llava_json(path, image_root=None, task="real", on_error="raise", ignore_fields=(),
                    max_pixels=validate.MAX_PIXELS, final_pattern=None) -> list:
    """Records (dicts in FIELDS order, PIL RGB images) from a LLaVA-style JSON list.

    Only the first human→gpt turn pair of each conversation is used: the schema holds one question
    and one answer per sample. `group` is the image path as written in the file, so near-duplicates
    that reuse an image share a group. A bad record raises (naming file, record and field), or with
    `on_error="skip"` becomes a `skipped:<reason>` row (see `ost.data.validate`); fields the schema does
    not know are refused unless listed in `ignore_fields`. The final answer: `final` if given, else
    `ost.data.answers.find_final` (with `final_pattern`, a regex of your own, tried first).
    """
    validate.check_on_error(on_error)
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    raw = path.read_bytes().decode("utf-8", errors="surrogateescape")   # bad bytes → per-record not_utf8
    try:
        data = json.loads(raw)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON: {err}") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    if not data:
        raise ValueError(f"{path}: the list holds no records")
    records, ids = [], validate.Ids()
    for i, r in enumerate(data):
        given = r.get("id") if isinstance(r, dict) else None
        rid = record_id(r, i, path)
        where = f"{path}: record {i} (id {rid!r})"
        try:
            if not isinstance(r, dict):
                raise BadRecord("not_a_record", None, f"expected a JSON object, got {type(r).__name__}")
            if given is not None and (rid != str(given) or not rid.strip()):
                raise BadRecord("bad_field", "id", f"field 'id' must be non-empty text or a whole number, "
                                                   f"got {given!r}")
            ids.claim(rid, f"record {i}")
            rec, note = _llava_record(r, rid, root, task, ignore_fields, max_pixels, final_pattern)
            records.append({**rec, "status": "ok", "note": note})
        except BadRecord as bad:
            if on_error == "raise":
                raise bad.at(where) from None
            turns = r.get("conversations") if isinstance(r, dict) else None
            partial = {"group": r.get("image")} if isinstance(r, dict) else {}
            if isinstance(turns, list) and len(turns) > 1 and all(isinstance(t, dict) for t in turns[:2]):
                partial.update(question=turns[0].get("value"), answer=turns[1].get("value"))
            records.append(validate.skipped(rid, bad.at(where), {**partial, "task": task}))
    return _finish(records, on_error, path)


def load_llava_json(path, image_root=None, task="real", **kw) -> datasets.Dataset:
    """A LLaVA-style JSON file as a schema Dataset (see `read_llava_json`; skip mode adds `status`, `note`)."""
    return to_dataset(read_llava_json(path, image_root=image_root, task=task, **kw))


def _pick_split(ds, path, split):
    """A DatasetDict needs one split: the one asked for, else "train"."""
    if not isinstance(ds, datasets.DatasetDict):
        return ds                          # a plain Dataset has no splits; `split` is ignored
    name = split or "train"
    if name not in ds:
        how = "asked for" if split else "no split given and no default"
        raise ValueError(f"{path}: {how} split {name!r}; available splits: {sorted(ds)}")
    return ds[name]


def _one_image_column(ds, columns):
    """(dataset, columns): Geometry3K-style `images` (a list per row) → an `image` column of one image per
    row (a row with none or several gets none, and is refused as missing_field)."""
    name = columns.get("image", "image")
    if name not in ds.column_names and "images" in ds.column_names:
        name = "images"
    feature = ds.features.get(name)
    if isinstance(feature, (datasets.Sequence, list)):
        inner = feature.feature if isinstance(feature, datasets.Sequence) else feature[0]
        if isinstance(inner, datasets.Image):
            first = [v[0] if isinstance(v, list) and len(v) == 1 else None for v in ds.cast_column(
                name, datasets.Sequence(datasets.Image(decode=False)))[name]]
            ds = ds.remove_columns(name).add_column("image", first, feature=datasets.Image(decode=False))
            ds = ds.cast_column("image", datasets.Image())
            columns = {k: v for k, v in columns.items() if k != "image"}
    return ds, columns


def _with_choices(question: str, choices) -> str:
    """Multiple choice as the question shows it: "… Choices: A. 3 B. 4"."""
    if not choices:
        return question
    return question + " Choices: " + " ".join(f"{CHOICE_LETTERS[k]}. {c}" for k, c in enumerate(choices))


def read_hf_dataset(path, split=None, columns=None, on_error="raise", ignore_fields=(),
                    max_pixels=validate.MAX_PIXELS, final_pattern=None, choices_column="choices") -> list:
    """Records (dicts in FIELDS order, PIL RGB images) from a dataset saved with `save_to_disk`.

    `columns` maps schema field → source column (identity by default). Without a group column,
    `group` is the id: the image path stored on disk is only a basename, too weak to group by.
    A column that maps to no field is refused unless listed in `ignore_fields` (a typo in `columns`
    would otherwise drop the data it meant to map). `path` may also be a .parquet file. A `choices`
    column (a list per row, Geometry3K-style) is written into the question as "Choices: A. … B. …", and
    an `images` column holding one image per row stands for `image`. Bad rows raise or, with `on_error="skip"`, become
    `skipped:<reason>` rows, as in `read_llava_json`.
    """
    validate.check_on_error(on_error)
    columns = dict(columns or {})
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise ValueError(f"columns maps unknown field(s) {sorted(unknown)}; schema fields: {list(FIELDS)}")
    if Path(path).suffix.lower() == ".parquet":
        ds = datasets.Dataset.from_parquet(str(path), keep_in_memory=True)
    else:
        ds = _pick_split(datasets.load_from_disk(str(path)), path, split)
    ds, columns = _one_image_column(ds, columns)
    available = ds.column_names
    source = {}
    for field in FIELDS:
        col = columns.get(field, field)
        if col in available:
            source[field] = col
        elif field in REQUIRED or field in columns:
            raise ValueError(f"{path}: field {field!r} needs column {col!r}, which is missing; "
                             f"available columns: {available} (map it with columns={{{field!r}: ...}})")
    choices = choices_column if choices_column in available else None
    unused = sorted(set(available) - set(source.values()) - set(ignore_fields) - {choices})
    if unused:
        raise ValueError(f"{path}: column(s) {unused} map to no schema field {list(FIELDS)}; map them with "
                         f"columns={{field: column}} or pass ignore_fields={unused}")
    if not isinstance(ds.features[source["image"]], datasets.Image):
        raise ValueError(f"{path}: column {source['image']!r} for field 'image' must be a datasets "
                         f"Image feature, got {ds.features[source['image']]}")
    ds = ds.cast_column(source["image"], datasets.Image(decode=False))   # decoded here, one row at a time
    records, ids = [], validate.Ids()
    for i, row in enumerate(ds):
        rec = {field: row[col] for field, col in source.items()}
        given = rec.get("id")
        rid = str(given) if given is not None and str(given).strip() else f"{i:06d}"
        where = f"{path}: row {i} (id {rid!r})"
        try:
            if given is not None and not str(given).strip():
                raise BadRecord("bad_field", "id", f"field 'id' is empty ({given!r})")
            ids.claim(rid, f"row {i}")
            image = rec.pop("image")
            if image is None or (image.get("bytes") is None and not image.get("path")):
                raise BadRecord("missing_field", "image", "field 'image' is empty")
            src = image["bytes"] if image.get("bytes") is not None else image["path"]   # b"" → image_empty
            rec["image"], note = validate.open_image(src, max_pixels=max_pixels)
            rec["question"] = _with_choices(_question(rec.get("question")), row[choices] if choices else None)
            rec["answer"] = validate.text(rec.get("answer"), "answer")
            rec = {k: v for k, v in rec.items() if v is not None}    # a null optional takes the default
            rec["id"] = rid
            rec, final_note = _defaults(rec, final_pattern=final_pattern)
            records.append({**rec, "status": "ok", "note": _notes(note, final_note)})
        except BadRecord as bad:
            if on_error == "raise":
                raise bad.at(where) from None
            records.append(validate.skipped(rid, bad.at(where), rec))
    return _finish(records, on_error, path)


def load_hf_dataset(path, split=None, columns=None, **kw) -> datasets.Dataset:
    """A saved HF dataset as a schema Dataset (see `read_hf_dataset`; skip mode adds `status`, `note`)."""
    return to_dataset(read_hf_dataset(path, split=split, columns=columns, **kw))


def load_any(path, **kw) -> datasets.Dataset:
    """Pick the loader from what is on disk, so notebooks take one path setting for any source."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        return load_llava_json(p, **kw)
    if p.is_file() and p.suffix.lower() == ".parquet":
        return load_hf_dataset(p, **kw)
    if p.is_dir() and ((p / "dataset_dict.json").is_file()
                       or ((p / "dataset_info.json").is_file() and (p / "state.json").is_file())):
        return load_hf_dataset(p, **kw)
    state = "does not exist" if not p.exists() else "is not a recognised format"
    raise ValueError(f"{p} {state}; accepted: " + "; or ".join(FORMATS))
