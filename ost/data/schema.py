"""The sample schema every source maps into, and the generated pool as a DatasetDict on disk.

A sample is `{id, image, question, answer, final, task, difficulty, noise, group}`: `answer` is the
short rationale plus the final line the model is trained to write, `final` the answer it states
(what exact match compares), `noise` the planted label ("clean" for real data), `group` the item
that near-duplicates share (for real data, the image).
"""
import hashlib
import json
import re
from pathlib import Path

import datasets

from ost import runs
from ost.data import pool
from ost.runs import paths, settings

FIELDS = ("id", "image", "question", "answer", "final", "task", "difficulty", "noise", "group")
FEATURES = datasets.Features({
    "id": datasets.Value("string"), "image": datasets.Image(), "question": datasets.Value("string"),
    "answer": datasets.Value("string"), "final": datasets.Value("string"), "task": datasets.Value("string"),
    "difficulty": datasets.Value("int32"), "noise": datasets.Value("string"), "group": datasets.Value("string"),
})
SPLITS = ("pool", "validation", "test")
POOL_DEFAULTS = settings.Pool().pool_params()     # the main scale; `seed` is the config's `pool_seed`


def extract_final(text: str) -> str:
    """The final answer stated on the last `Answer: …` line, '' when there is none."""
    if "Answer:" not in text:
        return ""
    return text.rsplit("Answer:", 1)[1].strip().split("\n", 1)[0].strip().rstrip(".").strip()


def normalize_final(text: str) -> str:
    """Compare finals loosely on form, strictly on content: case, spaces, a trailing period."""
    return re.sub(r"\s+", " ", str(text)).strip().rstrip(".").strip().lower()


STATUS_FEATURES = datasets.Features({**FEATURES, "status": datasets.Value("string"),
                                     "note": datasets.Value("string")})


def to_dataset(records: list) -> datasets.Dataset:
    """Schema records as a Dataset; records read with `on_error="skip"` keep their `status` and `note`."""
    features = STATUS_FEATURES if records and "status" in records[0] else FEATURES
    return datasets.Dataset.from_dict({k: [r[k] for r in records] for k in features}, features=features)


def pool_params(**overrides) -> dict:
    unknown = set(overrides) - set(POOL_DEFAULTS)
    if unknown:
        raise TypeError(f"unknown pool parameter(s) {sorted(unknown)}; known: {sorted(POOL_DEFAULTS)}")
    return {**POOL_DEFAULTS, **overrides}


def pool_dir(params: dict) -> Path:
    """data/pools/synth-<hash of the parameters>: a cache key, so each setting is built once."""
    # extra_kinds and n_cal joined the parameters later: keyed only when set, so existing pools keep their folders
    params = {k: v for k, v in params.items() if not (k in ("extra_kinds", "n_cal") and not v)}
    key = hashlib.sha256(json.dumps([pool.GENERATOR_VERSION, params], sort_keys=True).encode()).hexdigest()[:10]
    return paths.DATA / "pools" / f"synth-{key}"


def build_pool(**overrides) -> datasets.DatasetDict:
    """Generate the pool and its clean validation, test and (with `n_cal`) calibration splits (seeded, in memory)."""
    p = pool_params(**overrides)
    gen = {k: p[k] for k in ("n_groups", "copies", "noise_rate", "systematic_share", "carry_share",
                             "duplicate_rate", "extra_kinds", "seed")}
    splits = {"pool": to_dataset(pool.make_pool_records(**gen)),
              "validation": to_dataset(pool.make_clean_records("val", p["n_val"], seed=p["seed"])),
              "test": to_dataset(pool.make_clean_records("test", p["n_test"], seed=p["seed"]))}
    if p["n_cal"]:
        splits["calibration"] = to_dataset(pool.make_calibration_records(p["n_cal"], p["copies"], seed=p["seed"]))
    return datasets.DatasetDict(splits)


def config_pool(config: dict, **changes) -> datasets.DatasetDict:
    """The pool a config (or notebook parameters) names through its `ost.runs.settings.Pool` keys, built
    once and loaded; `changes` override single fields (`pool_seed=1`)."""
    return load_pool(make_pool(**settings.Pool.from_params({**config, **changes}).pool_params()))


def make_pool(out_dir=None, overwrite=False, **overrides) -> Path:
    """Build the pool once and save it as a DatasetDict; returns its folder (reused when present)."""
    p = pool_params(**overrides)
    out = Path(out_dir) if out_dir else pool_dir(p)
    if (out / "params.json").exists() and not overwrite:
        return out
    build_pool(**p).save_to_disk(str(out))
    (out / "params.json").write_text(json.dumps(p, indent=1, sort_keys=True))
    return out


