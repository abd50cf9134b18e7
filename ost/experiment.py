"""The SFT runs behind the paper's table: the target fine-tuned on every subset, protocol and seed.

Two protocols, as the paper uses them:
* `same_epochs`: every subset is trained for the same number of epochs, so a 20 % subset costs about
  20 % of Full-SFT (the training-cost reduction the paper reports for top-50);
* `fixed_compute`: every subset gets the optimizer steps of one Full-SFT run (a small subset is seen
  for more epochs), which is how the paper's top-20 beats Full-SFT.

Each finished run is appended to a JSON-lines file at once, so an interrupted experiment resumes where
it stopped and a finished one is never rerun.
"""
import json
import math
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from . import base, pool, train

PROTOCOLS = ("same_epochs", "fixed_compute")


def split_name(column: str) -> tuple:
    """'ost-cover@0.2' → ('ost-cover', 0.2); 'full' → ('full', 1.0)."""
    method, _, fraction = column.partition("@")
    return method, float(fraction) if fraction else 1.0


def plan(member, protocols, seeds) -> list:
    """(column, protocol, seed) for every run: Full once per seed (it is its own fixed compute)."""
    unknown = set(protocols) - set(PROTOCOLS)
    if unknown:
        raise ValueError(f"unknown protocol(s) {sorted(unknown)}; known: {PROTOCOLS}")
    runs = []
    for seed in seeds:
        runs.append(("full", "same_epochs", seed))
        runs += [(c, p, seed) for c in member.columns for p in protocols]
    return runs


def _key(row) -> tuple:
    return row["subset"], row["protocol"], row["seed"]


def train_subsets(dd, member, out, *, target="target", protocols=PROTOCOLS, seeds=(0,), epochs=6.0,
                  lr=2e-3, batch_size=32, progress=True) -> list:
    """Fine-tune `target` on each column of `member` (booleans over pool ids) and on the full pool,
    evaluate on the clean test split, and return one row per run (also appended to `out`, JSON lines)."""
    out = Path(out)
    settings = dict(target=target, epochs=epochs, lr=lr, batch_size=batch_size, n_pool=len(dd["pool"]))
    done = {}
    if out.exists():
        for line in out.read_text().splitlines():
            row = json.loads(line)
            if row["settings"] == settings:
                done[_key(row)] = row
    ids = list(dd["pool"]["id"])
    if member.index.tolist() != ids:
        raise ValueError("subset table does not list the pool's ids in order (rerun notebook 03)")
    full_steps = math.ceil(math.ceil(len(ids) / batch_size) * epochs)     # as Trainer counts a Full run
    rows = []
    todo = plan(member, protocols, seeds)
    for column, protocol, seed in tqdm(todo, desc="SFT runs", disable=not progress):
        key = (column, protocol, seed)
        if key in done:
            rows.append(done[key])
            continue
        chosen = np.arange(len(ids)) if column == "full" else np.flatnonzero(member[column].to_numpy())
        subset = dd["pool"].select(chosen.tolist())
        model, tok, proc = base.load_model(target, progress=False)
        log = train.sft(model, tok, proc, subset, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                        progress=False, max_steps=full_steps if protocol == "fixed_compute" else -1)
        ev = train.evaluate(model, tok, proc, dd["test"])
        method, fraction = split_name(column)
        row = {"method": method, "fraction": fraction, "protocol": protocol, "seed": seed, "subset": column,
               "accuracy": ev["accuracy"], "per_task": ev["per_task"], "test_loss": ev["loss"],
               "n_train": len(subset), "steps": log["steps"], "train_seconds": log["train_seconds"],
               "toxic_share": float(np.isin(subset["noise"], pool.TOXIC).mean()), "settings": settings}
        with out.open("a") as f:
            f.write(json.dumps(row) + "\n")
        rows.append(row)
    return rows


def load_runs(path) -> "pd.DataFrame":
    """The runs of the latest settings in a JSON-lines file (an earlier target or recipe is left out),
    one row per (subset, protocol, seed)."""
    import pandas as pd
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no runs")
    latest = rows[-1]["settings"]
    frame = pd.DataFrame([r for r in rows if r["settings"] == latest])
    return frame.drop_duplicates(["subset", "protocol", "seed"], keep="last").reset_index(drop=True)
