"""Which one-step update should OST take? Measured on the main pool with a warmed proxy.

Warm the proxy base on a random slice of the pool (as OST does), then score the pool with each
variant and report how well it separates planted toxic from clean samples (AUROC), how many of each
it calls negative, how much noise its top-20 % keeps, its cost, and its Spearman with the others.

With `--sft-seeds`, the question is settled the way the paper settles it: the target is fine-tuned on
each variant's top-20 % (fixed compute: the steps of a Full-SFT run) and top-50 % (same epochs), next
to a random subset and the proxy's lowest-loss samples, and scored on the clean held-out test set.

    python benchmarks/compare_steps.py --out results/history/step_choice.json
    python benchmarks/compare_steps.py --n-score 0 --sft-seeds 0 1 --out results/history/step_choice_sft.json
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
from bench_utility import POOL  # the 6,300-sample pool docs/history.md's step choice was measured on
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from ost.data import pool, schema
from ost.experiments import sft_grid
from ost.method import one_step, select
from ost.method.step import Step
from ost.models import base, collate, train
from ost.runs import paths
from ost.runs.settings import SFT, Warmup

VARIANTS = {
    "first_order_sgd_1e-3": Step(optimizer="sgd", lr=1e-3, normalize=False, unit_val=False),
    "first_order_adam_warmup_1e-4": Step(optimizer="adam", lr=1e-4, normalize=False, unit_val=False),
    "exact_sgd_1e-3": Step(method="exact", optimizer="sgd", lr=1e-3, normalize=False, unit_val=False),
    "exact_adam_fresh_1e-4": Step(method="exact", optimizer="adam", lr=1e-4, continue_warmup=False, normalize=False,
                                  unit_val=False),
    "exact_adam_warmup_1e-4": Step(method="exact", optimizer="adam", lr=1e-4, normalize=False, unit_val=False),
}


def detection(u, toxic, noise, ids):
    s = pd.Series(u, index=ids)
    top = set(select.top_fraction(s, 0.2))
    return {"auroc_toxic": float(roc_auc_score(~toxic, u)),
            "negative_toxic": float((u[toxic] < 0).mean()), "negative_clean": float((u[~toxic] < 0).mean()),
            "top20_noise": float(np.mean([k in pool.TOXIC for k, i in zip(noise, ids) if i in top]))}


def score_variants(model, tok, proc, log, scored, val_b, names, cache: Path | None):
    """One column of utilities per variant (cached in `cache`, a parquet, so a rerun only trains)."""
    frame = pd.read_parquet(cache) if cache and cache.exists() else pd.DataFrame(index=list(scored["id"]))
    seconds = json.loads(cache.with_suffix(".json").read_text()) if cache and cache.exists() else {}
    train_b = collate.batches(scored, collate.Collator(tok, proc), 32)
    with train.frozen_vision(model):          # score the parameters the warmup trained
        for name in names:
            if name in frame:
                continue
            start = time.perf_counter()
            frame[name] = one_step.utilities(model, train_b, val_b, collate.per_sample_loss, VARIANTS[name],
                                             warm_state=log["adam_state"]).utility.numpy()
            seconds[name] = time.perf_counter() - start
            print(f"scored {name}: {seconds[name]:.0f} s", flush=True)
            if cache:
                cache.parent.mkdir(parents=True, exist_ok=True)
                frame.to_parquet(cache)
                cache.with_suffix(".json").write_text(json.dumps(seconds))
    frame["low_loss"] = -train.answer_losses(model, tok, proc, scored).numpy()
    return frame, seconds


def subsets(frame, dd, fractions=(0.2, 0.5), seed=0):
    """(method, fraction) → ids: every variant's top fraction, its task-quota version, random, low loss."""
    ids = list(dd["pool"]["id"])
    tasks = pd.Series(dd["pool"]["task"], index=ids)
    rng = np.random.default_rng(seed)
    out = {}
    for f in fractions:
        out[("random", f)] = sorted(rng.choice(ids, select.n_for(f, len(ids)), replace=False).tolist())
        for name in frame:
            out[(name, f)] = select.top_fraction(frame[name], f)
            if f < 0.5 and name != "low_loss":
                out[(name + "+task_quota", f)] = select.coverage_top_fraction(frame[name], tasks, f)
    return out


def run_sft(dd, chosen, seeds):
    """Target SFT (the main regime, `ost.runs.settings.SFT`) on each subset: top-20 at fixed compute (a Full
    run's steps), top-50 at same epochs, next to Full-SFT; the runs are logged under data/step_choice/."""
    names = {(name, f): select.subset_name(name, f) for name, f in chosen}
    member = select.membership({names[k]: ids for k, ids in chosen.items()}, dd["pool"]["id"])
    grid = {"fixed_compute": [n for (_, f), n in names.items() if f < 0.5],
            "same_epochs": [n for (_, f), n in names.items() if f >= 0.5]}
    return sft_grid.train_subsets(dd, member, paths.DATA / "step_choice" / "sft_runs.jsonl", grid=grid,
                                  sft=SFT(sft_seeds=tuple(seeds)))


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-score", type=int, default=600, help="pool samples scored; 0 = the whole pool")
    parser.add_argument("--n-val", type=int, default=128)
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--sft-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    dd = schema.load_pool(schema.make_pool(**POOL))
    order = np.random.default_rng(0).permutation(len(dd["pool"]))
    warm = dd["pool"].select(order[:round(args.warmup_fraction * len(order))].tolist())
    scored = dd["pool"] if args.n_score == 0 else dd["pool"].select(order[-args.n_score:].tolist())
    model, tok, proc = base.load_base("proxy", progress=False)
    log = train.sft(model, tok, proc, warm, **Warmup(warmup_epochs=3.0).sft_kwargs(), progress=False)
    col = collate.Collator(tok, proc)
    val_b = collate.batches(dd["validation"].select(range(args.n_val)), col, 32)
    cache = paths.DATA / "step_choice" / f"scores-{len(scored)}.parquet" if args.n_score == 0 else None
    frame, seconds = score_variants(model, tok, proc, log, scored, val_b, args.variants, cache)
    toxic = np.array([k in pool.TOXIC for k in scored["noise"]])
    report = {"warmup": {k: log[k] for k in ("n_train", "steps", "train_seconds")},
              "n_scored": len(scored), "n_val": args.n_val, "pool_noise_share": float(toxic.mean())}
    for name in frame:
        report[name] = detection(frame[name].to_numpy(), toxic, scored["noise"], frame.index)
        if name in seconds:
            report[name]["seconds_per_1000"] = seconds[name] / len(scored) * 1000
        print(name, json.dumps(report[name]), flush=True)
    names = list(frame)
    report["spearman"] = {f"{a}~{b}": float(spearmanr(frame[a], frame[b])[0])
                          for i, a in enumerate(names) for b in names[i + 1:]}
    if args.sft_seeds:
        report["sft"] = run_sft(dd, subsets(frame, dd), args.sft_seeds)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))
    print(json.dumps(report["spearman"], indent=1))


if __name__ == "__main__":
    main()
