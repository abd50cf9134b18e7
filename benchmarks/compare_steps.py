"""Which one-step update should OST take? Measured on the main pool with a warmed proxy.

Warm the proxy base on a random slice of the pool (as OST does), then score a sample of the pool with
each variant and report how well it separates planted toxic from clean samples (AUROC), how many of
each it calls negative, how much noise its top-20 % keeps, its cost, and its Spearman with the others.

    python benchmarks/compare_steps.py --out results/main/step_choice.json
"""
import argparse
import json
import time

import numpy as np
import pandas as pd
import torch
from scipy.stats import spearmanr
from sklearn.metrics import roc_auc_score

from ost import base, collate, data, pool, select, train, utility

VARIANTS = {   # name: (method, optimizer, lr, continue the warmup's Adam state?)
    "first_order_sgd_1e-3": ("first_order", "sgd", 1e-3, False),
    "first_order_adam_warmup_1e-4": ("first_order", "adam", 1e-4, True),
    "exact_sgd_1e-3": ("exact", "sgd", 1e-3, False),
    "exact_adam_fresh_1e-4": ("exact", "adam", 1e-4, False),
    "exact_adam_warmup_1e-4": ("exact", "adam", 1e-4, True),
}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-score", type=int, default=600)
    parser.add_argument("--n-val", type=int, default=128)
    parser.add_argument("--warmup-fraction", type=float, default=0.2)
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    dd = data.load_pool(data.make_pool())
    rng = np.random.default_rng(0)
    order = rng.permutation(len(dd["pool"]))
    warm = dd["pool"].select(order[:round(args.warmup_fraction * len(order))].tolist())
    scored = dd["pool"].select(order[-args.n_score:].tolist())
    model, tok, proc = base.load_base("proxy", progress=False)
    log = train.sft(model, tok, proc, warm, epochs=3, lr=2e-3, seed=0, progress=False)
    col = collate.Collator(tok, proc)
    train_b = collate.batches(scored, col, 32)
    val_b = collate.batches(dd["validation"].select(range(args.n_val)), col, 32)
    toxic = np.array([k in pool.TOXIC for k in scored["noise"]])
    report, scores = {"warmup": {k: log[k] for k in ("n_train", "steps", "train_seconds")}}, {}
    with train.frozen_vision(model):          # score the parameters the warmup trained
        for name, (method, opt, lr, cont) in VARIANTS.items():
            start = time.perf_counter()
            u = utility.one_step_utility(model, train_b, val_b, collate.per_sample_loss, lr=lr, method=method,
                                         optimizer=opt, adam_state=log["adam_state"] if cont else None).numpy()
            seconds = time.perf_counter() - start
            s = pd.Series(u, index=scored["id"])
            top = set(select.top_fraction(s, 0.2))
            scores[name] = u
            report[name] = {"auroc_toxic": float(roc_auc_score(~toxic, u)),
                            "negative_toxic": float((u[toxic] < 0).mean()),
                            "negative_clean": float((u[~toxic] < 0).mean()),
                            "top20_noise": float(np.mean([k in pool.TOXIC for k, i in
                                                          zip(scored["noise"], scored["id"]) if i in top])),
                            "seconds_per_1000": seconds / len(u) * 1000}
            print(name, json.dumps(report[name]), flush=True)
    names = list(scores)
    report["spearman"] = {f"{a}~{b}": float(spearmanr(scores[a], scores[b])[0])
                          for i, a in enumerate(names) for b in names[i + 1:]}
    report["pool_noise_share"] = float(toxic.mean())
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=1)
    print(json.dumps(report["spearman"], indent=1))


if __name__ == "__main__":
    main()
