"""`make bench`: what scoring a pool costs next to training on it, measured in one run here.

Ratios, not timings, are the point (the machine is noisy): first-order utility and exact utility per
sample against one proxy training epoch over the same samples, the floor the fast path aims at.
"""
import argparse
import json
import time

import torch

from ost import base, collate, data, train, utility


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--n-train", type=int, default=256)
    parser.add_argument("--n-val", type=int, default=64)
    parser.add_argument("--n-exact", type=int, default=16, help="samples timed on the exact path")
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    dd = data.load_pool(data.make_pool(n_groups=max(args.n_train, 64), copies=1, n_val=args.n_val, n_test=8))
    model, tok, proc = base.load_base("proxy")
    col = collate.Collator(tok, proc)
    pool, val = dd["pool"].select(range(args.n_train)), collate.batches(dd["validation"], col, args.batch_size)
    train_b = collate.batches(pool, col, args.batch_size)

    start = time.perf_counter()
    train.sft(model, tok, proc, pool, epochs=1, batch_size=args.batch_size, lr=1e-5, progress=False)
    epoch = time.perf_counter() - start
    model, tok, proc = base.load_base("proxy", progress=False)

    results = {"n_train": args.n_train, "n_val": args.n_val, "epoch_seconds": epoch}
    for opt in ("sgd", "adam"):
        start = time.perf_counter()
        utility.one_step_utility(model, train_b, val, collate.per_sample_loss, lr=1e-4, optimizer=opt)
        results[f"first_order_{opt}_seconds"] = time.perf_counter() - start
        results[f"first_order_{opt}_path"] = utility.last_path
    small = collate.batches(pool.select(range(args.n_exact)), col, args.batch_size)
    start = time.perf_counter()
    utility.one_step_utility(model, small, val, collate.per_sample_loss, lr=1e-4, method="exact", optimizer="adam")
    per_sample = (time.perf_counter() - start) / args.n_exact
    results["exact_adam_seconds_per_sample"] = per_sample
    results["ratio_first_order_sgd_to_epoch"] = results["first_order_sgd_seconds"] / epoch
    results["ratio_exact_to_epoch"] = per_sample * args.n_train / epoch
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
