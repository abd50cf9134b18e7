"""The SFT runs behind the paper's table: the target fine-tuned on every subset, protocol and seed.

Two protocols, as the paper uses them:
* `same_epochs`: every subset is trained for the same number of epochs, so a 20 % subset costs about
  20 % of Full-SFT (the training-cost reduction the paper reports for top-50);
* `fixed_compute`: every subset gets the optimizer steps of one Full-SFT run (a small subset is seen
  for more epochs), which is how the paper's top-20 beats Full-SFT.

Each finished run is appended to a JSON-lines progress log at once, so an interrupted experiment resumes
where it stopped. A logged run is reused only when its settings and the exact ids it trained on (a
sha256 of them) match; a subset that changed, under the same name, is trained again.
"""
import functools
import hashlib
import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch

from ost import runs
from ost.data import pool
from ost.models import base, train
from ost.runs.settings import SFT

PROTOCOLS = ("same_epochs", "fixed_compute")


def split_name(column: str) -> tuple:
    """'ost-cover@0.2' → ('ost-cover', 0.2); 'full' → ('full', 1.0)."""
    method, _, fraction = column.partition("@")
    return method, float(fraction) if fraction else 1.0


def resolve(columns, wanted) -> list:
    """The subsets.parquet columns meant by `wanted`: each a column name, or a method with exactly one
    column (`"oracle-clean"` → `"oracle-clean@0.62"`, whose fraction depends on the pool)."""
    columns, out = list(columns), []
    for name in wanted:
        if name in columns:
            out.append(name)
            continue
        matches = [c for c in columns if split_name(c)[0] == name]
        if len(matches) != 1:
            raise ValueError(f"subset {name!r} names {len(matches)} columns of subsets.parquet "
                             f"({matches or columns}); give one of them")
        out.append(matches[0])
    return out


def plan(grid: dict, seeds) -> list:
    """(column, protocol, seed) for every run of `grid` ({protocol: [columns]}), seed by seed: Full-SFT
    first, once per seed (it is its own fixed compute), then each protocol's columns in order."""
    unknown = set(grid) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; known: {PROTOCOLS}")
    runs = []
    for seed in seeds:
        runs.append(("full", "same_epochs", seed))
        runs += [(c, p, seed) for p in PROTOCOLS for c in grid.get(p, ())]
    return runs


def _key(row) -> tuple:
    return row["subset"], row["protocol"], row["seed"]


def full_steps(n_pool: int, batch_size: int, epochs: float) -> int:
    """Optimizer steps of one Full-SFT run, as Trainer counts them: what every fixed-compute run gets."""
    return math.ceil(math.ceil(n_pool / batch_size) * epochs)


def subset_sha(ids) -> str:
    """Fingerprint of the ids a run trains on, in pool order: what makes a logged run reusable."""
    return hashlib.sha256("\n".join(map(str, ids)).encode()).hexdigest()[:16]


@functools.lru_cache(maxsize=1)
def _encoded_pool(path) -> list:
    """The pool's rows as `train.encode` made them for the target, read once per worker process."""
    return torch.load(path, weights_only=True)


def _run_one(pool_ds, test_ds, chosen, *, column, protocol, seed, target, epochs, lr, batch_size, full_steps,
             settings, sha, threads=None, encoded=None) -> dict:
    """One SFT run and its test score. Runs in a worker process too, so it takes plain arguments; `encoded` is
    the file of the pool's rows encoded once for the whole grid."""
    if threads:
        torch.set_num_threads(threads)
    subset = pool_ds.select(chosen)
    model, tok, proc = base.load_model(target, progress=False)
    rows = [_encoded_pool(str(encoded))[i] for i in chosen] if encoded else None
    log = train.sft(model, tok, proc, subset, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    progress=False, max_steps=full_steps if protocol == "fixed_compute" else -1, encoded=rows)
    ev = train.evaluate(model, tok, proc, test_ds)
    method, fraction = split_name(column)
    return {"method": method, "fraction": fraction, "protocol": protocol, "seed": seed, "subset": column,
            "subset_sha": sha, "accuracy": ev["accuracy"], "per_task": ev["per_task"], "test_loss": ev["loss"],
            "n_train": len(subset), "steps": log["steps"], "train_seconds": log["train_seconds"],
            "toxic_share": float(np.isin(subset["noise"], pool.TOXIC).mean()), "settings": settings}


