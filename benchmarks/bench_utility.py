"""`make bench`: what OST scoring costs next to one training epoch, measured in one run.

On the main pool and the proxy: warm the proxy base for one epoch on n samples (the epoch timing,
and the Adam state the default step continues), then score the same n samples with the first-order
fast path, ≥ 500 of them with the exact path (Spearman fast~exact), a few with the naive loop
(deepcopy, torch.optim step, full validation pass per sample), and pools of 10k and 100k samples with
`ost.method.score` in child processes (peak memory against N). Ratios, not seconds, are the point:

    python benchmarks/bench_utility.py                 # ~15 min on 2 cores → results/bench/scoring.json
    python benchmarks/bench_utility.py --quick         # a few minutes → results/bench/scoring-quick.json
"""
import os

# On shared cores, OpenMP threads that spin while waiting burn the CPU other jobs need and make a
# tiny model's timings swing 3-20x (measured); passive waiting keeps the ratios meaningful.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import copy
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import transformers
from scipy.stats import spearmanr
from tqdm.auto import tqdm

from ost.data import schema
from ost.method import one_step
from ost.method.step import DEFAULT, PAPER, Step
from ost.models import base, collate, presets, train
from ost.runs import paths
from ost.runs.settings import Warmup

STEPS = {"default": DEFAULT, "paper": PAPER.with_(lr=1e-3)}   # the project's step and the paper's plain one
EPOCH = Warmup(warmup_epochs=1.0)     # one epoch of the stage-01 warm-up: the cost unit
# the pool docs/performance.md was measured on (6,300 samples, 400 test questions), not the main scale's
POOL = dict(n_groups=3000, n_test=400)
QUICK = dict(n=1000, n_exact=100, n_naive=4, rss_sizes=[2_000, 20_000])


class Clock:
    """Wall and CPU seconds since start (CPU time far from wall x threads: starved or spinning threads)."""

    def __init__(self):
        self.wall, self.cpu = time.perf_counter(), time.process_time()

    def read(self):
        return time.perf_counter() - self.wall, time.process_time() - self.cpu


def naive_utilities(model, samples, val, col, step: Step, warm_state):
    """The loop OST replaces: per sample a model copy, one real optimizer step, a full val pass."""
    with torch.no_grad():
        base_loss = _val_loss(model, val)
    out = []
    for i in tqdm(range(len(samples)), desc="naive loop", leave=False):
        m = copy.deepcopy(model).eval()
        mine = [p for p in m.parameters() if p.requires_grad]
        state = step.adam_state(warm_state)
        if step.optimizer == "sgd":
            opt = torch.optim.SGD(mine, lr=step.lr)
        else:       # load_state_dict shares the state's tensors and step() writes into them: copy first
            opt = torch.optim.Adam(mine, lr=step.lr)
            if state is not None:
                opt.load_state_dict(copy.deepcopy(state))
            for g in opt.param_groups:
                g["lr"] = step.lr
        collate.per_sample_loss(m, col([samples[i]])).sum().backward()
        if step.normalize:
            norm = torch.sqrt(sum((p.grad.double() ** 2).sum() for p in mine if p.grad is not None))
            for p in mine:
                if p.grad is not None and norm > 0:
                    p.grad.div_(norm.to(p.grad.dtype))
        opt.step()
        with torch.no_grad():
            out.append(base_loss - _val_loss(m, val))
    return np.array(out)


def _val_loss(model, val):
    losses = torch.cat([collate.per_sample_loss(model, b) for b in val])
    return float(losses.double().mean())


