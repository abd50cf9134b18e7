"""How competent must the proxy be? Its validation accuracy and toxic detection against warm-up length.

A proxy that cannot do the task cannot tell a right answer from a wrong one: a one-step utility measured
on it ranks samples by what an incompetent model finds easy. This warms the proxy for several lengths —
a share of the pool × epochs, one cosine run each, on the same seeded slices notebook 01 draws — and
measures, for each: validation exact match, the toxic-detection AUROC of the OST utility (notebook 02's
default step: first-order Adam continuing the warm-up's state) and of the proxy's plain loss (the loss
filter) on one fixed random sample of the pool, and the seconds the warm-up and the scoring took.
A sample that was in the warm-up slice has been trained on (its loss is lower for that alone); the
report says how many of the scored samples were.

    python -m ost.experiments.warmup_curve --config configs/main.yaml --out results/main/warmup_curve.json
"""
import time
from pathlib import Path

import numpy as np
import torch

from ost import runs
from ost.data import pool, schema
from ost.experiments import command, transfer
from ost.method import score, warmup
from ost.method.step import DEFAULT
from ost.models import train
from ost.report import metrics, plots
from ost.runs.settings import Warmup

CURVE = dict(proxy="proxy", fractions=[0.2, 0.5, 1.0], epochs=[3.0, 6.0, 12.0], lr=2.0e-3, step_lr=1.0e-4,
             n_score=1000, seed=0, workers=2)


def point(dd, score_rows, *, proxy, fraction, epochs, lr, step_lr, seed, threads=None) -> dict:
    """One warm-up length: warm, evaluate on validation, score `score_rows` of the pool."""
    if threads:
        torch.set_num_threads(threads)
    warm_up = Warmup(proxy=proxy, warmup_fraction=fraction, warmup_epochs=epochs, warmup_lr=lr, warmup_seed=seed)
    warmed = warmup.warm_up(dd, warm_up)
    model, tok, proc, log = warmed.model, warmed.tokenizer, warmed.processor, warmed.log
    ev = train.evaluate(model, tok, proc, dd["validation"])
    samples = dd["pool"].select(score_rows)
    step = DEFAULT.with_(lr=step_lr)
    start = time.perf_counter()
    frame = score.score_samples(model, tok, proc, samples, dd["validation"], step=step,
                               warm_state=log["adam_state"], with_loss=True)
    score_seconds = time.perf_counter() - start
    noise = np.asarray(samples["noise"])
    toxic = np.isin(noise, list(pool.TOXIC))
    flagged = frame["utility"].to_numpy() < 0
    return {"fraction": fraction, "epochs": epochs, "n_warm": len(warmed.warm_ids), "steps": log["steps"],
            "warm_seconds": log["train_seconds"], "score_seconds": score_seconds,
            "val_accuracy": ev["accuracy"], "val_loss": ev["loss"], "val_per_task": ev["per_task"],
            "auroc_ost": metrics.toxic_auroc(frame["utility"].to_numpy(), noise),
            "auroc_loss": metrics.toxic_auroc(-frame["loss"].to_numpy(), noise),
            "flagged_toxic": float(flagged[toxic].mean()), "flagged_clean": float(flagged[noise == "clean"].mean()),
            "scored_in_warmup": int(np.isin(samples["id"], warmed.warm_ids).sum())}


def measure(dd, *, proxy, fractions, epochs, lr, step_lr, n_score, seed, workers, progress=True) -> dict:
    score_rows = transfer.sample_rows(len(dd["pool"]), n_score, seed)
    common = dict(proxy=proxy, lr=lr, step_lr=step_lr, seed=seed, threads=1 if workers > 1 else None)
    jobs = {(f, e): ((dd, score_rows), dict(fraction=f, epochs=e, **common)) for f in fractions for e in epochs}
    # the longest warm-ups first, so the workers finish together
    jobs = dict(sorted(jobs.items(), key=lambda kv: -kv[0][0] * kv[0][1]))
    start = time.perf_counter()
    done = dict(runs.as_done(point, jobs, workers, "warm-up lengths", progress))
    points = [done[(f, e)] for f in fractions for e in epochs]
    return {"settings": {"proxy": proxy, "fractions": list(fractions), "epochs": list(epochs), "lr": lr,
                         "step": DEFAULT.with_(lr=step_lr).as_dict(),
                         "n_score": len(score_rows), "n_pool": len(dd["pool"]), "n_val": len(dd["validation"]),
                         "seed": seed},
            "wall_seconds": time.perf_counter() - start, "points": points}


def figure(report, path):
    """Validation exact match, and toxic AUROC (OST solid, loss filter dashed), against warm-up steps."""
    fig, axes = plots.plt.subplots(1, 2, figsize=(11, 4))
    colours = plots.plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for colour, fraction in zip(colours, report["settings"]["fractions"]):
        pts = sorted((p for p in report["points"] if p["fraction"] == fraction), key=lambda p: p["steps"])
        steps = [p["steps"] for p in pts]
        axes[0].plot(steps, [100 * p["val_accuracy"] for p in pts], "-o", color=colour,
                     label=f"{fraction:g} of the pool")
        axes[1].plot(steps, [p["auroc_ost"]["all"] for p in pts], "-o", color=colour, label=f"OST, {fraction:g}")
        axes[1].plot(steps, [p["auroc_loss"]["all"] for p in pts], "--s", color=colour, label=f"loss, {fraction:g}")
    axes[0].set_ylabel("proxy validation exact match %"), axes[1].set_ylabel("toxic AUROC (all kinds)")
    axes[1].axhline(0.5, color="grey", lw=0.6)
    for ax in axes:
        ax.set_xlabel("warm-up steps (epochs 3 / 6 / 12 of the slice)"), ax.set_xscale("log"), ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    return plots.save_fig(fig, path)


def markdown(report) -> str:
    kinds = sorted({k for p in report["points"] for k in p["auroc_ost"]} - {"all"})
    lines = ["| warm-up (share × epochs) | steps | s | val EM % | OST AUROC all | loss AUROC all "
             "| OST AUROC min kind | flagged toxic / clean |", "|---|---|---|---|---|---|---|---|"]
    for p in report["points"]:
        worst = min(kinds, key=lambda k: p["auroc_ost"].get(k, 1.0), default=None)
        low = f"{p['auroc_ost'][worst]:.2f} ({worst.replace('_', ' ')})" if worst in p["auroc_ost"] else "–"
        lines.append(f"| {p['fraction']:g} × {p['epochs']:g} | {p['steps']} | {p['warm_seconds']:.0f} | "
                     f"{100 * p['val_accuracy']:.1f} | {p['auroc_ost']['all']:.2f} | {p['auroc_loss']['all']:.2f} | "
                     f"{low} | "
                     f"{100 * p['flagged_toxic']:.0f} % / {100 * p['flagged_clean']:.0f} % |")
    return "\n".join(lines)


def main(argv=None):
    parser = command.parser(__doc__)
    parser.add_argument("--out", type=Path, required=True, help="the JSON report; the figure goes beside it")
    command.add_grid(parser, CURVE)
    args = parser.parse_args(argv)
    dd = schema.config_pool(command.read_config(args.config))
    report = measure(dd, **{k: getattr(args, k) for k in CURVE})
    command.save_report(args.out, report)
    figure(report, args.out.parent / "figures" / f"{args.out.stem}.png")
    print(markdown(report))


if __name__ == "__main__":
    main()
