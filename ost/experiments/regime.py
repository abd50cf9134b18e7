"""Which SFT regime lets the table decide: learning curves of the target over epochs and learning rates.

A table whose Full-SFT seeds disagree by 30 points cannot tell methods apart. Runs that stop in the
fast-learning phase are chaotic; runs trained to the plateau agree. This measures where the plateau is,
for the full pool and for its clean part (the noise gap), several seeds and learning rates, so the main
scale's epochs and lr are chosen from evidence. Each run is one cosine schedule over `epochs`, evaluated
on the clean test split at the end of the epochs in `eval_at` (greedy decoding does not touch the run's
random state, so the trajectory is the one an unevaluated run takes).

    python -m ost.experiments.regime --config configs/main.yaml --out results/main/regime.json
"""
import json
import time
from pathlib import Path

import numpy as np
import torch
from transformers import TrainerCallback

from ost import runs
from ost.data import pool, schema
from ost.experiments import command
from ost.models import base, train
from ost.report import plots
from ost.report.metrics import mean_ci

CURVE = dict(target="target", epochs=8, eval_at=[1, 2, 4, 6, 8], lrs=[3.0e-3, 1.0e-3, 5.0e-4], seeds=[0, 1, 2],
             batch_size=32, workers=2)


def clean_part(ds):
    """The pool without its toxic samples (duplicates stay: they are correct, only wasteful)."""
    return ds.filter(lambda kind: kind not in pool.TOXIC, input_columns="noise")


class _EvaluateAt(TrainerCallback):
    def __init__(self, epochs, test, tok, proc):
        self.epochs, self.test, self.tok, self.proc, self.points = set(epochs), test, tok, proc, []

    def on_epoch_end(self, args, state, control, model=None, **kw):
        epoch = round(state.epoch)
        if epoch in self.epochs:
            with train.tower_running(model):
                ev = train.evaluate(model, self.tok, self.proc, self.test)
            self.points.append({"epoch": epoch, "step": state.global_step, "accuracy": ev["accuracy"],
                                "test_loss": ev["loss"], "per_task": ev["per_task"]})


def curve_run(train_ds, test_ds, *, subset, lr, seed, target, epochs, eval_at, batch_size, threads=None) -> dict:
    """One SFT run of `target` on `train_ds`, evaluated at the end of each epoch in `eval_at`."""
    if threads:
        torch.set_num_threads(threads)
    model, tok, proc = base.load_model(target, progress=False)
    probe = _EvaluateAt(eval_at, test_ds, tok, proc)
    log = train.sft(model, tok, proc, train_ds, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed,
                    progress=False, callbacks=[probe])
    return {"subset": subset, "lr": lr, "seed": seed, "n_train": len(train_ds), "steps": log["steps"],
            "train_seconds": log["train_seconds"], "points": probe.points}


def summarize(rows) -> list:
    """Per (lr, epoch): Full-SFT's mean ± 95 % CI half-width over seeds, the clean part's, and the paired
    noise gap (clean − full, same seed) — the three numbers a regime must get right."""
    out = []
    for lr in sorted({r["lr"] for r in rows}, reverse=True):
        for epoch in sorted({p["epoch"] for r in rows for p in r["points"]}):
            acc = {s: {r["seed"]: p["accuracy"] for r in rows if r["lr"] == lr and r["subset"] == s
                       for p in r["points"] if p["epoch"] == epoch} for s in ("full", "clean")}
            loss = [p["test_loss"] for r in rows if r["lr"] == lr and r["subset"] == "full"
                    for p in r["points"] if p["epoch"] == epoch]
            seeds = sorted(set(acc["full"]) & set(acc["clean"]))
            gaps = [acc["clean"][s] - acc["full"][s] for s in seeds]
            full_mean, full_ci = mean_ci(list(acc["full"].values()))
            out.append({"lr": lr, "epoch": epoch, "full_mean": full_mean, "full_ci95": full_ci,
                        "full_spread": float(np.ptp(list(acc["full"].values()))) if acc["full"] else None,
                        "clean_mean": mean_ci(list(acc["clean"].values()))[0], "gap_per_seed": gaps,
                        "gap_min": min(gaps) if gaps else None, "full_test_loss": float(np.mean(loss))})
    return out


