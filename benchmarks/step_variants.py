"""Which one-step ranking finds the toxic samples? Step variants side by side on one warmed proxy.

Every variant here is a function of the same per-sample gradients g_i (taken one sample at a time, the
slow exact form), the validation gradient g_val and the warm-up's Adam state
(D = √(v̂) + eps, as `ost.method.one_step` forms it):

* `sgd`:              ⟨g_val, g_i⟩                 first-order SGD step (the paper's plain utility)
* `warm_adam`:        ⟨g_val / D, g_i⟩             first-order step of the warm-up's own Adam (the earlier default)
* `cosine`:           ⟨g_val, g_i⟩ / ‖g_val‖‖g_i‖  direction only, as LESS normalises
* `warm_adam_unit`:   ⟨g_val / D, g_i / ‖g_i‖⟩     warm Adam's preconditioning on a unit-length gradient
* `fresh_adam_sign`:  ⟨g_val, sign(g_i)⟩           first order of a fresh Adam's first step (−lr·sign g_i)
* `unit_val_only`:    ⟨ĝ_val / D, g_i⟩            ĝ_val = mean_j g_j / ‖g_j‖ (`one_step.val_gradient(unit_val=True)`)
* `unit_both`:        ⟨ĝ_val / D, g_i / ‖g_i‖⟩    both sides at unit length, as LESS normalises
                                                   (`ost.method.step.DEFAULT`)
* `low_loss`:         −loss_i                     the loss filter, for reference

A sample of `--n-exact` is also scored with the exact fresh-Adam and warm-Adam steps, to say how well the
first-order forms stand for them, and the library's first-order warm Adam checks `warm_adam` (Spearman ≈ 1 expected).

    python benchmarks/step_variants.py --config configs/main.yaml --fraction 1.0 --epochs 12 \
        --out results/main/step_variants_competent.json
    python benchmarks/step_variants.py --render docs/step_choice.md results/main/step_variants_*.json

`make step-variants` runs the main pool and a second pool (another seed, with the two noise kinds the
main pool never had) and renders `docs/step_choice.md` from the two reports.
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml
from scipy.stats import spearmanr

from ost.data import pool, schema
from ost.experiments import transfer
from ost.method import one_step, select, warmup
from ost.method.step import DEFAULT, Step
from ost.models import collate, train
from ost.report import metrics
from ost.runs.settings import Pool, Warmup

VARIANTS = ("sgd", "warm_adam", "cosine", "warm_adam_unit", "fresh_adam_sign", "unit_val_only", "unit_both",
            "low_loss")


def _each_gradient(model, batches, params):
    """(loss, gradient) of every sample, one backward each: the slow form every variant can be read from."""
    for batch in batches:
        losses = collate.per_sample_loss(model, batch)
        for b in range(losses.shape[0]):
            yield losses[b], one_step._grads(losses[b], params, retain_graph=True)


def _norm(g):
    return float(torch.sqrt(sum((c.double() ** 2).sum() for c in g)))


def per_sample_scores(model, batches, gval, adam_state, gval_unit):
    """Every variant's score of every sample, from one backward per sample. The warm-Adam direction is the
    library's own (`one_step._direction`: g_val / D up to a factor every tensor shares after one warm-up)."""
    params = [p for p in model.parameters() if p.requires_grad]
    gval_n = _norm(gval)
    adam = one_step._adam_states(model, params, adam_state)
    pre = one_step._direction(gval, 1.0, adam)[0]
    pre_unit = one_step._direction(gval_unit, 1.0, adam)[0]
    cols = {v: [] for v in VARIANTS}
    for loss, g in _each_gradient(model, batches, params):
        dot = float(sum((a.double() * c).sum() for a, c in zip(gval, g)))
        dot_pre = float(sum((a.double() * c).sum() for a, c in zip(pre, g)))
        dot_both = float(sum((a.double() * c).sum() for a, c in zip(pre_unit, g)))
        norm = _norm(g)
        cols["sgd"].append(dot)
        cols["warm_adam"].append(dot_pre)
        cols["cosine"].append(dot / (gval_n * norm) if norm > 0 else 0.0)
        cols["warm_adam_unit"].append(dot_pre / norm if norm > 0 else 0.0)
        cols["fresh_adam_sign"].append(float(sum((a.double() * c.sign()).sum() for a, c in zip(gval, g))))
        cols["unit_val_only"].append(dot_both)
        cols["unit_both"].append(dot_both / norm if norm > 0 else 0.0)
        cols["low_loss"].append(-float(loss.detach()))
    return {v: np.array(x) for v, x in cols.items()}


def report_of(u, noise, ids):
    toxic = np.isin(noise, list(pool.TOXIC))
    top = {f: set(select.top_fraction(pd.Series(u, index=ids), f)) for f in (0.2, 0.5)}
    kinds = sorted(set(noise) & set(pool.TOXIC))
    return {"auroc": metrics.toxic_auroc(u, noise),
            "flagged": {k: float((u[noise == k] < 0).mean()) for k in ["clean", *kinds]},
            "top20_noise": float(np.mean([t for i, t in zip(ids, toxic) if i in top[0.2]])),
            "top50_noise": float(np.mean([t for i, t in zip(ids, toxic) if i in top[0.5]]))}


