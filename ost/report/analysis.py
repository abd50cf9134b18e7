"""From SFT runs to the paper's table: means with 95 % intervals, paired differences, costs.

Differences are paired by seed (same seed, same protocol and fraction): the seed-to-seed spread of a
tiny model is larger than most method effects, and pairing removes the part every method shares. Each
difference comes with its minimum detectable difference at this number of seeds (from the spread of the
paired differences), and counts as resolved only when its 95 % interval excludes zero.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ost.report.metrics import detectable_difference, mean_ci

REFERENCES = ("full", "judge", "random")     # the paper's two competitors, and chance selection


def load_runs(path) -> "pd.DataFrame":
    """The runs of the latest settings in a JSON-lines file (an earlier target or recipe is left out),
    one row per (subset, protocol, seed)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path} holds no runs")
    latest = rows[-1]["settings"]
    frame = pd.DataFrame([r for r in rows if r["settings"] == latest])
    return frame.drop_duplicates(["subset", "protocol", "seed"], keep="last").reset_index(drop=True)


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
    """One row per (method, fraction, protocol): seeds, mean accuracy ± 95 % CI, mean test answer loss
    (the continuous metric beside exact match, where the runs have it), mean paired difference (± CI,
    minimum detectable difference) against each reference, training seconds, and n_train."""
    groups = runs.groupby(["method", "fraction", "protocol"], sort=True)
    table = pd.DataFrame({
        "seeds": groups["seed"].nunique(),
        "accuracy": groups["accuracy"].apply(lambda x: mean_ci(x)[0]),
        "ci95": groups["accuracy"].apply(lambda x: mean_ci(x)[1]),
        "n_train": groups["n_train"].first(),
        "train_seconds": groups["train_seconds"].mean(),
    })
    if "test_loss" in runs:
        table["test_loss"] = groups["test_loss"].mean()
    for ref in references:
        d = paired(runs, ref).groupby(["method", "fraction", "protocol"])["diff"]
        table[f"vs_{ref}"] = d.apply(lambda x: mean_ci(x)[0])
        table[f"vs_{ref}_ci95"] = d.apply(lambda x: mean_ci(x)[1])
        table[f"vs_{ref}_mdd"] = d.apply(detectable_difference)
    return table.reset_index()


def resolved(mean, half) -> bool:
    """A difference is resolved when its 95 % interval excludes zero."""
    return bool(np.isfinite(mean) and np.isfinite(half) and abs(mean) > half)


def _fmt(mean, half, points=True, sign=False):
    if mean is None or not np.isfinite(mean):
        return "–"
    scale = 100 if points else 1
    text = f"{mean * scale:+.1f}" if sign else f"{mean * scale:.1f}"
    return text + (f" ± {half * scale:.1f}" if np.isfinite(half) else "")


def markdown(table: pd.DataFrame, references=REFERENCES) -> str:
    """The table as Markdown (accuracy in %, differences in points, ± the 95 % CI half-width; a resolved
    difference — its interval excludes zero — in bold), then each comparison's minimum detectable difference."""
    refs = [r for r in references if f"vs_{r}" in table]
    head = ["method", "fraction", "protocol", "seeds", "accuracy %"] + \
        (["test loss"] if "test_loss" in table else []) + [f"vs {r}" for r in refs] + ["train s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    mdd = ["| method | fraction | protocol | " + " | ".join(f"MDD vs {r}" for r in refs) + " |",
           "|---|---|---|" + "---|" * len(refs)]
    order = table.sort_values(["protocol", "fraction", "accuracy"], ascending=[False, True, False])
    for r in order.itertuples(index=False):
        r = r._asdict()
        where = [r["method"], f"{r['fraction']:g}", r["protocol"].replace("_", " ")]
        cells = where + [str(r["seeds"]), _fmt(r["accuracy"], r["ci95"])]
        if "test_loss" in r:
            cells.append(f"{r['test_loss']:.4f}" if np.isfinite(r["test_loss"]) else "–")
        for ref in refs:
            mean, half = r[f"vs_{ref}"], r.get(f"vs_{ref}_ci95", np.nan)
            text = _fmt(mean, half, sign=True) if r["method"] != ref else "·"
            cells.append(f"**{text}**" if r["method"] != ref and resolved(mean, half) else text)
        cells.append(f"{r['train_seconds']:.0f}")
        lines.append("| " + " | ".join(cells) + " |")
        if r["method"] != "full":
            mdd.append("| " + " | ".join(where + [
                "·" if r["method"] == ref else _fmt(r.get(f"vs_{ref}_mdd", np.nan), np.nan)
                for ref in refs]) + " |")
    seeds = int(table["seeds"].max()) if len(table) else 0
    note = (f"Minimum detectable difference (points) of each comparison with {seeds} paired seeds: the true "
            f"difference a 95 % test finds 4 times in 5, given the spread of the paired differences seen here.")
    return "\n".join(lines) + ("\n\n" + note + "\n\n" + "\n".join(mdd) if len(mdd) > 2 else "")


