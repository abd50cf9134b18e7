"""Target check of the subset rules that need only scores, on one pool, at fixed compute (20 %).

For one pool it warms the proxy as notebook 01 does, scores every sample with the default step and measures
the validation shift (notebook 02's two passes), builds each named rule's subset (`ost.method.coverage.RULES`
that need no features) next to the references — Full-SFT, a random 20 % and `clean-random` (a random 20 % of
the samples planted clean: the only subset here that reads a label) — and fine-tunes the target on each for
the optimizer steps of one 6-epoch Full-SFT run, seeds paired (notebook 05's settings). Each subset's planted
composition is reported to describe it, never to build it. Scores are cached; every run is appended to a
JSON-lines log keyed by the subset's ids and reused, so a rerun trains only what is missing.

    python benchmarks/check_selector.py --config configs/main.yaml --out results/bench/selector_check.jsonl
    python benchmarks/check_selector.py --config configs/main.yaml --pool-seed 1 --extra-kinds \
        --out results/bench/selector_check_pool1.jsonl
"""
import argparse
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
import screen_selectors as screen  # noqa: E402  (the same references, composition and target runs)

from ost.data import pool as synth  # noqa: E402
from ost.method import coverage, score, shift, subset, warmup  # noqa: E402
from ost.runs.settings import Selection, Warmup  # noqa: E402

FRACTION = 0.2


def scored(dd, warm_up: Warmup, cache: Path) -> pd.DataFrame:
    """id, utility, loss, shift, status of every pool sample: warmed, scored and shifted once, then read back."""
    path = cache / "scores_shift.parquet"
    if path.exists():
        return pd.read_parquet(path)
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    warmed = warmup.warm_up(dd, warm_up)
    model, tok, proc, log = warmed.model, warmed.tokenizer, warmed.processor, warmed.log
    frame = score.score_samples(model, tok, proc, dd["pool"], dd["validation"], warm_state=log["adam_state"],
                                with_loss=True)
    moved = shift.validation_shift(model, tok, proc, dd["pool"], dd["validation"])
    frame = frame.join(moved[["shift"]]).rename_axis("id").reset_index()
    frame["status"] = np.where(np.isfinite(frame[["utility", "loss", "shift"]]).all(axis=1), "ok", "nonfinite")
    frame.to_parquet(path, index=False)
    print(f"warmed, scored and shifted in {time.perf_counter() - start:.0f} s", flush=True)
    return frame


def subsets(dd, frame, seed) -> dict:
    """{name: ids}: the references, then every rule that reads scores only."""
    refs = screen.references(dd, seed)
    out = {"full": refs["full"], "random": refs["random"], "clean-random": refs["oracle clean-random"]}
    for name in coverage.RULES:
        if name not in coverage.NEEDS_FEATURES:
            out[name] = subset.choose(frame.set_index("id"), FRACTION, Selection(selector=name, selector_seed=seed))
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--pool-seed", type=int, default=None)
    parser.add_argument("--extra-kinds", action="store_true", help=f"plant {', '.join(synth.HELD_OUT)} too")
    parser.add_argument("--only", nargs="*", default=None, help="train only these subsets")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, required=True, help="the JSON-lines log of target runs")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = yaml.safe_load(args.config.read_text()) or {}
    dd, tag, _ = screen.pool_for(config, args.pool_seed, args.extra_kinds)
    warm_up = Warmup.from_params(config)
    frame = scored(dd, warm_up, Path("data/runs/selector_check") / f"{tag}-{warm_up.warmup_epochs:g}ep-sft-shift")
    chosen = subsets(dd, frame, seed=0)
    names = args.only or list(chosen)
    for name in names:
        print(f"{name}: {len(chosen[name])} samples, " + ", ".join(
            f"{k} {v:.1%}" for k, v in screen.composition(dd, chosen[name]).items()), flush=True)
    screen.print_target(screen.confirm(dd, chosen, names, args.seeds, args.out), names)


if __name__ == "__main__":
    main()
