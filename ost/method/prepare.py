"""Stage 00 for your own data: DATA and a validation set read, checked, and split into the sets the method needs.

The pool is every record of DATA, each with a status (a record a loader could not use is kept as
`skipped:<reason>`, never dropped). The validation set is VAL, or a seeded slice of DATA's usable records with no
copy left in the pool; a seeded share of it becomes the calibration set of the toxic flags
(`ost.method.toxic.split_calibration`): it joins the warm-up as DATA does, and the rest is what utility is measured
on. The artifact is one `save_to_disk` folder (`prepared/`: pool, validation, calibration) that `load` reads.
The notebooks' synthetic pool takes the same shape from `ost.data.schema.make_pool` (stage 00's `Pool` settings).
"""
import hashlib
import time
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from ost.data import loaders, schema
from ost.method import toxic
from ost.runs import records
from ost.runs.settings import _Stage

FOLDER = "prepared"       # the artifact, in the output folder


@dataclass(frozen=True)
class Prepare(_Stage):
    """Where the data come from and how the sets are carved ("" and 0 mean not given)."""
    data: str = ""                 # a LLaVA-style JSON file, a save_to_disk folder or a .parquet file
    val: str = ""                  # the validation set, same formats (clean: utility is measured on it)
    val_fraction: float = 0.0      # or: carve a seeded slice of DATA's usable records as the validation set
    final_pattern: str = ""        # a regex with one group for the final answer, tried before the built-in ones
    columns: tuple = ()            # "field=column" pairs naming a folder's or parquet file's columns
    split_seed: int = 0            # seeds the validation slice and the calibration share
    calibration_fraction: float = toxic.CALIBRATION_FRACTION   # share of the validation set that calibrates flags

    def __post_init__(self):
        if not self.data:
            raise ValueError("Prepare needs DATA: a LLaVA-style JSON file, a save_to_disk folder or a .parquet file")
        if bool(self.val) == bool(self.val_fraction):
            raise ValueError("give a validation set (--val VAL) or carve one from DATA (--val-fraction 0.05)")
        bad = [c for c in self.columns if c.count("=") != 1]
        if bad:
            raise ValueError(f"columns are FIELD=COLUMN pairs, got {bad}")

    def record(self) -> dict:
        """What the stage's record holds: the inputs resolved, with a fingerprint of their contents, so an input
        edited in place is prepared again (and everything after it)."""
        val = Path(self.val).resolve() if self.val else None
        return dict(data=str(Path(self.data).resolve()), val=str(val) if val else None,
                    val_fraction=self.val_fraction or None, final_pattern=self.final_pattern or None,
                    columns=self.column_map(), seed=self.split_seed, calibration_fraction=self.calibration_fraction,
                    contents=[fingerprint(self.data), fingerprint(self.val or None)])

    def column_map(self) -> dict | None:
        return dict(c.split("=") for c in self.columns) or None


def fingerprint(path) -> str | None:
    """A file's sha256, or a folder's hash of every file's name, size and mtime."""
    if path is None:
        return None
    path = Path(path)
    if not path.is_dir():
        with open(path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()[:20]     # streamed: DATA may be large
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        st = f.stat()
        h.update(f"{f.relative_to(path)}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()[:20]


def _carve(pool, fraction: float, seed: int):
    """A seeded `fraction` of the pool's usable records with no copy in the pool, as the validation set."""
    ok = [i for i, s in enumerate(pool["status"]) if s == "ok"]
    keys = pd.Series([schema.content_key(pool[i]) for i in ok])
    unique = [i for i, dup in zip(ok, keys.duplicated(keep=False)) if not dup]    # a copy would stay in the pool
    n = max(1, round(fraction * len(ok)))
    if n >= len(unique):
        raise ValueError(f"--val-fraction {fraction} asks for {n} of {len(unique)} usable records with "
                         "no copy in DATA: too few left to warm and score")
    picked = set(np.random.default_rng(seed).choice(unique, n, replace=False).tolist())
    return pool.select([i for i in range(len(pool)) if i not in picked]), pool.select(sorted(picked))


def prepare(settings: Prepare, out) -> dict:
    """`out/prepared/` (pool, validation, calibration) and `out/prepare.json`, whose `report` counts the records by
    status; skipped when `out` already holds them for these settings and inputs. Returns the record."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    stated = settings.record()
    if records.done(out, "prepare", stated, [FOLDER]):
        return records.read(out, "prepare")
    start = time.perf_counter()
    columns = settings.column_map()
    kw = dict(on_error="skip", final_pattern=settings.final_pattern or None,
              **({"columns": columns} if columns else {}))
    pool = loaders.load_any(settings.data, **kw)
    if settings.val:
        validation = loaders.load_any(settings.val, **kw)
    else:
        pool, validation = _carve(pool, settings.val_fraction, settings.split_seed)
    bad = [(i, s) for i, s in zip(validation["id"], validation["status"]) if s != "ok"]
    if bad:
        validation = validation.select([i for i, s in enumerate(validation["status"]) if s == "ok"])
    shared = schema.overlap(pool, validation)
    if shared:
        raise ValueError(f"the validation set shares {len(shared)} record(s) with DATA (pool id = validation id: "
                         f"{', '.join(f'{a} = {b}' for a, b in shared[:5])}): remove them from one of the two")
    validation, calibration = toxic.split_calibration(validation, settings.calibration_fraction, settings.split_seed)
    datasets.DatasetDict({"pool": pool, "validation": validation, "calibration": calibration}).save_to_disk(
        str(out / FOLDER))
    no_final = sum(1 for s, f in zip(pool["status"], pool["final"]) if s == "ok" and not f)
    source = "VAL" if settings.val else (f"a seeded {settings.val_fraction:.0%} of DATA's usable records "
                                         "(a validation set should be clean: check it)")
    report = dict(pool=len(pool), validation=len(validation), calibration=len(calibration),
                  status=pd.Series(pool["status"]).value_counts().sort_index().to_dict(), no_final=no_final,
                  validation_dropped=[list(b) for b in bad], validation_source=source)
    return records.write(out, "prepare", stated, time.perf_counter() - start, report=report)


def load(out) -> datasets.DatasetDict:
    """The prepared sets of `out` (pool, validation, calibration)."""
    out = Path(out)
    if not records.read(out, "prepare") or not (out / FOLDER).exists():
        raise FileNotFoundError(f"{out} holds no prepared data: run `python -m ost prepare DATA --val VAL "
                                f"--out {out}` (or `python -m ost run …`) first")
    return datasets.load_from_disk(str(out / FOLDER))
