"""A cheap screen of label-free 20 % subset rules: train the proxy preset on each subset at fixed compute.

For one pool it warms the proxy as the config says (notebook 01's recipe), scores every sample with the
default step and, from the same per-sample pass, a count sketch of each gradient (`ost.method.sketch`),
then builds each rule's subset (`ost.method.coverage`) and fine-tunes the `proxy` preset from its base on
it for the steps of one 6-epoch Full-SFT run (batch 32, lr 1e-3, cosine), reporting validation loss and
exact match, and test exact match. The references — Full pool, random 20 %, plain top-k, and a random 20 %
of the samples planted clean (labels read for that row only) — are screened the same way. Each subset's
planted composition is reported to describe it, never to build it. Finished rows are kept in a JSON-lines
log keyed by the subset's ids and reused.

    python benchmarks/screen_selectors.py --config configs/main.yaml --out results/bench/selector_screen.json
    python benchmarks/screen_selectors.py --config configs/main.yaml --pool-seed 1 --extra-kinds \
        --out results/bench/selector_screen_pool1.json
"""
import argparse
import json
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from ost.data import pool as synth
from ost.data import schema
from ost.experiments import sft_grid
from ost.method import coverage, score, warmup
from ost.method.sketch import Sketch
from ost.models import base, train
from ost.runs.settings import Pool, Warmup

FRACTION = 0.2


def rules(scores, feats, val_feats, seed):
    """{name: ids} of every label-free rule screened."""
    cov = coverage
    return {
        "top-k": cov.top_k(scores, FRACTION),
        "lookahead sign": cov.lookahead_greedy(scores, feats, val_feats, FRACTION, cov.Lookahead(drop_negative=True)),
        "round-robin centred sign": cov.round_robin(scores, feats, val_feats, FRACTION,
                                                    cov.RoundRobin(drop=0.0, drop_negative=True)),
        "ccs drop35": cov.filter_stratify(scores, FRACTION, cov.FilterStratify(drop=0.35, seed=seed)),
        "lookahead drop20": cov.lookahead_greedy(scores, feats, val_feats, FRACTION, cov.Lookahead(drop=0.2)),
        "round-robin centred drop20": cov.round_robin(scores, feats, val_feats, FRACTION, cov.RoundRobin(drop=0.2)),
        "round-robin drop20": cov.round_robin(scores, feats, val_feats, FRACTION,
                                              cov.RoundRobin(drop=0.2, centre=False)),
        "round-robin sign": cov.round_robin(scores, feats, val_feats, FRACTION,
                                            cov.RoundRobin(drop=0.0, drop_negative=True, centre=False)),
        "lookahead": cov.lookahead_greedy(scores, feats, val_feats, FRACTION, cov.Lookahead()),
        "max-align centred drop20": cov.max_alignment(scores, feats, val_feats, FRACTION, cov.MaxAlignment()),
    }


def references(dd, seed):
    """Full, random 20 % and the oracle clean-random 20 % (the only rule here that reads a label)."""
    ids = np.array(dd["pool"]["id"])
    rng = np.random.default_rng(seed)
    k = round(FRACTION * len(ids))
    clean = ids[np.isin(dd["pool"]["noise"], ["clean", "duplicate"])]
    return {"full": ids.tolist(), "random": rng.choice(ids, k, replace=False).tolist(),
            "oracle clean-random": np.random.default_rng(seed).choice(clean, k, replace=False).tolist()}


def pool_for(config: dict, pool_seed=None, extra_kinds: bool = False):
    """(DatasetDict, its cache folder's name, `Pool` settings) of the config's pool, with another seed and the
    held-out noise kinds when asked: the pool a benchmark run names on its command line."""
    changes = {} if pool_seed is None else {"pool_seed": pool_seed}
    if extra_kinds:
        changes["extra_kinds"] = list(synth.HELD_OUT)
    pool_cfg = Pool.from_params({**config, **changes})
    return schema.config_pool(config, **changes), Path(schema.make_pool(**pool_cfg.pool_params())).name, pool_cfg


def print_target(rows, names):
    """Each named subset's target accuracy per seed and its mean."""
    for name in names:
        acc = [r["accuracy"] for r in rows if r["subset"] == name]
        print(f"{name}: " + " / ".join(f"{a:.1%}" for a in acc) + f", mean {np.mean(acc):.1%}")


def composition(dd, ids) -> dict:
    frame = dd["pool"].select_columns(["id", "noise", "difficulty"]).to_pandas().set_index("id").loc[list(ids)]
    out = {"noise": float(frame["noise"].isin(synth.TOXIC).mean())}
    out |= {f"d{d}": float((frame["difficulty"] == d).mean()) for d in (1, 2, 3)}
    return out


def features(dd, warm_up, cache: Path, sketch: Sketch):
    """(scores frame, features, validation features): warmed and scored once, then read from `cache`."""
    if (cache / "features.npy").exists():
        return (pd.read_parquet(cache / "scores.parquet"), np.load(cache / "features.npy"),
                np.load(cache / "val_features.npy"))
    cache.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    warmed = warmup.warm_up(dd, warm_up)
    model, tok, proc, log = warmed.model, warmed.tokenizer, warmed.processor, warmed.log
    warm_s = time.perf_counter() - start
    start = time.perf_counter()
    frame, feats, val_feats = score.score_samples(model, tok, proc, dd["pool"], dd["validation"],
                                                  warm_state=log["adam_state"], with_loss=True, sketch=sketch)
    frame = frame.rename_axis("id").reset_index().assign(
        status=lambda f: np.where(np.isfinite(f["utility"]) & np.isfinite(f["loss"]), "ok", "nonfinite"))
    frame.to_parquet(cache / "scores.parquet")
    np.save(cache / "features.npy", feats)
    np.save(cache / "val_features.npy", val_feats)
    (cache / "timing.json").write_text(json.dumps({"warm_seconds": warm_s, "score_seconds": time.perf_counter() - start,
                                                    "sketch": vars(sketch)}))
    return frame, feats, val_feats