def measure(dd, *, target, epochs, eval_at, lrs, seeds, batch_size, workers, progress=True) -> dict:
    """Every (subset, lr, seed) run of the curve, `workers` at a time."""
    subsets = {"full": dd["pool"], "clean": clean_part(dd["pool"])}
    common = dict(target=target, epochs=epochs, eval_at=list(eval_at), batch_size=batch_size,
                  threads=1 if workers > 1 else None)
    jobs = {(s, lr, seed): ((subsets[s], dd["test"]), dict(subset=s, lr=lr, seed=seed, **common))
            for s in subsets for lr in lrs for seed in seeds}
    base.load_model(target, progress=progress)     # built once here, not by each worker
    start = time.perf_counter()
    done = dict(runs.as_done(curve_run, jobs, workers, "learning-curve runs", progress))
    rows = [done[key] for key in jobs]
    return {"settings": {"target": target, "epochs": epochs, "eval_at": list(eval_at), "lrs": list(lrs),
                         "seeds": list(seeds), "batch_size": batch_size, "n_pool": len(dd["pool"]),
                         "n_test": len(dd["test"])},
            "wall_seconds": time.perf_counter() - start, "summary": summarize(rows), "rows": rows}


def figure(report, path):
    """Accuracy and test answer-loss against epochs, one colour per lr; full pool solid, clean part dashed;
    each point the mean over seeds with its min–max range."""
    fig, axes = plots.plt.subplots(1, 2, figsize=(11, 4))
    colours = dict(zip(report["settings"]["lrs"], plots.plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for (subset, lr), style in [((s, lr), "-" if s == "full" else "--") for s in ("full", "clean")
                                for lr in report["settings"]["lrs"]]:
        picked = [r for r in report["rows"] if r["subset"] == subset and r["lr"] == lr]
        epochs = sorted({p["epoch"] for r in picked for p in r["points"]})
        for ax, key, scale in ((axes[0], "accuracy", 100), (axes[1], "test_loss", 1)):
            values = np.array([[p[key] * scale for p in sorted(r["points"], key=lambda p: p["epoch"])]
                               for r in picked])
            ax.plot(epochs, values.mean(0), style, marker="o", ms=3, color=colours[lr], label=f"{subset}, lr {lr:g}")
            ax.fill_between(epochs, values.min(0), values.max(0), color=colours[lr], alpha=0.12)
    axes[0].set_ylabel("test exact match %"), axes[1].set_ylabel("test answer loss"), axes[1].set_yscale("log")
    for ax in axes:
        ax.set_xlabel("epoch (of one cosine run)"), ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7, ncol=2)
    fig.suptitle(f"target SFT: mean over seeds {report['settings']['seeds']} (band: min–max)")
    fig.tight_layout()
    return plots.save_fig(fig, path)


def markdown(report) -> str:
    """The curve as a table: per lr and epoch, Full-SFT mean ± 95 % CI and spread over seeds, the clean
    part's mean, the smallest per-seed noise gap, and Full-SFT's test answer loss (what docs/results.md shows)."""
    s = report["settings"]
    lines = [f"{len(s['seeds'])} seeds, {s['n_pool']}-sample pool, {s['n_test']} clean test questions, batch "
             f"{s['batch_size']}, one {s['epochs']}-epoch cosine run per (part, lr, seed), scored after the epochs "
             f"shown; {report['wall_seconds'] / 60:.0f} min on {len(report['rows'])} runs.", "",
             "| lr | epoch | full % (± 95 % CI) | full spread | clean % | clean − full, smallest seed "
             "| full test loss |",
             "|---|---|---|---|---|---|---|"]
    for r in report["summary"]:
        lines.append(f"| {r['lr']:g} | {r['epoch']} | {100 * r['full_mean']:.1f} ± {100 * r['full_ci95']:.1f} | "
                     f"{100 * r['full_spread']:.1f} | {100 * r['clean_mean']:.1f} | {100 * r['gap_min']:+.1f} | "
                     f"{r['full_test_loss']:.4f} |")
    return "\n".join(lines)


def main(argv=None):
    parser = command.parser(__doc__, config_required=False, readme_page="docs/results.md")
    parser.add_argument("--out", type=Path, required=True, help="the JSON report; the figure goes beside it")
    command.add_grid(parser, CURVE)
    args = parser.parse_args(argv)
    if args.readme:
        command.render_block(args.readme, markdown(json.loads(args.out.read_text())), "regime")
        return
    if args.config is None:
        parser.error("--config is needed to measure (only --readme renders an existing report)")
    dd = schema.config_pool(command.read_config(args.config))
    report = measure(dd, **{k: getattr(args, k) for k in CURVE})
    command.save_report(args.out, report)
    figure(report, args.out.parent / "figures" / f"{args.out.stem}.png")
    for row in report["summary"]:
        print(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}))


if __name__ == "__main__":
    main()
