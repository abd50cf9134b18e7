"""`make bench-sft`: what one target SFT run costs, the loop as it was next to the loop as it is, in one run.

On the main pool and the target's base, one thread, the regime of notebook 05 (batch 32, AdamW lr 1e-3, cosine):

* before: each sample encoded on first use, its image through the frozen tower one by one; the model's own
  loss (logits at every position); AdamW's per-parameter loop; the MLP over padding too;
* after: the pool encoded once in chunks (one tower call per chunk; a grid pays it once for all its runs),
  the loss over answer positions only (`train.AnswerLossTrainer`), torch's fused AdamW, the decoder's MLP on
  real tokens only (`train.real_tokens_only`); the rows between add one lever at a time.

Both train the same samples in the same order for the same steps and are evaluated the same way; the report
gives seconds per step and per run and their ratio, plus where a step's time goes (torch profiler, by op).
Ratios measured side by side are the point, not seconds: another job on the other core moves both.

    python benchmarks/bench_sft.py             # a Full-SFT run's 990 steps per row: ~13 min -> results/bench/sft.json
    python benchmarks/bench_sft.py --quick     # 120 steps per row: ~3 min -> results/bench/sft-quick.json
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench_utility.py: spinning threads on shared cores

import argparse
import json
import platform
import time
from collections import defaultdict

import torch
import yaml

from ost.data import schema
from ost.experiments import sft_grid
from ost.models import base, collate, train
from ost.runs import paths
from ost.runs.settings import SFT

# each lever added to the one before it: "before" is the loop as it was, "after" the loop as it is
VARIANTS = {"before": dict(optim="adamw_torch", answer_loss=False, real_tokens=False),
            "+ answer-only loss": dict(optim="adamw_torch", answer_loss=True, real_tokens=False),
            "+ fused AdamW": dict(optim="adamw_torch_fused", answer_loss=True, real_tokens=False),
            "after (+ MLP skips padding)": dict(optim="adamw_torch_fused", answer_loss=True, real_tokens=True)}
BEFORE, AFTER = list(VARIANTS)[0], list(VARIANTS)[-1]
# op families of a step, for the profile: what the core's matrix units do against everything around them
FAMILIES = {"matmul": ("aten::mm", "aten::addmm", "aten::bmm"), "attention": ("scaled_dot_product",),
            "softmax + loss": ("softmax", "cross_entropy", "nll_loss"), "optimizer": ("adam", "Optimizer.step")}


def encode_one_by_one(model, tok, proc, ds) -> tuple:
    """The rows as the loop before made them: each sample on first use, its image through the tower alone."""
    start = time.perf_counter()
    lazy = collate.EncodedDataset(ds, collate.Collator(tok, proc), vision=train.vision_tower(model))
    rows = [lazy[i] for i in range(len(ds))]
    return rows, time.perf_counter() - start


def encode_in_chunks(model, tok, proc, ds) -> tuple:
    start = time.perf_counter()
    rows = train.encode(model, tok, proc, ds)
    return rows, time.perf_counter() - start


def one_run(target, ds, test, rows, steps, sft: SFT, variant: str) -> dict:
    model, tok, proc = base.load_model(target, progress=False)
    log = train.sft(model, tok, proc, ds, epochs=sft.sft_epochs, lr=sft.sft_lr, batch_size=sft.sft_batch_size,
                    seed=0, progress=False, max_steps=steps, encoded=rows, **VARIANTS[variant])
    start = time.perf_counter()
    ev = train.evaluate(model, tok, proc, test)
    return {"train_seconds": log["train_seconds"], "steps": log["steps"], "train_loss": log["train_loss"],
            "eval_seconds": time.perf_counter() - start, "accuracy": ev["accuracy"], "test_loss": ev["loss"]}


def profile_steps(target, ds, rows, sft: SFT, variant: str, n: int = 20) -> dict:
    """Share of a step's CPU time by op family, over `n` steps after a few unprofiled ones."""
    from torch.profiler import ProfilerActivity, profile
    from transformers import TrainerCallback

    class Window(TrainerCallback):
        def __init__(self):
            self.prof = profile(activities=[ProfilerActivity.CPU])

        def on_step_begin(self, args, state, control, **kw):
            if state.global_step == 5:
                self.prof.__enter__()

        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5 + n:
                self.prof.__exit__(None, None, None)

    window = Window()
    model, tok, proc = base.load_model(target, progress=False)
    train.sft(model, tok, proc, ds, epochs=sft.sft_epochs, lr=sft.sft_lr, batch_size=sft.sft_batch_size, seed=0,
              progress=False, max_steps=5 + n, encoded=rows, callbacks=[window], **VARIANTS[variant])
    shares, total = defaultdict(float), 0.0
    for event in window.prof.key_averages():
        total += event.self_cpu_time_total
        family = next((f for f, keys in FAMILIES.items() if any(k.lower() in event.key.lower() for k in keys)),
                      "elementwise and the rest")
        shares[family] += event.self_cpu_time_total
    return {"ms_per_step": total / 1e3 / n, **{f: round(v / total, 3) for f, v in sorted(shares.items())}}


