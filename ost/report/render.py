"""The report's tables as Markdown, and the README blocks filled from a run's summary.json.

`ost.report.analysis` computes (paired differences, intervals, claims, costs); this module only writes what it
computed, so no number in the README or the docs is typed by hand.
"""
import json
from pathlib import Path

import numpy as np
import pandas as pd

from ost.report.analysis import PAPER_COST, REFERENCES, paper_table, resolved


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
    return fill_block(readme_path, readme_block(json.loads(Path(summary_path).read_text())), start, end)


def fill_block(readme_path, block: str, start: str, end: str) -> str:
    """Replace the text between two markers of a README with `block`."""
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