def peak_rss(model, tok, proc, warm_state, step: Step, sizes, threads):
    """Per pool size: the child's peak RSS and scoring seconds (pools cached under data/pools)."""
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        presets.save(Path(tmp) / "model", model, tok, proc)
        cmd = [sys.executable, str(Path(__file__).with_name("_rss.py")), "--model", str(Path(tmp) / "model"),
               "--step", json.dumps(step.as_dict()), "--threads", str(threads)]
        if step.adam_state(warm_state) is not None:
            torch.save(warm_state, Path(tmp) / "adam.pt")
            cmd += ["--adam-state", str(Path(tmp) / "adam.pt")]
        for n in sizes:
            print(f"[rss] building/finding a pool of {n} samples …", flush=True)
            folder = schema.make_pool(**{**POOL, "n_groups": n // 2}, copies=2)
            print(f"[rss] scoring {n} samples in a child process", flush=True)
            res = subprocess.run(cmd + ["--pool", str(folder), "--n", str(n)], stdout=subprocess.PIPE, text=True,
                                 check=True)
            out[str(n)] = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"[rss] {n}: {json.dumps(out[str(n)])}", flush=True)
    return out


def machine():
    return {"platform": platform.platform(), "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "transformers": transformers.__version__, "torch_threads": torch.get_num_threads(),
            "OMP_WAIT_POLICY": os.environ.get("OMP_WAIT_POLICY"), "loadavg_start": list(os.getloadavg())}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes: a smoke run, not the result")
    parser.add_argument("--step", choices=tuple(STEPS), default="default", help="the step being measured")
    parser.add_argument("--n", type=int, default=None, help="samples trained and scored (default: the whole pool)")
    parser.add_argument("--n-exact", type=int, default=500, help="samples on the exact path (Spearman)")
    parser.add_argument("--n-naive", type=int, default=16, help="samples on the naive loop (extrapolated)")
    parser.add_argument("--rss-sizes", type=int, nargs="*", default=[10_000, 100_000])
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:              # quick sizes, unless given explicitly
        parser.set_defaults(**QUICK)
        args = parser.parse_args(argv)
    if not 1 <= args.n_naive <= args.n_exact:
        parser.error("need 1 <= --n-naive <= --n-exact (the naive loop re-scores exact samples)")
    out = args.out or paths.RESULTS / "bench" / ("scoring-quick.json" if args.quick else "scoring.json")
    if args.threads:
        torch.set_num_threads(args.threads)
    info = machine()

    dd = schema.load_pool(schema.make_pool(**POOL))
    n = min(args.n or len(dd["pool"]), len(dd["pool"]))
    pool = dd["pool"].select(range(n))
    model, tok, proc = base.load_base("proxy", progress=False)
    col = collate.Collator(tok, proc)
    val = collate.batches(dd["validation"], col, args.batch_size)
    print(f"[epoch] warming the proxy on {n} samples for one epoch", flush=True)
    clock = Clock()
    log = train.sft(model, tok, proc, pool, **EPOCH.sft_kwargs(), progress=True)
    epoch_cpu = clock.read()[1]
    res = {"n_samples": n, "n_val": len(dd["validation"]), "step": args.step,
           "step_settings": STEPS[args.step].as_dict(),
           "epoch_seconds": log["train_seconds"], "epoch_cpu_seconds": epoch_cpu,
           "warmup": {**EPOCH.sft_kwargs(), "steps": log["steps"]}}
    rng = np.random.default_rng(0)
    exact_idx = np.sort(rng.choice(n, min(args.n_exact, n), replace=False))
    per_step = {}
    with train.frozen_vision(model):        # the parameters the warmup trained, as OST scores them
        for name in sorted(STEPS, key=lambda s: s != args.step):
            step = STEPS[name]
            print(f"[{name}] first-order on {n} samples", flush=True)
            clock = Clock()
            batches = collate.batches(pool, col, args.batch_size)
            collate_s = clock.read()[0]
            scored = one_step.utilities(model, tqdm(batches, desc="first-order", leave=False), val,
                                        collate.per_sample_loss, step.with_(method="first_order"),
                                        warm_state=log["adam_state"])
            fast = scored.utility.numpy()
            wall, cpu = clock.read()
            r = {"first_order_seconds": wall, "first_order_cpu_seconds": cpu, "collate_seconds": collate_s,
                 "path": scored.path}
            print(f"[{name}] exact on {len(exact_idx)} samples", flush=True)
            sub = pool.select(exact_idx.tolist())
            clock = Clock()
            exact = one_step.utilities(
                model, tqdm(collate.batches(sub, col, args.batch_size), desc="exact", leave=False), val,
                collate.per_sample_loss, step.with_(method="exact"), warm_state=log["adam_state"]).utility.numpy()
            r["exact_seconds_per_sample"] = clock.read()[0] / len(exact_idx)
            r["spearman_fast_exact"] = float(spearmanr(fast[exact_idx], exact)[0])
            r["n_exact"] = len(exact_idx)
            per_step[name] = r
            print(f"[{name}] {json.dumps(r)}", flush=True)
            if name != args.step:
                continue
            print(f"[{name}] naive loop on {args.n_naive} samples", flush=True)
            clock = Clock()
            naive = naive_utilities(model, sub.select(range(args.n_naive)), val, col, step, log["adam_state"])
            res["naive_seconds_per_sample"] = clock.read()[0] / args.n_naive
            res["n_naive"] = args.n_naive
            res["naive_minus_exact_max_abs"] = float(np.abs(naive - exact[:args.n_naive]).max())
            res["exact_utility_max_abs"] = float(np.abs(exact[:args.n_naive]).max())
            res.update({k: r[k] for k in ("first_order_seconds", "exact_seconds_per_sample", "spearman_fast_exact")})
            rss = peak_rss(model, tok, proc, log["adam_state"], step, args.rss_sizes, torch.get_num_threads())
    res["peak_rss_mb"] = {k: v["peak_rss_mb"] for k, v in rss.items()}       # VmHWM, mapped pool pages too
    res["peak_anon_mb"] = {k: v["peak_anon_mb"] for k, v in rss.items()}     # heap and tensors only
    res["score_pool"] = {k: {"n": v["n"], "seconds_per_1000": v["seconds"] / v["n"] * 1000,
                             **{m: v[m] for m in ("rss_before_scoring_mb", "rss_file_end_mb")}}
                         for k, v in rss.items()}
    res["steps"] = per_step
    fast_per_sample = res["first_order_seconds"] / n
    small, large = (str(s) for s in (min(args.rss_sizes), max(args.rss_sizes)))
    res["ratios"] = {"first_order_to_epoch": res["first_order_seconds"] / res["epoch_seconds"],
                     "naive_to_first_order_per_sample": res["naive_seconds_per_sample"] / fast_per_sample,
                     "exact_to_first_order_per_sample": res["exact_seconds_per_sample"] / fast_per_sample,
                     "peak_rss_large_to_small": res["peak_rss_mb"][large] / res["peak_rss_mb"][small],
                     "peak_anon_large_to_small": res["peak_anon_mb"][large] / res["peak_anon_mb"][small]}
    res["goals"] = {"first_order_to_epoch <= 1.3": res["ratios"]["first_order_to_epoch"] <= 1.3,
                    "naive_to_first_order >= 100": res["ratios"]["naive_to_first_order_per_sample"] >= 100,
                    "spearman_fast_exact >= 0.95": res["spearman_fast_exact"] >= 0.95,
                    "peak_anon flat (large/small <= 1.1)": res["ratios"]["peak_anon_large_to_small"] <= 1.1}
    res["machine"] = {**info, "loadavg_end": list(os.getloadavg())}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=1))
    print_table(res, small, large)
    print(f"written: {out}")