def load_pool(folder) -> datasets.DatasetDict:
    """A pool folder (generated, or your own DatasetDict with `pool` and `validation` splits), checked
    on load: schema columns, unique non-empty ids, non-empty text, an image on every `ok` row."""
    folder = Path(folder)
    if folder.is_file():
        raise ValueError(f"{folder} is a file, and a pool is a folder with 'pool' and 'validation' splits: for a "
                         f"LLaVA-style JSON file run `python -m ost run {folder} --val VAL --out DIR` (or "
                         "`prepare`, which writes that folder to DIR/prepared)")
    if not (folder / "dataset_dict.json").exists():
        raise FileNotFoundError(f"no pool at {folder}: for the synthetic pool run notebooks/00_make_pool.ipynb "
                                "(or ost.data.schema.make_pool); for your own data, `python -m ost prepare DATA --val VAL "
                                "--out DIR` writes one to DIR/prepared")
    dd = datasets.load_from_disk(str(folder))
    missing = {"pool", "validation"} - set(dd)
    if missing:
        raise ValueError(f"{folder}: split(s) {sorted(missing)} missing; a pool folder holds 'pool' and "
                         f"'validation' (found {sorted(dd)})")
    for name, split in dd.items():
        check_split(split, f"{folder}, split {name!r}")
    return dd


def load_run_pool(run: str) -> datasets.DatasetDict:
    """The pool notebook 00 made for this run (its folder is recorded in the run's pool.json)."""
    return load_pool(paths.ROOT / runs.read_json(run, "pool.json")["folder"])


def check_split(ds: datasets.Dataset, where: str):
    """Column checks, no image decoding (fast on 100k rows): a bad row names its index, id and field.
    Rows already marked `skipped:*` (a loader's skip mode) are allowed to be empty."""
    extra = set(ds.column_names) - set(STATUS_FEATURES)
    lacking = set(FIELDS) - set(ds.column_names)
    if extra or lacking:
        raise ValueError(f"{where}: columns {ds.column_names} do not match the schema {list(FIELDS)} "
                         f"(unknown: {sorted(extra)}, missing: {sorted(lacking)}); rebuild the pool "
                         "(make_pool(overwrite=True)) or map your data with ost.data.loaders")
    ids = ds["id"]
    status = ds["status"] if "status" in ds.column_names else ["ok"] * len(ds)
    images = ds.cast_column("image", datasets.Image(decode=False))["image"]
    seen = {}
    for i, rid in enumerate(ids):
        at = f"{where}: row {i} (id {rid!r})"
        if not rid:
            raise ValueError(f"{at}: field 'id' is empty")
        if rid in seen:
            raise ValueError(f"{at}: field 'id' duplicates row {seen[rid]}")
        seen[rid] = i
    for field in ("question", "answer"):
        for i, v in enumerate(ds[field]):
            if status[i] == "ok" and not (v or "").strip():
                raise ValueError(f"{where}: row {i} (id {ids[i]!r}): field {field!r} is empty")
    for i, im in enumerate(images):
        if status[i] == "ok" and not (im and (im.get("bytes") or im.get("path"))):
            raise ValueError(f"{where}: row {i} (id {ids[i]!r}): field 'image' is empty")


def composition(ds: datasets.Dataset, column: str = "noise") -> dict:
    """Count of samples per value of a label column, largest first (ties by name: same order every run)."""
    from collections import Counter
    return dict(sorted(Counter(ds[column]).items(), key=lambda kv: (-kv[1], kv[0])))


def content_key(sample) -> str:
    """Hash of what a model sees of a sample (image pixels, question, answer), whatever its id."""
    h = hashlib.sha1()
    image = sample.get("image")
    if image is not None:
        h.update(f"{image.mode}{image.size}".encode() + image.tobytes())
    h.update(f"\x00{sample.get('question', '')}\x00{sample.get('answer', '')}".encode())
    return h.hexdigest()


def overlap(pool_ds, validation) -> list:
    """(pool id, validation id) pairs that share an id or their content: a validation set that
    overlaps the pool makes a sample's utility partly its own training loss, so OST refuses it."""
    val_ids = {i: i for i in validation["id"]}
    val_keys = {content_key(s): s["id"] for s in validation}
    out = []
    for s in pool_ds:
        hit = val_ids.get(s["id"]) or val_keys.get(content_key(s))
        if hit is not None:
            out.append((s["id"], hit))
    return out