def matmul_rate(tokens: int, hidden: int, inner: int) -> float:
    """GFLOP/s of one thread on the decoder's MLP product at a step's token count: the core's ceiling here."""
    a, b = torch.randn(tokens, hidden), torch.randn(hidden, inner)
    for _ in range(3):
        a @ b
    start, reps = time.perf_counter(), 30
    for _ in range(reps):
        a @ b
    return 2 * tokens * hidden * inner * reps / (time.perf_counter() - start) / 1e9


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(paths.CONFIGS / "main.yaml"))
    parser.add_argument("--quick", action="store_true", help="120 steps each way instead of a Full-SFT run")
    parser.add_argument("--out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)                      # as each run of the SFT grid
    cfg = yaml.safe_load(open(args.config))
    sft = SFT.from_params(cfg)
    dd = schema.config_pool(cfg)
    ds, test = dd["pool"], dd["test"]
    full_steps = sft_grid.full_steps(len(ds), sft.sft_batch_size, sft.sft_epochs)
    steps = 120 if args.quick else full_steps
    model, tok, proc = base.load_model(sft.target)

    lazy_rows, lazy_seconds = encode_one_by_one(model, tok, proc, ds)
    rows, chunk_seconds = encode_in_chunks(model, tok, proc, ds)
    report = {"pool": len(ds), "test": len(test), "steps": steps, "full_sft_steps": full_steps, "threads": 1,
              "encode_seconds": {"one_by_one": lazy_seconds, "in_chunks": chunk_seconds},
              "runs": {}, "profile": {}}
    for variant in VARIANTS:
        print(f"{variant}: {steps} steps ...", flush=True)
        rows_used = lazy_rows if variant == BEFORE else rows
        report["runs"][variant] = one_run(sft.target, ds, test, rows_used, steps, sft, variant)
        if variant in (BEFORE, AFTER):
            report["profile"][variant] = profile_steps(sft.target, ds, rows_used, sft, variant)
    # a run before encoded its own samples; a run after shares the grid's one encoding (its own share: 1/runs)
    for variant, r in report["runs"].items():
        r["run_seconds"] = (lazy_seconds if variant == BEFORE else 0) + r["train_seconds"] + r["eval_seconds"]
        r["seconds_per_step"] = r["train_seconds"] / r["steps"]
    before, after = report["runs"][BEFORE], report["runs"][AFTER]
    report["ratio_per_step"] = before["seconds_per_step"] / after["seconds_per_step"]
    report["ratio_per_run"] = before["run_seconds"] / after["run_seconds"]
    tokens = round(sft.sft_batch_size * sum(len(r["input_ids"]) for r in rows) / len(rows))
    hidden = model.config.text_config.hidden_size
    report["matmul_gflops_one_thread"] = matmul_rate(tokens, hidden, model.config.text_config.intermediate_size)
    report["machine"] = {"python": platform.python_version(), "torch": torch.__version__,
                         "processor": platform.processor() or platform.machine()}
    out = paths.ROOT / (args.out or f"results/bench/sft{'-quick' if args.quick else ''}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1))
    print(f"{'':28} {'s/step':>8} {'train s':>8} {'eval s':>7} {'run s':>7} {'accuracy':>9} {'train loss':>11}")
    for name, r in report["runs"].items():
        print(f"{name:28} {r['seconds_per_step']:8.4f} {r['train_seconds']:8.1f} {r['eval_seconds']:7.1f} "
              f"{r['run_seconds']:7.1f} {r['accuracy']:9.3f} {r['train_loss']:11.5f}")
    print(f"ratio before/after: per step {report['ratio_per_step']:.2f}x, per run {report['ratio_per_run']:.2f}x; "
          f"encoding the pool: one by one {lazy_seconds:.1f} s, in chunks {chunk_seconds:.1f} s (once per grid)")
    for name, p in report["profile"].items():
        print(f"profile {name}: " + ", ".join(f"{k} {v:.0%}" if k != "ms_per_step" else f"{v:.0f} ms/step"
                                              for k, v in p.items()))
    print(f"one-thread matmul at a step's shape: {report['matmul_gflops_one_thread']:.0f} GFLOP/s -> {out}")


if __name__ == "__main__":
    main()
