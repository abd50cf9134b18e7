"""Is the embedded default real enough to test the paper? Three numbers say so or not.

(a) the target fine-tuned on the pool's clean part reaches a clearly non-trivial held-out exact match;
(b) fine-tuned on the whole noisy pool it scores clearly lower, same epochs, over several seeds;
(c) one SFT run on the full pool is cheap enough for many runs per experiment.

    python -m ost.credibility --config configs/main.yaml --out results/main/credibility.json
"""
import argparse
import json
import statistics
import time
from pathlib import Path

import yaml

from . import base, data, train
from .regime import clean_part

SFT_DEFAULTS = dict(preset="target", sft_epochs=6, sft_lr=2e-3, sft_batch_size=32, seeds=[0, 1, 2])
GOALS = dict(clean_accuracy=0.60, noise_gap=0.05, full_run_seconds=180)


def run(config: dict, progress: bool = True) -> dict:
    pool_cfg = {k: v for k, v in config.items() if k in data.POOL_DEFAULTS}
    sft_cfg = {**SFT_DEFAULTS, **{k: v for k, v in config.items() if k in SFT_DEFAULTS}}
    dd = data.load_pool(data.make_pool(**pool_cfg))
    subsets = {"full": dd["pool"], "clean": clean_part(dd["pool"])}
    start = time.perf_counter()
    base.load_base(sft_cfg["preset"], progress=progress)
    base_seconds = time.perf_counter() - start
    rows = []
    for seed in sft_cfg["seeds"]:
        for name, subset in subsets.items():
            model, tok, proc = base.load_base(sft_cfg["preset"], progress=False)
            log = train.sft(model, tok, proc, subset, epochs=sft_cfg["sft_epochs"], lr=float(sft_cfg["sft_lr"]),
                            batch_size=sft_cfg["sft_batch_size"], seed=seed, progress=progress)
            ev = train.evaluate(model, tok, proc, dd["test"])
            rows.append({"subset": name, "seed": seed, "accuracy": ev["accuracy"], "per_task": ev["per_task"],
                         "test_loss": ev["loss"], "n_train": log["n_train"], "steps": log["steps"],
                         "train_seconds": log["train_seconds"]})
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_task"}), flush=True)
    acc = {n: [r["accuracy"] for r in rows if r["subset"] == n] for n in subsets}
    gaps = [c - f for c, f in zip(acc["clean"], acc["full"])]
    full_seconds = max(r["train_seconds"] for r in rows if r["subset"] == "full")
    figures = {"clean_accuracy_mean": statistics.mean(acc["clean"]),
               "full_accuracy_mean": statistics.mean(acc["full"]),
               "noise_gap_per_seed": gaps, "noise_gap_mean": statistics.mean(gaps),
               "full_run_seconds_max": full_seconds, "base_seconds": base_seconds}
    holds = {"a_clean_accuracy": figures["clean_accuracy_mean"] >= GOALS["clean_accuracy"],
             "b_noise_gap": min(gaps) >= GOALS["noise_gap"],
             "c_full_run_seconds": full_seconds <= GOALS["full_run_seconds"]}
    return {"config": {**pool_cfg, **sft_cfg}, "goals": GOALS, "figures": figures, "holds": holds,
            "pool_noise": data.composition(dd["pool"]), "rows": rows}


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True, help="a configs/*.yaml file")
    parser.add_argument("--out", type=Path, required=True, help="where the JSON report goes")
    args = parser.parse_args(argv)
    report = run(yaml.safe_load(args.config.read_text()) or {})
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1))
    print(json.dumps({"figures": report["figures"], "holds": report["holds"]}, indent=1))


if __name__ == "__main__":
    main()
