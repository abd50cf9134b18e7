"""Stage 03, select: the subset a `Selection` keeps from a scored pool, and the file subsets are kept in.

Stage 02 leaves two files per pool: every row's utility and status (`scores.parquet`, `ost.method.score`) and its
validation shift (`shift.parquet`, `ost.method.shift`); `read_scored` joins them. `choose` applies the Selection's
rule (a name of `ost.method.coverage.RULES`) to the usable rows: notebook 03 and `ost select` both call it. Subsets
are kept as one boolean column per subset over every pool id (`write`; `read` checks them back): notebook 03
writes OST's, notebook 04 adds the baselines', `ost select` writes its one subset the same way.
"""
from pathlib import Path

import pandas as pd

from ost import runs
from ost.method import coverage, score, select
from ost.method import shift as shift_stage
from ost.runs.settings import Selection


def read_scored(scores, shift=None) -> pd.DataFrame:
    """Stage 02's files as one frame (index = id): utility, loss and status, checked against the score file's
    manifest, and with `shift` (a shift.parquet) each row's validation shift."""
    frame = score.read_scores(scores).set_index("id")
    if shift is not None:
        frame = frame.join(shift_stage.read(shift)[["shift"]])
    return frame


def choose(scored: pd.DataFrame, fraction: float, setting: Selection = Selection()) -> list:
    """The ids `setting` keeps: `fraction` of the usable (status ok) rows of `scored` (`read_scored`)."""
    usable = scored[scored["status"] == "ok"].rename_axis("id").reset_index()
    return coverage.choose(usable, fraction, setting.selector, seed=setting.selector_seed)


def write(subsets: dict, ids, path, meta: dict) -> Path:
    """subsets.parquet: each subset ({name: ids}) a boolean column over the pool's `ids`, with the settings that
    made them in the file's metadata (`ost.runs.read_meta`)."""
    return runs.write_parquet(select.membership(subsets, ids), path, meta=meta, index=True)


def read(path, ids=None) -> pd.DataFrame:
    """subsets.parquet: one boolean column per subset over the pool's ids; with `ids`, checked to list exactly those
    ids in that order (a subset table of another pool is refused)."""
    member = pd.read_parquet(path)
    not_bool = [c for c in member.columns if member[c].dtype != bool]
    if not_bool:
        raise ValueError(f"{path}: column(s) {not_bool} are not booleans: not a subset table")
    if ids is not None and member.index.tolist() != list(ids):
        raise ValueError(f"{path} does not list the pool's ids in order: rerun notebook 03 for this pool")
    return member
