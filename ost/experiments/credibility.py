"""Can the main table decide? The four checks the SFT regime must pass, measured, never typed.

(a) Full-SFT's 95 % CI half-width over the seeds is at most 3 points;
(b) the pool's clean part (`oracle-clean`, same epochs) beats Full-SFT by at least 8 points in every seed:
    the planted noise costs more than seed noise, so a selector has something to win back;
(c) a target base built with 2 threads instead of 1 (float rounding only) moves Full-SFT's mean by less
    than its own CI: the table does not hang on the bytes of one base;
(d) the whole `make reproduce` takes at most an hour on this machine.

(a), (b) come from notebook 05's runs, (d) from the wall time `make reproduce` records; (c) trains
Full-SFT again, same seeds and recipe, from a base built with 2 threads (its own cache folder):

    python -m ost.experiments.credibility --config configs/main.yaml --run main
"""
import json
from dataclasses import replace

import pandas as pd

from ost import runs
from ost.data import schema
from ost.experiments import command, sft_grid
from ost.method import subset
from ost.models import base
from ost.report import analysis
from ost.report.metrics import mean_ci
from ost.runs import paths
from ost.runs.settings import SFT

GOALS = dict(full_ci95=0.03, noise_gap=0.08, reproduce_seconds=3600)
# besides Full-SFT, (c) retrains this cell on the rebuilt base: does a paired difference survive what moves a mean?
PAIRED_CELL = ("ost@0.5", "same_epochs")


def from_runs(sft: pd.DataFrame) -> dict:
    """(a) and (b) from a run table: Full-SFT's seeds and CI, and clean − full per seed (same epochs)."""
    full = sft[sft["method"] == "full"].set_index("seed")["accuracy"].sort_index()
    clean = sft[(sft["method"] == "oracle-clean") & (sft["protocol"] == "same_epochs")].set_index("seed")["accuracy"]
    mean, half = mean_ci(full.to_numpy())
    gaps = _paired(sft, "oracle-clean", "same_epochs")
    return {"full_per_seed": full.tolist(), "full_mean": mean, "full_ci95": half,
            "clean_per_seed": clean.reindex(full.index).tolist(), "gap_per_seed": gaps,
            "a_full_ci95": bool(half <= GOALS["full_ci95"]),
            "b_noise_gap": bool(len(gaps) == len(full) and len(gaps) and min(gaps) >= GOALS["noise_gap"])}


def _paired(sft: pd.DataFrame, method: str, protocol: str) -> list:
    """method − Full-SFT per seed, in seed order (`analysis.paired`, one cell)."""
    d = analysis.paired(sft, "full")
    return d[(d["method"] == method) & (d["protocol"] == protocol)].sort_values("seed")["diff"].tolist()


def rebuilt_base(config: dict, reference: dict, sft=None, threads: int = 2, progress: bool = True) -> dict:
    """(c): Full-SFT per seed from a target base built with `threads` threads, against `reference`
    (`from_runs` of the one-thread base's runs); and, where `sft` (the run table) has PAIRED_CELL, that
    cell's paired difference against Full-SFT on both bases."""
    sft_settings = SFT.from_params(config)
    dd = schema.config_pool(config)
    base.load_base(sft_settings.target, progress=progress, threads=threads)
    folder = base.base_dir(sft_settings.target, threads)
    member = pd.DataFrame(index=pd.Index(dd["pool"]["id"], name="id"))
    grid = {}
    if sft is not None and ((sft["subset"] == PAIRED_CELL[0]) & (sft["protocol"] == PAIRED_CELL[1])).any():
        subsets = subset.read(runs.need(config.get("run", "main"), "subsets.parquet"), dd["pool"]["id"])
        member, grid = subsets[[PAIRED_CELL[0]]], {PAIRED_CELL[1]: [PAIRED_CELL[0]]}
    log = paths.DATA / "runs" / config.get("run", "main") / f"credibility_{threads}threads.jsonl"
    log.parent.mkdir(parents=True, exist_ok=True)
    rows = sft_grid.train_subsets(dd, member, log, grid=grid, sft=replace(sft_settings, target=str(folder)),
                                  workers=config.get("workers", 2), progress=progress)
    acc = [r["accuracy"] for r in rows if r["subset"] == "full"]
    mean, half = mean_ci(acc)
    moved = mean - reference["full_mean"]
    out = {"threads": threads, "base": folder.name, "full_per_seed": acc, "full_mean": mean, "full_ci95": half,
           "moved": moved, "c_base_threads": bool(abs(moved) < reference["full_ci95"])}
    if grid:
        name = f"{PAIRED_CELL[0]} {PAIRED_CELL[1].replace('_', ' ')}"
        method = sft_grid.split_name(PAIRED_CELL[0])[0]
        one, other = (_paired(t, method, PAIRED_CELL[1]) for t in (sft, pd.DataFrame(rows)))
        out["paired"] = {"cell": name, "one_thread": [*mean_ci(one), one],
                         f"{threads}_threads": [*mean_ci(other), other]}
    return out