def print_table(res, small, large):
    q = res["ratios"]
    other = {k: v["spearman_fast_exact"] for k, v in res["steps"].items() if k != res["step"]}
    rows = [("one epoch (sft)", f"{res['epoch_seconds']:.1f} s"),
            ("first-order (fast)", f"{res['first_order_seconds']:.1f} s = {q['first_order_to_epoch']:.2f} x epoch"
                                   "  (goal <= 1.3)"),
            ("exact", f"{res['exact_seconds_per_sample']:.3f} s/sample = "
                      f"{q['exact_to_first_order_per_sample']:.0f} x fast"),
            ("naive loop", f"{res['naive_seconds_per_sample']:.3f} s/sample = "
                           f"{q['naive_to_first_order_per_sample']:.0f} x fast  (goal >= 100)"),
            ("Spearman fast~exact", f"{res['spearman_fast_exact']:.3f} on {res['steps'][res['step']]['n_exact']}"
                                    f"  (goal >= 0.95; " + ", ".join(f"{k}: {v:.3f}" for k, v in other.items()) + ")"),
            ("ost.method.score (parts of 256)", f"{res['score_pool'][large]['seconds_per_1000']:.1f} s per 1,000 vs "
                                         f"{res['first_order_seconds'] / res['n_samples'] * 1000:.1f} fast"),
            (f"peak RSS {small} / {large}", f"{res['peak_rss_mb'][small]:.0f} / {res['peak_rss_mb'][large]:.0f} MB"
                                            f" = x{q['peak_rss_large_to_small']:.2f}  (with the pool's mapped pages)"),
            ("  of it heap (anon)", f"{res['peak_anon_mb'][small]:.0f} / {res['peak_anon_mb'][large]:.0f} MB"
                                    f" = x{q['peak_anon_large_to_small']:.2f}  (goal: flat)")]
    m = res["machine"]
    print(f"\nstep {res['step']} {res['step_settings']}, n = {res['n_samples']}, val = {res['n_val']}, "
          f"threads = {m['torch_threads']}, load {m['loadavg_start'][0]:.1f} -> {m['loadavg_end'][0]:.1f}")
    for k, v in rows:
        print(f"  {k:<24} {v}")


if __name__ == "__main__":
    main()