def train_subsets(dd, member, out, *, grid, sft: SFT = SFT(), workers=1, progress=True) -> list:
    """Fine-tune `sft.target` on the full pool and on each column of `member` (booleans over pool ids) that
    `grid` ({protocol: [columns]}) names for a protocol, evaluate on the clean test split, and return one
    row per run in plan order, once per seed of `sft.sft_seeds` (each also appended to `out`, the JSON-lines
    progress log, as it finishes; `write_runs` saves the returned rows). A seed gives every method of the
    table the same shuffling stream, so differences are paired.

    `workers` > 1 trains that many runs at once in separate processes of one thread each: a model this
    small keeps one core busy but gains little from a second thread, so on a 2-core machine two runs at
    a time nearly halve the wall time. Each run is seeded; its numbers do not depend on `workers`
    beyond float reassociation across thread counts. The pool is encoded for the target once (tokens, labels,
    each image's frozen-tower output) and every run trains on its rows of that encoding."""
    out = Path(out)
    target, epochs, lr, batch_size, seeds = sft.target, sft.sft_epochs, sft.sft_lr, sft.sft_batch_size, sft.sft_seeds
    # the log's key names predate `SFT`; kept, so the runs already logged are still reused
    settings = dict(target=target, epochs=epochs, lr=lr, batch_size=batch_size, n_pool=len(dd["pool"]))
    ids = list(dd["pool"]["id"])
    if member.index.tolist() != ids:
        raise ValueError("subset table does not list the pool's ids in order (rerun notebook 03)")
    missing = sorted({c for cols in grid.values() for c in cols} - set(member.columns))
    if missing:
        raise ValueError(f"no subset column(s) {missing} (subsets.parquet has {list(member.columns)})")
    chosen = {c: np.flatnonzero(member[c].to_numpy()).tolist() for cols in grid.values() for c in cols}
    chosen["full"] = list(range(len(ids)))
    sha = {c: subset_sha([ids[i] for i in rows]) for c, rows in chosen.items()}
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if row["settings"] == settings and row.get("subset_sha") == sha.get(row["subset"]):
                done[_key(row)] = row
    steps = full_steps(len(ids), batch_size, epochs)
    todo = [key for key in plan(grid, seeds) if key not in done]
    # the longest runs first, so two workers finish together
    todo.sort(key=lambda k: -(1.0 if k[1] == "fixed_compute" else split_name(k[0])[1]))
    common = dict(target=target, epochs=epochs, lr=lr, batch_size=batch_size, full_steps=steps,
                  settings=settings)

    def job(key):
        column, protocol, seed = key
        return (dd["pool"], dd["test"], chosen[column]), dict(column=column, protocol=protocol, seed=seed,
                                                              sha=sha[column], threads=1 if workers > 1 else None,
                                                              encoded=encoded, **common)

    with tempfile.TemporaryDirectory() as tmp:
        encoded = None
        if todo:
            model, tok, proc = base.load_model(target, progress=progress)   # a preset's base is built here once
            encoded = Path(tmp) / "pool_rows.pt"
            threads = torch.get_num_threads()
            torch.set_num_threads(1)      # the tower's floats as a one-thread run computes them, on any machine
            try:
                torch.save(train.encode(model, tok, proc, dd["pool"]), encoded)
            finally:
                torch.set_num_threads(threads)
        for _, row in runs.as_done(_run_one, {key: job(key) for key in todo}, workers, "SFT runs", progress):
            with out.open("a") as f:
                f.write(json.dumps(row) + "\n")
            done[_key(row)] = row
    _encoded_pool.cache_clear()
    return [done[key] for key in plan(grid, seeds)]


def write_runs(rows, path) -> Path:
    """The finished table as JSON lines, in the given order, by atomic rename (never half written)."""
    return runs.replace_text(path, "".join(json.dumps(row) + "\n" for row in rows))