def screen_one(dd, ids, steps, seed) -> dict:
    where = {i: n for n, i in enumerate(dd["pool"]["id"])}
    subset = dd["pool"].select(sorted(where[i] for i in ids))
    model, tok, proc = base.load_model("proxy", progress=False)
    start = time.perf_counter()
    log = train.sft(model, tok, proc, subset, epochs=6, lr=1e-3, batch_size=32, seed=seed, progress=False,
                    max_steps=steps)
    val = train.evaluate(model, tok, proc, dd["validation"])
    test = train.evaluate(model, tok, proc, dd["test"])
    return {"size": len(ids), "steps": log["steps"], "val_loss": val["loss"], "val_em": val["accuracy"],
            "test_em": test["accuracy"], "test_loss": test["loss"], "seconds": time.perf_counter() - start}


def read_log(log: Path) -> dict:
    """The runs already in a JSON-lines log, by (subset, the sha of its ids, seed): reused, not rerun."""
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return {(r["subset"], r["subset_sha"], r["seed"]): r for r in rows}


def confirm(dd, subsets, names, seeds, log: Path) -> list:
    """The target preset at fixed compute on the named subsets, seeds `seeds`, scored on the test split
    (`sft_grid._run_one`, notebook 05's settings), each run appended to `log` and reused from it."""
    ids = list(dd["pool"]["id"])
    where = {i: n for n, i in enumerate(ids)}
    steps = sft_grid.full_steps(len(ids), 32, 6.0)
    settings = dict(target="target", epochs=6.0, lr=1e-3, batch_size=32, n_pool=len(ids))
    done = read_log(log)
    rows = []
    for name in names:
        chosen = sorted(where[i] for i in subsets[name])
        sha = sft_grid.subset_sha([ids[i] for i in chosen])
        for seed in seeds:
            if (name, sha, seed) not in done:
                r = sft_grid._run_one(dd["pool"], dd["test"], chosen, column=f"{name}@0.2", protocol="fixed_compute",
                                      seed=seed, target="target", epochs=6.0, lr=1e-3, batch_size=32,
                                      full_steps=steps, settings=settings, sha=sha)
                r = {**r, "subset": name, **composition(dd, subsets[name])}
                with log.open("a") as f:
                    f.write(json.dumps(r) + "\n")
                done[(name, sha, seed)] = r
                print(f"target {name} seed {seed}: {r['accuracy']:.1%}", flush=True)
            rows.append(done[(name, sha, seed)])
    return rows


def table(rows) -> str:
    out = ["| subset | size | val loss | val EM | test loss | test EM | noise | d1 / d2 / d3 |",
           "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        out.append(f"| {r['subset']} | {r['size']} | {r['val_loss']:.4f} | {r['val_em']:.1%} | {r['test_loss']:.4f} | "
                   f"{r['test_em']:.1%} | "
                   f"{r['noise']:.1%} | {r['d1']:.0%} / {r['d2']:.0%} / {r['d3']:.0%} |")
    return "\n".join(out)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--pool-seed", type=int, default=None)
    parser.add_argument("--extra-kinds", action="store_true", help=f"plant {', '.join(synth.HELD_OUT)} too")
    parser.add_argument("--sketch-dim", type=int, default=8192)
    parser.add_argument("--seed", type=int, default=0, help="SFT seed, random references and CCS draws")
    parser.add_argument("--only", nargs="*", default=None, help="screen only these subsets")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--target", nargs="*", default=None,
                        help="instead of screening: train the target on these subsets at fixed compute")
    parser.add_argument("--target-seeds", type=int, nargs="+", default=[0, 1, 2])
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = yaml.safe_load(args.config.read_text()) or {}
    dd, tag, pool_cfg = pool_for(config, args.pool_seed, args.extra_kinds)
    warm_up = Warmup.from_params(config)
    cache = Path("data/runs/selector_screen") / f"{tag}-{warm_up.warmup_epochs:g}ep-sketch{args.sketch_dim}"
    scores, feats, val_feats = features(dd, warm_up, cache, Sketch(dim=args.sketch_dim, seed=args.seed))
    subsets = {**references(dd, args.seed), **rules(scores, feats, val_feats, args.seed)}
    if args.target:
        print_target(confirm(dd, subsets, args.target, args.target_seeds, args.out.with_suffix(".target.jsonl")),
                     args.target)
        return
    if args.only:
        subsets = {k: v for k, v in subsets.items() if k in args.only}
    steps = sft_grid.full_steps(len(dd["pool"]), 32, 6.0)
    log = args.out.with_suffix(".jsonl")
    done = read_log(log)
    rows = []
    for name, ids in subsets.items():
        sha = sft_grid.subset_sha(sorted(map(str, ids)))
        key = (name, sha, args.seed)
        if key not in done:
            r = {"subset": name, "subset_sha": sha, "seed": args.seed, **composition(dd, ids),
                 **screen_one(dd, ids, steps, args.seed)}
            with log.open("a") as f:
                f.write(json.dumps(r) + "\n")
            done[key] = r
            print(table([r]).splitlines()[-1], flush=True)
        rows.append(done[key])
    report = {"settings": {**{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
                           "pool": pool_cfg.pool_params(), "warmup": warm_up.as_dict(), "steps": steps,
                           "fraction": FRACTION, "sft": dict(preset="proxy", lr=1e-3, batch_size=32)},
              "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=1) + "\n")
    print(table(rows))


if __name__ == "__main__":
    main()
