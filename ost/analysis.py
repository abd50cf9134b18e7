"""From SFT runs to the paper's table: means with 95 % intervals, paired differences, costs.

Differences are paired by seed (same seed, same protocol and fraction): the seed-to-seed spread of a
tiny model is larger than most method effects, and pairing removes the part every method shares.
"""
import numpy as np
import pandas as pd

from .metrics import mean_ci

REFERENCES = ("full", "judge", "loss")     # the paper's two competitors and the cheap low-loss filter


def paired(runs: pd.DataFrame, reference: str) -> pd.DataFrame:
    """accuracy − the reference's accuracy, per (method, fraction, protocol, seed) where both ran.

    Full-SFT is its own reference for both protocols (it is one run per seed); other references pair
    within the same fraction and protocol."""
    ref = runs[runs["method"] == reference]
    if ref.empty:
        return pd.DataFrame(columns=["method", "fraction", "protocol", "seed", "diff"])
    if reference == "full":
        base = ref.set_index("seed")["accuracy"]
        out = runs.assign(diff=runs["accuracy"] - runs["seed"].map(base))
    else:
        base = ref.set_index(["fraction", "protocol", "seed"])["accuracy"]
        keys = pd.MultiIndex.from_frame(runs[["fraction", "protocol", "seed"]])
        out = runs.assign(diff=runs["accuracy"].to_numpy() - base.reindex(keys).to_numpy())
    return out[["method", "fraction", "protocol", "seed", "diff"]].dropna()


def paper_table(runs: pd.DataFrame, references=REFERENCES) -> pd.DataFrame:
    """One row per (method, fraction, protocol): seeds, mean accuracy ± 95 % CI, mean paired difference
    (± CI) against each reference, training seconds, and n_train."""
    groups = runs.groupby(["method", "fraction", "protocol"], sort=True)
    table = pd.DataFrame({
        "seeds": groups["seed"].nunique(),
        "accuracy": groups["accuracy"].apply(lambda x: mean_ci(x)[0]),
        "ci95": groups["accuracy"].apply(lambda x: mean_ci(x)[1]),
        "n_train": groups["n_train"].first(),
        "train_seconds": groups["train_seconds"].mean(),
    })
    for ref in references:
        d = paired(runs, ref).groupby(["method", "fraction", "protocol"])["diff"]
        table[f"vs_{ref}"] = d.apply(lambda x: mean_ci(x)[0])
        table[f"vs_{ref}_ci95"] = d.apply(lambda x: mean_ci(x)[1])
    return table.reset_index()


def _fmt(mean, half, points=True, sign=False):
    if mean is None or not np.isfinite(mean):
        return "–"
    scale = 100 if points else 1
    text = f"{mean * scale:+.1f}" if sign else f"{mean * scale:.1f}"
    return text + (f" ± {half * scale:.1f}" if np.isfinite(half) else "")


def markdown(table: pd.DataFrame, references=REFERENCES) -> str:
    """The table as Markdown (accuracy in %, differences in points, ± the 95 % CI half-width)."""
    head = ["method", "fraction", "protocol", "seeds", "accuracy %"] + [f"vs {r}" for r in references] + \
        ["train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    order = table.sort_values(["protocol", "fraction", "accuracy"], ascending=[False, True, False])
    for r in order.itertuples(index=False):
        r = r._asdict()
        cells = [r["method"], f"{r['fraction']:g}", r["protocol"].replace("_", " "), str(r["seeds"]),
                 _fmt(r["accuracy"], r["ci95"])]
        cells += [_fmt(r.get(f"vs_{ref}"), r.get(f"vs_{ref}_ci95", np.nan), sign=True)
                  if r["method"] != ref else "·" for ref in references]
        cells.append(f"{r['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
