"""The default step's cost against one training pass, at growing model widths: seconds and peak memory.

Fresh Qwen2-VL configs from the embedded proxy's width to ~60 M trainable parameters (vision tower frozen, as
scoring runs it). Each measurement runs in its own process, so its peak resident memory is its own:
* `train`: one forward and backward pass over the samples, batch by batch (no optimizer step);
* `per_sample`: the default step's first-order utility holding every g_i of a batch (B copies of the trainable
  parameters; skipped where they would not fit in `per_sample.MAX_BYTES`);
* `ghost`: the same utility without the copies (`ost.method.ghost`).
Ratios are taken within this one run, on this machine's load; they are not timed assertions.

    python benchmarks/bench_widths.py --out results/bench/widths.json [--samples 64] [--batch 32]
"""
import argparse
import json
import multiprocessing
import resource
import time
import warnings
from pathlib import Path

WIDTHS = ((64, 2, 2), (256, 4, 4), (512, 6, 8), (768, 8, 12))      # hidden, layers, heads


def _measure(mode: str, width: tuple, samples: int, batch: int) -> dict:
    """Seconds of `mode` at `width`, and this process's peak resident memory, in a fresh process."""
    import torch

    from ost.data import schema
    from ost.method import one_step, per_sample
    from ost.models import base, collate, presets, train

    warnings.filterwarnings("ignore")
    torch.set_num_threads(1)
    dd = schema.config_pool({}, n_groups=max(40, samples), n_val=32, n_test=8, n_cal=0)
    _, tok, proc = base.load_model("proxy")
    hidden, layers, heads = width
    model = presets.build(dict(hidden=hidden, layers=layers, heads=heads, vision_width=64, vision_depth=2,
                               vision_heads=4, rope_theta=10.0), tok).eval()
    col = collate.Collator(tok, proc)
    rows = collate.batches(dd["pool"].select(range(samples)), col, batch)
    val = collate.batches(dd["validation"], col, batch)
    with train.frozen_vision(model):
        params = [p for p in model.parameters() if p.requires_grad]
        out = {"trainable": sum(p.numel() for p in params)}
        if mode == "per_sample" and out["trainable"] * 4 * batch > per_sample.MAX_BYTES:
            return {**out, "seconds": None, "peak_mib": None, "path": "does not fit in MAX_BYTES"}
        held = per_sample.MAX_BYTES
        per_sample.MAX_BYTES = 0 if mode == "ghost" else held      # at 0 the step takes the ghost path
        try:
            gval = None if mode == "train" else one_step.val_gradient(model, val, collate.per_sample_loss,
                                                                      unit_val=True)
            start = time.perf_counter()
            if mode == "train":
                for b in rows:
                    model.zero_grad()
                    collate.per_sample_loss(model, b).mean().backward()
            else:
                one_step.one_step_utility(model, rows, val, collate.per_sample_loss, lr=1e-3, normalize=True,
                                          unit_val=True, val_grad=gval)
            seconds = time.perf_counter() - start
        finally:
            per_sample.MAX_BYTES = held
    return {**out, "seconds": seconds, "peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "path": mode if mode == "train" else one_step.last_path}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args(argv)
    ctx = multiprocessing.get_context("spawn")
    rows = []
    for width in WIDTHS:
        row = {"hidden": width[0], "layers": width[1]}
        for mode in ("train", "per_sample", "ghost"):
            with ctx.Pool(1) as pool:
                row[mode] = pool.apply(_measure, (mode, width, args.samples, args.batch))
        row["trainable"] = row["train"]["trainable"]
        for mode in ("per_sample", "ghost"):
            s = row[mode]["seconds"]
            row[mode]["vs_train"] = None if s is None else s / row["train"]["seconds"]
        rows.append(row)
        cells = [f"{m} " + ("–" if row[m]["seconds"] is None else f"{row[m]['vs_train']:.2f}x "
                            f"({row[m]['peak_mib']:.0f} MiB)") for m in ("per_sample", "ghost")]
        print(f"{row['trainable'] / 1e6:6.1f} M: train {row['train']['seconds']:.1f} s "
              f"({row['train']['peak_mib']:.0f} MiB); " + "; ".join(cells), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"samples": args.samples, "batch": args.batch, "threads": 1, "rows": rows},
                                   indent=1) + "\n")


if __name__ == "__main__":
    main()