EXACT_OF = {"warm_adam": "exact_warm_adam", "fresh_adam_sign": "exact_fresh_adam", "unit_both": "exact_default"}
FAST_OF = {"warm_adam": "library_first_order_seconds_per_1000", "unit_both": "library_default_seconds_per_1000"}


def render(reports: dict) -> str:
    """Markdown tables of the reports ({title: report}): AUROC per kind, flags, top-k noise, cost."""
    legend = "\n\n".join(__doc__.split("\n\n")[1:3])        # the variant list at the top of this file
    out = ["<!-- generated by `make step-variants` (benchmarks/step_variants.py --render): do not edit by hand -->",
           "", "# Which one-step ranking finds the toxic samples?", "",
           legend, "", "Toxic AUROC: higher score = clean, per planted kind (0.5 = blind). Flagged: the share with",
           "utility < 0. Exact forms really take the step and re-evaluate the validation loss.", ""]
    for title, r in reports.items():
        kinds = sorted({k for v in r["variants"].values() for k in v["auroc"]} - {"all"})
        epoch = r.get("epoch_seconds_per_1000")
        out += [f"### {title}", "",
                f"Proxy warmed on {r['settings']['fraction']:.0%} of the pool for {r['settings']['epochs']:g} epochs "
                f"(validation exact match {r['val_accuracy']:.1%}); "
                + (f"{r['n_scored']:,} samples scored." if "n_scored" in r else "every pool sample scored."), "",
                "| variant | all | " + " | ".join(k.replace("_", " ") for k in kinds)
                + " | flagged: toxic (mean of kinds) / clean | noise top-20 / top-50 | Spearman with its exact form"
                " | s / 1,000 (fast path) |",
                "|---|" + "---|" * (len(kinds) + 5)]
        for v, rep in r["variants"].items():
            a, f = rep["auroc"], rep["flagged"]
            toxic = [f[k] for k in kinds if k in f]
            exact = r.get(EXACT_OF.get(v, ""), {}).get("spearman", {}).get(v)
            fast = r.get(FAST_OF.get(v, ""))
            cost = f"{fast:.1f} ({fast / epoch:.1f}× an epoch)" if fast and epoch else "—"
            bold = "**" if v == "unit_both" else ""
            per_kind = " | ".join(f"{a.get(k, float('nan')):.2f}" for k in kinds)
            out.append(f"| {bold}{v}{bold} | {a['all']:.2f} | " + per_kind
                       + (" | —" if v == "low_loss" else f" | {np.mean(toxic):.0%} / {f['clean']:.0%}")
                       + f" | {rep['top20_noise']:.0%} / {rep['top50_noise']:.0%}"
                       + f" | {'—' if exact is None else f'{exact:.2f}'} | {cost} |")
        out += ["", f"One proxy epoch: {epoch:.1f} s per 1,000 samples; the per-sample loop every row was read from: "
                f"{r['per_sample_seconds_per_1000']:.0f} s. Exact forms on the first "
                f"{r['exact_default']['n']} samples: AUROC " + ", ".join(
                    f"{name.replace('_', ' ')} {r[name]['auroc']['all']:.2f}"
                    for name in EXACT_OF.values() if name in r)
                + ".", ""]
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--render", type=Path, nargs="+", metavar=("OUT.md", "REPORT.json"),
                        help="write OUT.md from the reports instead of measuring")
    parser.add_argument("--config", type=Path)
    parser.add_argument("--fraction", type=float, default=0.2, help="warm-up share of the pool")
    parser.add_argument("--epochs", type=float, default=3.0, help="warm-up epochs")
    parser.add_argument("--lr", type=float, default=2e-3, help="warm-up lr")
    parser.add_argument("--n-score", type=int, default=1000)
    parser.add_argument("--n-exact", type=int, default=200)
    parser.add_argument("--step-lr", type=float, default=1e-4, help="lr of the exact fresh-Adam check")
    parser.add_argument("--pool-seed", type=int, default=None, help="another pool: the config's, with this seed")
    parser.add_argument("--extra-kinds", action="store_true",
                        help=f"plant the held-out noise kinds too ({', '.join(pool.HELD_OUT)})")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    if args.render:
        out, paths = args.render[0], args.render[1:]
        reports = {}
        for path in paths:
            r = json.loads(path.read_text())
            seed = r["settings"]["pool"].get("seed", 0)
            extra = r["settings"]["pool"].get("extra_kinds")
            reports[f"pool seed {seed}" + (f", with {' and '.join(extra)}" if extra else " (the main pool)")] = r
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(render(reports) + "\n")
        return
    if args.config is None or args.out is None:
        parser.error("--config and --out are needed to measure")
    config = yaml.safe_load(args.config.read_text()) or {}
    changes = {} if args.pool_seed is None else {"pool_seed": args.pool_seed}
    if args.extra_kinds:
        changes["extra_kinds"] = list(pool.HELD_OUT)
    pool_cfg = Pool.from_params({**config, **changes}).pool_params()
    dd = schema.load_pool(schema.make_pool(**pool_cfg))
    torch.manual_seed(args.seed)
    warm_up = Warmup(warmup_fraction=args.fraction, warmup_epochs=args.epochs, warmup_lr=args.lr, warmup_seed=args.seed)
    warmed = warmup.warm_up(dd, warm_up)
    model, tok, proc, log = warmed.model, warmed.tokenizer, warmed.processor, warmed.log
    val_acc = train.evaluate(model, tok, proc, dd["validation"])["accuracy"]
    rows = transfer.sample_rows(len(dd["pool"]), min(args.n_score, len(dd["pool"])), args.seed)
    scored = dd["pool"].select(rows)
    col = collate.Collator(tok, proc)
    val_b, batches = collate.batches(dd["validation"], col, 32), collate.batches(scored, col, 8)
    out = {"settings": {**vars(args), "config": str(args.config), "out": str(args.out), "pool": pool_cfg},
           "val_accuracy": val_acc, "warm_steps": log["steps"], "warm_seconds": log["train_seconds"],
           "n_scored": len(scored)}
    with train.frozen_vision(model):
        model.eval()
        gval = one_step.val_gradient(model, val_b, collate.per_sample_loss)
        start = time.perf_counter()
        with torch.enable_grad():
            gval_unit = one_step.val_gradient(model, val_b, collate.per_sample_loss, unit_val=True)
            scores = per_sample_scores(model, batches, gval, log["adam_state"], gval_unit)
        out["per_sample_seconds_per_1000"] = (time.perf_counter() - start) / len(scored) * 1000
        start = time.perf_counter()
        lib = one_step.one_step_utility(model, collate.batches(scored, col, 32), val_b, collate.per_sample_loss,
                                       lr=1e-4, optimizer="adam", adam_state=log["adam_state"]).numpy()
        out["library_first_order_seconds_per_1000"] = (time.perf_counter() - start) / len(scored) * 1000
        out["spearman_warm_adam_vs_library"] = float(spearmanr(scores["warm_adam"], lib)[0])
        start = time.perf_counter()      # the default step through the library: every g_i from one pass per batch
        lib_default = one_step.utilities(model, collate.batches(scored, col, 32), val_b, collate.per_sample_loss,
                                         DEFAULT, warm_state=log["adam_state"])
        out["library_default_seconds_per_1000"] = (time.perf_counter() - start) / len(scored) * 1000
        out["library_default_path"] = lib_default.path
        lib_default = lib_default.utility.numpy()
        out["spearman_unit_both_vs_library_default"] = float(spearmanr(scores["unit_both"], lib_default)[0])
        out["epoch_seconds_per_1000"] = log["train_seconds"] / args.epochs / (args.fraction * len(dd["pool"])) * 1000
        few = scored.select(range(min(args.n_exact, len(scored))))
        exact = {}
        plain = Step(method="exact", lr=args.step_lr, normalize=False, unit_val=False)
        for name, step in (("exact_fresh_adam", plain.with_(continue_warmup=False)),
                           ("exact_warm_adam", plain),
                           ("exact_default", DEFAULT.with_(method="exact", lr=args.step_lr))):
            start = time.perf_counter()
            exact[name] = one_step.utilities(model, collate.batches(few, col, 32), val_b, collate.per_sample_loss,
                                             step, warm_state=log["adam_state"]).utility.numpy()
            out[f"{name}_seconds_per_1000"] = (time.perf_counter() - start) / len(few) * 1000
    noise, ids = np.asarray(scored["noise"]), list(scored["id"])
    n = len(few)
    out["variants"] = {v: report_of(scores[v], noise, ids) for v in VARIANTS}
    for name, u in exact.items():
        out[name] = {"n": n, "auroc": metrics.toxic_auroc(u, noise[:n]),
                     "spearman": {v: float(spearmanr(u, scores[v][:n])[0]) for v in VARIANTS}}
    out["spearman"] = {f"{a}~{b}": float(spearmanr(scores[a], scores[b])[0])
                       for i, a in enumerate(VARIANTS) for b in VARIANTS[i + 1:]}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1))
    print(f"proxy val EM {val_acc:.3f}; per-sample loop {out['per_sample_seconds_per_1000']:.0f} s/1000")
    kinds = sorted(set(noise) & set(pool.TOXIC))
    print("variant | all | " + " | ".join(kinds) + " | top20 noise")
    for v in VARIANTS:
        a = out["variants"][v]["auroc"]
        print(v, f"{a['all']:.2f}", *[f"{a.get(k, float('nan')):.2f}" for k in kinds],
              f"{out['variants'][v]['top20_noise']:.2f}")
    for name in exact:
        print(name, {k: round(v, 2) for k, v in out[name]["auroc"].items()},
              {k: round(v, 2) for k, v in out[name]["spearman"].items()})


if __name__ == "__main__":
    main()
