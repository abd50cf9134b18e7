"""Map real-world SFT data into the sample schema of `ost.data`, so selection runs on it unchanged.

Two sources: a LLaVA-style JSON list (MathV360K and friends) with images on disk, and a Hugging Face
dataset saved with `save_to_disk`. Fields the source lacks get the defaults of real data: `noise`
"clean" (nothing is planted), `difficulty` 0 (unknown), `task` "real". Broken input fails loudly,
naming the file, the record and the field, rather than being skipped in silence.
"""
import json
from pathlib import Path

import datasets
from PIL import Image

from .data import FIELDS, extract_final, to_dataset

SHORT_ANSWER = 20          # a gpt turn this short with no "Answer:" line is the final itself ("12")
REQUIRED = ("question", "answer", "image")
FORMATS = ("a LLaVA-style .json file (list of records with 'image' and 'conversations')",
           "a folder written by datasets' save_to_disk (dataset_dict.json, or dataset_info.json + state.json)")


def _final(answer: str, given=None) -> str:
    """An explicit final wins; else the last `Answer:` line; else a short answer is its own final."""
    if given is not None:
        return str(given).strip()
    stated = extract_final(answer)
    if stated:
        return stated
    return answer.strip() if len(answer.strip()) <= SHORT_ANSWER else ""


def _defaults(rec: dict, task: str = "real") -> dict:
    """Fill the optional fields the way real (unlabelled) data needs them, in FIELDS order."""
    rec["final"] = _final(rec["answer"], rec.get("final"))
    rec.setdefault("task", task)
    rec["difficulty"] = int(rec.get("difficulty", 0))
    rec.setdefault("noise", "clean")
    rec.setdefault("group", rec["id"])
    return {k: rec[k] for k in FIELDS}


def read_llava_json(path, image_root=None, task="real") -> list:
    """Records (dicts in FIELDS order, PIL RGB images) from a LLaVA-style JSON list.

    Only the first human→gpt turn pair of each conversation is used: the schema holds one question
    and one answer per sample. `group` is the image path as written in the file, so near-duplicates
    that reuse an image share a group.
    """
    path = Path(path)
    root = Path(image_root) if image_root is not None else path.parent
    data = json.loads(path.read_text(encoding="utf-8"))
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a JSON list of records, got {type(data).__name__}")
    records = []
    for i, r in enumerate(data):
        rid = str(r["id"]) if r.get("id") is not None else f"{path.stem}-{i:06d}"
        where = f"{path}: record {i} (id {rid!r})"
        for field in ("conversations", "image"):
            if field not in r:
                raise ValueError(f"{where}: missing field {field!r}")
        turns = r["conversations"]
        roles = [t.get("from") for t in turns[:2]] if isinstance(turns, list) else None
        if roles != ["human", "gpt"]:
            raise ValueError(f"{where}: field 'conversations' must start with a human turn then a gpt "
                             f"turn, got roles {roles}")
        image_path = root / r["image"]
        if not image_path.is_file():
            raise FileNotFoundError(f"{where}: field 'image': no image file at {image_path}")
        with Image.open(image_path) as im:
            image = im.convert("RGB")
        rec = {"id": rid, "image": image, "question": turns[0]["value"].replace("<image>", "").strip(),
               "answer": turns[1]["value"], "group": str(r["image"])}
        rec.update({k: r[k] for k in ("final", "task", "difficulty", "noise") if k in r})
        records.append(_defaults(rec, task))
    return records


def load_llava_json(path, image_root=None, task="real") -> datasets.Dataset:
    """A LLaVA-style JSON file as a schema Dataset (see `read_llava_json`)."""
    return to_dataset(read_llava_json(path, image_root=image_root, task=task))


def _pick_split(ds, path, split):
    """A DatasetDict needs one split: the one asked for, else "train"."""
    if not isinstance(ds, datasets.DatasetDict):
        return ds                          # a plain Dataset has no splits; `split` is ignored
    name = split or "train"
    if name not in ds:
        how = "asked for" if split else "no split given and no default"
        raise ValueError(f"{path}: {how} split {name!r}; available splits: {sorted(ds)}")
    return ds[name]


def read_hf_dataset(path, split=None, columns=None) -> list:
    """Records (dicts in FIELDS order, PIL RGB images) from a dataset saved with `save_to_disk`.

    `columns` maps schema field → source column (identity by default). Without a group column,
    `group` is the id: the image path stored on disk is only a basename, too weak to group by.
    """
    columns = dict(columns or {})
    unknown = set(columns) - set(FIELDS)
    if unknown:
        raise ValueError(f"columns maps unknown field(s) {sorted(unknown)}; schema fields: {list(FIELDS)}")
    ds = _pick_split(datasets.load_from_disk(str(path)), path, split)
    available = ds.column_names
    source = {}
    for field in FIELDS:
        col = columns.get(field, field)
        if col in available:
            source[field] = col
        elif field in REQUIRED or field in columns:
            raise ValueError(f"{path}: field {field!r} needs column {col!r}, which is missing; "
                             f"available columns: {available} (map it with columns={{{field!r}: ...}})")
    if not isinstance(ds.features[source["image"]], datasets.Image):
        raise ValueError(f"{path}: column {source['image']!r} for field 'image' must be a datasets "
                         f"Image feature, got {ds.features[source['image']]}")
    records = []
    for i, row in enumerate(ds):
        rec = {field: row[col] for field, col in source.items()}
        rec["id"] = str(rec["id"]) if rec.get("id") is not None else f"{i:06d}"
        if rec["image"] is None:
            raise ValueError(f"{path}: row {i} (id {rec['id']!r}): field 'image' is empty")
        rec["image"] = rec["image"].convert("RGB")
        rec = {k: v for k, v in rec.items() if v is not None}    # a null optional takes the default
        records.append(_defaults(rec))
    return records


def load_hf_dataset(path, split=None, columns=None) -> datasets.Dataset:
    """A saved HF dataset as a schema Dataset (see `read_hf_dataset`)."""
    return to_dataset(read_hf_dataset(path, split=split, columns=columns))


def load_any(path, **kw) -> datasets.Dataset:
    """Pick the loader from what is on disk, so notebooks take one path setting for any source."""
    p = Path(path)
    if p.is_file() and p.suffix.lower() == ".json":
        return load_llava_json(p, **kw)
    if p.is_dir() and ((p / "dataset_dict.json").is_file()
                       or ((p / "dataset_info.json").is_file() and (p / "state.json").is_file())):
        return load_hf_dataset(p, **kw)
    state = "does not exist" if not p.exists() else "is not a recognised format"
    raise ValueError(f"{p} {state}; accepted: " + "; or ".join(FORMATS))
