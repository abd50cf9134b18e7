"""A stage's record in an output folder: the settings it ran with, how long it took and what it reported.

`python -m ost` runs its stages into one folder, each writing `<stage>.json` last. A rerun with the same settings
finds the record and the stage's outputs and skips the stage; a changed setting (or a missing output: a folder
committed without its weights) runs it again, and the stages after it, whose settings hold the earlier ones'.
"""
import json
from pathlib import Path

from ost.runs.files import replace_text


def read(out, stage: str) -> dict:
    """`<stage>.json` of `out`, or {} when the stage has not run there."""
    path = Path(out) / f"{stage}.json"
    return json.loads(path.read_text()) if path.exists() else {}


def settings_of(out, stage: str):
    """The settings a stage ran with in `out` (None when it has not run): what the next stage's settings hold."""
    return read(out, stage).get("settings")


def done(out, stage: str, settings: dict, outputs) -> bool:
    """Whether `stage` already ran in `out` with these settings and every one of its `outputs` (names in `out`) is
    there: a record copied without them does not count."""
    out = Path(out)
    return read(out, stage).get("settings") == settings and all((out / name).exists() for name in outputs)


def write(out, stage: str, settings: dict, seconds: float, **extra) -> dict:
    """`<stage>.json`, written last and atomically, so a stage killed half-way has no record; returned as a rerun
    reads it."""
    record = {"settings": settings, "seconds": seconds, **extra}
    replace_text(Path(out) / f"{stage}.json", json.dumps(record, indent=1, default=str))
    return read(out, stage)
