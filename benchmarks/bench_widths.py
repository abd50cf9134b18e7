"""The default step's cost against one training pass, at growing model widths: seconds and peak memory.

Fresh Qwen2-VL configs from the embedded proxy's width to ~60 M trainable parameters (vision tower frozen, as
scoring runs it). Each measurement runs in its own process, so its peak resident memory is its own:
* `train`: one forward and backward pass over the samples, batch by batch (no optimizer step);
* `ghost`: the default step's first-order utility, the way it is scored (`ost.method.ghost`: no per-sample copy
  of the parameters);
* `per_sample`: the same utility holding every g_i of a batch (B copies of the trainable parameters; skipped
  where they would not fit in `per_sample.MAX_BYTES`): the reference, and the fast path before the ghost one.
Every width runs at two batch sizes. Seconds compare at the larger. Memory is what each pass takes beyond what was
resident before it (VmHWM reset at its start, Linux): the ghost pass should need about what a training pass needs,
at either batch size, where the per-sample one adds B copies of the parameters.
Ratios are taken within this one run, on this machine's load; they are not timed assertions.

    python benchmarks/bench_widths.py --out results/bench/widths.json [--render docs/widths.md]
    python benchmarks/bench_widths.py --render docs/widths.md --from results/bench/widths.json
"""
import argparse
import gc
import json
import multiprocessing
import time
import warnings
from pathlib import Path

from _rss import status_mb  # benchmarks/ is the script's folder

WIDTHS = ((64, 2, 2), (256, 4, 4), (512, 6, 8), (768, 8, 12))      # hidden, layers, heads
MODES = ("train", "ghost", "per_sample")


def _reset_peak() -> None:
    """Start VmHWM again from the current resident memory (Linux: clear_refs 5)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _measure(mode: str, width: tuple, samples: int, batch: int) -> dict:
    """Seconds of `mode` at `width` and the memory its pass takes beyond what was resident before it (the model,
    the data, the validation gradient), in a fresh process."""
    import torch

    from ost.data import schema
    from ost.method import one_step, per_sample
    from ost.method.step import DEFAULT
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
            return {**out, "seconds": None, "pass_mib": None, "resident_mib": None, "path": "does not fit in MAX_BYTES"}
        gval = None if mode == "train" else one_step.val_gradient(model, val, collate.per_sample_loss, unit_val=True)
        gc.collect()
        resident = status_mb("VmRSS")
        _reset_peak()
        start = time.perf_counter()
        path = mode
        if mode == "train":
            for b in rows:
                model.zero_grad()
                collate.per_sample_loss(model, b).mean().backward()
        else:       # the default step's cost (an SGD direction here: a fresh model has no warm-up state to continue)
            sgd = DEFAULT.with_(optimizer="sgd", lr=1e-3)      # normalised, both sides at unit length
            path = one_step.utilities(model, rows, val, collate.per_sample_loss, sgd, val_grad=gval, backend=mode).path
        seconds = time.perf_counter() - start
        pass_mib = status_mb("VmHWM") - resident
    return {**out, "seconds": seconds, "pass_mib": pass_mib, "resident_mib": resident, "path": path}


def _row(width, samples, batches, ctx) -> dict:
    row = {"hidden": width[0], "layers": width[1], "batches": {}}
    for batch in batches:
        cell = {}
        for mode in MODES:
            with ctx.Pool(1) as pool:
                cell[mode] = pool.apply(_measure, (mode, width, samples, batch))
        for mode in MODES[1:]:
            s = cell[mode]["seconds"]
            cell[mode]["vs_train"] = None if s is None else s / cell["train"]["seconds"]
        row["batches"][str(batch)] = cell
    row["trainable"] = cell["train"]["trainable"]
    return row


def _cell(m) -> str:
    return "–" if m["seconds"] is None else f"{m['vs_train']:.2f}×"


def _mib(a, b) -> str:
    return " / ".join("–" if m["pass_mib"] is None else f"{m['pass_mib']:.0f}" for m in (a, b))


def render(result: dict) -> str:
    """docs/widths.md from the benchmark's JSON: seconds at the larger batch, memory at both."""
    small, large = (str(b) for b in result["batches"])
    lines = ["# The default step against a training pass, by model width", "",
             f"Written by `make bench` (`benchmarks/bench_widths.py`) from `results/bench/widths.json`: "
             f"{result['samples']} pool samples, one thread, fresh Qwen2-VL configs with the vision tower frozen. "
             f"Time is the step's seconds over one forward and backward pass of the same samples at batch {large}. "
             f"Memory is what each pass takes beyond what was resident before it (the model, the samples, the "
             f"validation gradient), in MiB at batch {small} / {large}: the peak resident memory while it runs "
             "minus the resident memory at its start. The training pass's holds its activations and the "
             "parameters' gradients. `ghost` is the path the default step takes; `per_sample` holds every g_i of "
             "a batch, the reference the tests compare with (–: its copies would not fit in "
             "`per_sample.MAX_BYTES`).", "",
             "| trainable | train s | ghost time | per-sample time | training pass MiB | ghost MiB | per-sample MiB |",
             "|---|---|---|---|---|---|---|"]
    for row in result["rows"]:
        a, b = row["batches"][small], row["batches"][large]
        lines.append(f"| {row['trainable'] / 1e6:.1f} M | {b['train']['seconds']:.1f} | {_cell(b['ghost'])} | "
                     f"{_cell(b['per_sample'])} | {_mib(a['train'], b['train'])} | {_mib(a['ghost'], b['ghost'])} | "
                     f"{_mib(a['per_sample'], b['per_sample'])} |")
    return "\n".join(lines) + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, help="measure, and write the JSON here")
    parser.add_argument("--from", dest="source", type=Path, help="render this JSON instead of measuring")
    parser.add_argument("--render", type=Path, help="write the markdown table here")
    parser.add_argument("--samples", type=int, default=64)
    parser.add_argument("--batches", type=int, nargs=2, default=[8, 32], help="a small and a large batch size")
    args = parser.parse_args(argv)
    if (args.out is None) == (args.source is None):
        parser.error("give --out (measure) or --from (render a measured JSON)")
    if args.source is not None:
        result = json.loads(args.source.read_text())
    else:
        ctx = multiprocessing.get_context("spawn")
        rows = []
        for width in WIDTHS:
            rows.append(_row(width, args.samples, sorted(args.batches), ctx))
            print(render({"samples": args.samples, "batches": sorted(args.batches), "rows": rows}).splitlines()[-1],
                  flush=True)
        result = {"samples": args.samples, "batches": sorted(args.batches), "threads": 1, "rows": rows}
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1) + "\n")
    if args.render is not None:
        args.render.write_text(render(result))


if __name__ == "__main__":
    main()