ROW_FIELDS = ("method", "fraction", "protocol", "seed", "accuracy", "test_loss", "n_train", "score_seconds",
              "train_seconds")


def summary_rows(runs: pd.DataFrame, score_seconds: dict) -> list:
    """summary.json's rows; `score_seconds[method]` is what choosing that subset cost (0 for full/random)."""
    unknown = sorted(set(runs["method"]) - set(score_seconds) - {"full", "random"})
    if unknown:
        raise KeyError(f"no scoring cost for method(s) {unknown}")
    out = runs.assign(score_seconds=runs["method"].map(lambda m: float(score_seconds.get(m, 0.0))))
    fields = [f for f in ROW_FIELDS if f in out]          # test_loss: runs logged before it was kept lack it
    return [{k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for row in out[fields].to_dict("records")]


PROXY_SCORERS = ("ost", "ost-topk", "ost-cover", "loss", "loss-high", "ifd", "ost-paper")   # they need the proxy
FREE = ("full", "random", "oracle", "oracle-clean", "clean-random")                  # no model: no selection cost


def selection_seconds(warmup: dict, scoring: dict, baselines: dict) -> dict:
    """What selecting a subset cost each method, from notebooks 01, 02 and 04's records: a proxy-based
    scorer pays for the proxy's warm-up plus its own pass (OST's top-k and coverage variant share notebook 02's
    pass, the default selector adds the validation shift); the judge and DEITA pay for their own model;
    random, the oracles and Full-SFT nothing."""
    own = {c["name"]: c["seconds"] for c in baselines["costs"]}
    own["ost-topk"] = own["ost-cover"] = scoring["score_seconds"]
    own["ost"] = scoring["score_seconds"] + scoring["shift_seconds"]    # its harm flag reads the shift too
    out = dict.fromkeys(FREE, 0.0)
    out.update({m: warmup["train_seconds"] + own[m] for m in PROXY_SCORERS if m in own})
    out.update({m: own[m] for m in ("judge", "deita") if m in own})
    return out


def cost_ratios(runs: pd.DataFrame, score_seconds: dict) -> dict:
    """The paper's cost claims, measured: training saved by top-50 (same epochs) against Full-SFT, and
    the whole Judge pipeline's time (scoring + training its top-50) against OST's."""
    def seconds(method, fraction=None, protocol="same_epochs"):
        sel = (runs["method"] == method) & (runs["protocol"] == protocol)
        if fraction is not None:
            sel &= runs["fraction"] == fraction
        return float(runs.loc[sel, "train_seconds"].mean()) if sel.any() else float("nan")
    full, ost50, judge50 = seconds("full"), seconds("ost", 0.5), seconds("judge", 0.5)
    ost_total = score_seconds.get("ost", float("nan")) + ost50
    judge_total = score_seconds.get("judge", float("nan")) + judge50
    return {"train_seconds_full": full, "train_seconds_ost50": ost50,
            "training_cost_reduction_top50": 1 - ost50 / full if full else float("nan"),
            "pipeline_seconds_ost50": ost_total, "pipeline_seconds_judge50": judge_total,
            "judge_to_ost_total_time": judge_total / ost_total if ost_total else float("nan")}


PAPER_CLAIMS = {      # name: (method, fraction, protocol, reference, the paper's figure in points)
    "top50_vs_judge": ("ost", 0.5, "same_epochs", "judge", 1.8),
    "top20_fixed_compute_vs_judge": ("ost", 0.2, "fixed_compute", "judge", 5.6),
    "top20_fixed_compute_vs_full": ("ost", 0.2, "fixed_compute", "full", 8.8),
}


def claims(table: pd.DataFrame) -> dict:
    """The paper's comparative claims as measured here: mean paired difference (points), its 95 % CI
    half-width, the paper's figure, whether the sign holds and whether the CI excludes zero."""
    out = {}
    for name, (method, fraction, protocol, ref, paper) in PAPER_CLAIMS.items():
        row = table[(table["method"] == method) & (table["fraction"] == fraction) & (table["protocol"] == protocol)]
        diff = float(row[f"vs_{ref}"].iloc[0]) if len(row) else float("nan")
        half = float(row[f"vs_{ref}_ci95"].iloc[0]) if len(row) else float("nan")
        mdd = float(row[f"vs_{ref}_mdd"].iloc[0]) if len(row) else float("nan")
        measured = np.isfinite(diff)
        out[name] = {"difference_points": 100 * diff if measured else None,
                     "ci95_points": 100 * half if np.isfinite(half) else None, "paper_points": paper,
                     "mdd_points": 100 * mdd if np.isfinite(mdd) else None,
                     "holds": bool(diff > 0) if measured else None,
                     "significant": bool(diff - half > 0) if measured and np.isfinite(half) else None,
                     "resolved": resolved(diff, half) if measured and np.isfinite(half) else None}
    return out


# the paper's cost figures: top-50 trains for 43 % less than Full-SFT, and OST's whole pipeline takes 17 % less
# time than LLM-as-a-Judge's (a share, per the first author's page: not 17 times)
PAPER_COST = {"training_cost_reduction_top50": 0.43, "ost_time_saving_vs_judge": 0.17}


def claims_markdown(claims: dict) -> str:
    lines = ["| the paper's claim | paper | here, points ± 95 % CI | MDD | sign holds | resolved (CI excludes 0) |",
             "|---|---|---|---|---|---|"]
    yes_no = {True: "yes", False: "**no**", None: "–"}
    for name, c in claims.items():
        here = "not run" if c["difference_points"] is None else _fmt(c["difference_points"] / 100,
                                                                      (c["ci95_points"] or np.nan) / 100, sign=True)
        mdd = "–" if c.get("mdd_points") is None else f"{c['mdd_points']:.1f}"
        lines.append(f"| {name.replace('_', ' ')} | +{c['paper_points']:g} | {here} | {mdd} | {yes_no[c['holds']]} | "
                     f"{yes_no[c.get('resolved', c['significant'])]} |")
    return "\n".join(lines)


def _auroc_markdown(auroc: dict) -> str:
    kinds = sorted({k for v in auroc.values() for k in v} - {"all"})
    lines = ["| scorer | all | " + " | ".join(k.replace("_", " ") for k in kinds) + " |",
             "|---|---|" + "---|" * len(kinds)]
    for name, v in auroc.items():
        cells = [f"{v[k]:.2f}" if v.get(k) is not None else "–" for k in ["all"] + kinds]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def readme_block(summary: dict) -> str:
    """What the README shows of a run, all from its summary.json: the table, the paper's claims, costs,
    toxic detection per kind, proxy→target transfer and sensitivity."""
    table = paper_table(pd.DataFrame(summary["rows"]))
    parts = [markdown(table)]
    if "claims" in summary:
        parts.append(claims_markdown(summary["claims"]))
    cost = summary.get("cost")
    if cost:
        saving = 1 - cost["pipeline_seconds_ost50"] / cost["pipeline_seconds_judge50"]
        parts.append(f"Training cost of the OST top-50 % (same epochs) against Full-SFT: "
                     f"**{100 * cost['training_cost_reduction_top50']:.0f} % less** (paper: "
                     f"{100 * PAPER_COST['training_cost_reduction_top50']:.0f} %). Whole pipeline (scoring + "
                     f"training the top-50 %), OST against LLM-as-a-Judge: **{100 * abs(saving):.0f} % "
                     f"{'less' if saving >= 0 else 'more'}** time ({cost['pipeline_seconds_ost50']:.0f} s vs "
                     f"{cost['pipeline_seconds_judge50']:.0f} s; paper: "
                     f"{100 * PAPER_COST['ost_time_saving_vs_judge']:.0f} % less).")
    if "toxic_auroc" in summary:
        parts.append("Toxic-detection AUROC per noise kind (1 = every toxic sample ranked below every clean "
                     "one; 0.5 = chance):\n\n" + _auroc_markdown(summary["toxic_auroc"]))
    if "proxy_target_spearman" in summary:
        overlap = ", ".join(f"{k} {v:.2f}" for k, v in summary.get("sensitivity_overlap", {}).items())
        parts.append(f"Proxy → target: Spearman **{summary['proxy_target_spearman']:.2f}** between the proxy's "
                     f"utility and the target's own exact one-step change. Top-20 overlap with the default "
                     f"proxy's set (|A∩B| / |A|; chance 0.20): {overlap}.")
    return "\n\n".join(parts)


def render_readme(summary_path, readme_path, start="<!-- table:start -->", end="<!-- table:end -->") -> str:
    """Rewrite the README's block from summary.json (its numbers are never typed by hand)."""
    import json
    from pathlib import Path
    return fill_block(readme_path, readme_block(json.loads(Path(summary_path).read_text())), start, end)


def fill_block(readme_path, block: str, start: str, end: str) -> str:
    """Replace the text between two markers of a README with `block`."""
    from pathlib import Path
    text = Path(readme_path).read_text()
    if start not in text or end not in text:
        raise ValueError(f"{readme_path} has no {start} … {end} block to fill")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    Path(readme_path).write_text(f"{head}{start}\n{block}\n{end}{tail}")
    return block


if __name__ == "__main__":
    import argparse
    parser = argparse.ArgumentParser(description="render the README table from a summary.json")
    parser.add_argument("--summary", required=True)
    parser.add_argument("--readme", required=True)
    args = parser.parse_args()
    print(render_readme(args.summary, args.readme))