def report(run: str, config: dict, rebuild: bool = True, progress: bool = True) -> dict:
    sft = analysis.load_runs(runs.need(run, "sft_runs.jsonl"))
    checks = from_runs(sft)
    out = {"goals": GOALS, "seeds": sorted(int(s) for s in sft["seed"].unique()), **checks}
    if rebuild:
        out["base_threads"] = rebuilt_base(config, checks, sft, progress=progress)
    timing = runs.results_dir(run) / "reproduce.json"
    if timing.exists():
        record = json.loads(timing.read_text())
        out["reproduce_seconds"] = record["wall_seconds"]
        # SFT runs already in the run's log are reused, not trained: such a wall time is not the clean clone's
        out["reproduce_reused_sft_runs"] = record.get("sft_runs_logged_before", 0)
        out["d_reproduce_seconds"] = (None if out["reproduce_reused_sft_runs"]
                                      else bool(record["wall_seconds"] <= GOALS["reproduce_seconds"]))
    return out


def markdown(rep: dict) -> str:
    """The checks as docs/results.md shows them."""
    yes = {True: "yes", False: "**no**", None: "–"}
    pct = lambda xs: " / ".join(f"{100 * x:.1f}" for x in xs)     # noqa: E731
    lines = ["| check | goal | measured | holds |", "|---|---|---|---|",
             f"| (a) Full-SFT 95 % CI half-width | ≤ {100 * GOALS['full_ci95']:g} points | "
             f"{100 * rep['full_mean']:.1f} ± {100 * rep['full_ci95']:.1f} % (seeds: {pct(rep['full_per_seed'])}) | "
             f"{yes[rep['a_full_ci95']]} |",
             f"| (b) clean part − Full-SFT, every seed | ≥ {100 * GOALS['noise_gap']:g} points | "
             f"{' / '.join(f'{100 * g:+.1f}' for g in rep['gap_per_seed'])} | {yes[rep['b_noise_gap']]} |"]
    if "base_threads" in rep:
        c = rep["base_threads"]
        lines.append(f"| (c) target base built with {c['threads']} threads instead of 1 | moves Full-SFT's mean by "
                     f"< its CI ({100 * rep['full_ci95']:.1f}) | "
                     f"{100 * c['full_mean']:.1f} ± {100 * c['full_ci95']:.1f} % "
                     f"(seeds: {pct(c['full_per_seed'])}): {c['moved'] * 100:+.1f} points | "
                     f"{yes[c['c_base_threads']]} |")
        if "paired" in c:
            p = c["paired"]
            (m1, h1, _), (m2, h2, _) = p["one_thread"], p[f"{c['threads']}_threads"]
            lines.append(f"| (c′) the same for a paired difference: {p['cell']} − Full-SFT | – | "
                         f"{100 * m1:+.1f} ± {100 * h1:.1f} points on the 1-thread base, {100 * m2:+.1f} ± "
                         f"{100 * h2:.1f} on the {c['threads']}-thread one | – |")
    if "reproduce_seconds" in rep:
        reused = rep.get("reproduce_reused_sft_runs", 0)
        took = f"{rep['reproduce_seconds'] / 60:.0f} min" + (
            f", not a clean clone's: {reused} SFT runs came from the run's log" if reused else "")
        lines.append(f"| (d) `make reproduce`, clean clone | ≤ {GOALS['reproduce_seconds'] // 60} min | {took} | "
                     f"{yes[rep['d_reproduce_seconds']]} |")
    return "\n".join(lines)


def main(argv=None):
    parser = command.parser(__doc__, readme_page="docs/results.md")
    parser.add_argument("--run", default="main", help="reads results/<run>/sft_runs.jsonl, writes credibility.json")
    parser.add_argument("--no-rebuild", action="store_true", help="skip (c), the runs from a 2-thread base")
    args = parser.parse_args(argv)
    path = runs.results_dir(args.run) / "credibility.json"
    if args.readme:
        command.render_block(args.readme, markdown(json.loads(path.read_text())), "credibility")
        return
    rep = report(args.run, command.read_config(args.config), rebuild=not args.no_rebuild)
    command.save_report(path, rep)
    print(markdown(rep))


if __name__ == "__main__":
    main()
