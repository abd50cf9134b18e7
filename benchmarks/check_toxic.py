"""Toxic flags on three sets: the share of each noise kind flagged, and the realised false-flag rate on clean samples.

Sets: the main pool; pool seed 1 with its two extra noise kinds; and a LLaVA-JSON set of a task the pools do not
have (ordering digits, `benchmarks/make_llava_set.py`, 2,400 records), read through the project's loader. The
pools carry a calibration split drawn as their clean samples are (`ost.data.pool.make_calibration_records`); the
LLaVA set's validation file is split as the CLI splits a user's (`ost.method.toxic.split_calibration`): one half
makes ĝ_val and measures the proxy's competence, the other is the calibration set. Either joins the warm-up as
the pool does. The pool and the
calibration set are scored with the default step; then every rule of `ost.method.toxic` flags at q, and each
ranking's AUROC per kind is measured against the proxy's plain answer loss (the loss filter). Planted labels
are read to measure, never to flag. Warm-ups and scores are cached under data/runs/toxic_check/<set>/.

    python benchmarks/check_toxic.py --out results/bench/toxic_flags.json [--sets main pool1 llava] [--q 0.05]
    python benchmarks/check_toxic.py --out results/bench/toxic_flags.json --render docs/toxic.md --readme README.md
"""
import argparse
import csv
import json
import sys
from dataclasses import replace
from pathlib import Path

import datasets
import pandas as pd
import torch
import yaml
from sklearn.metrics import roc_auc_score

from ost.data import loaders
from ost.method import score, toxic, warmup
from ost.method.step import DEFAULT
from ost.models import presets, train
from ost.report.render import fill_block
from ost.runs import paths
from ost.runs.settings import Warmup

sys.path.insert(0, str(Path(__file__).parent))
import make_llava_set  # noqa: E402
import screen_selectors  # noqa: E402

RULES = {"sign": toxic.Flag(rule="sign"), "utility": toxic.Flag(signals=("utility",)),
         "loss": toxic.Flag(signals=("loss",)), "utility+loss": toxic.Flag(signals=("utility", "loss"))}
CACHE = paths.ROOT / "data" / "runs" / "toxic_check"
NAMES = {"main": "the main pool", "pool1": "pool seed 1 (two more noise kinds)",
         "llava": "a LLaVA-JSON set of another task (digits in order)"}


def load_set(name: str, config: dict):
    """(DatasetDict with pool and validation, planted kind per pool id)."""
    if name == "llava":
        made = make_llava_set.make_set(CACHE / "llava_order", n_train=2400, n_val=200, task="order", seed=0)
        dd = datasets.DatasetDict({split: loaders.load_llava_json(made["dir"] / f"{part}.json", on_error="skip")
                                   for split, part in (("pool", "train"), ("validation", "val"))})
        with open(made["labels"], newline="", encoding="utf-8") as f:
            kinds = {r["id"]: r["kind"] for r in csv.DictReader(f) if r["split"] == "train"}
        return dd, pd.Series(kinds).reindex(dd["pool"]["id"])
    dd = screen_selectors.pool_for(config, **({"pool_seed": 1, "extra_kinds": True} if name == "pool1" else {}))[0]
    return dd, pd.Series(dd["pool"]["noise"], index=dd["pool"]["id"])


def scored(name: str, dd, warm_up: Warmup, fraction: float):
    """(pool scores, calibration scores, competence) from a warm-up with the calibration set, cached."""
    if "calibration" in dd:
        folder, val, cal = CACHE / f"{name}-poolcal{len(dd['calibration'])}", dd["validation"], dd["calibration"]
    else:
        folder = CACHE / f"{name}-cal{fraction:g}"
        val, cal = toxic.split_calibration(dd["validation"], fraction, seed=warm_up.warmup_seed)
    if not (folder / "calibration.parquet").exists():
        warmed = warmup.warm_up(dd, warm_up, calibration=cal)
        model, tok, proc, log = warmed.model, warmed.tokenizer, warmed.processor, warmed.log
        state = log["adam_state"]
        pool = score.score_samples(model, tok, proc, dd["pool"], val, step=DEFAULT, warm_state=state, with_loss=True)
        ref = toxic.reference(model, tok, proc, cal, val, step=DEFAULT, warm_state=state)
        competence = train.evaluate(model, tok, proc, val)["accuracy"]
        folder.mkdir(parents=True, exist_ok=True)
        presets.save(folder / "proxy", model, tok, proc)
        pool.rename_axis("id").to_parquet(folder / "scores.parquet")
        ref.rename_axis("id").to_parquet(folder / "calibration.parquet")
        (folder / "competence.json").write_text(json.dumps({"val_accuracy": competence}))
    return (pd.read_parquet(folder / "scores.parquet"), pd.read_parquet(folder / "calibration.parquet"),
            json.loads((folder / "competence.json").read_text())["val_accuracy"])


def measure(scores: pd.DataFrame, ref: pd.DataFrame, kinds: pd.Series, q: float) -> dict:
    """Per kind: count, share flagged by each rule, AUROC of each ranking against clean; exact duplicates
    (wasteful, not toxic) are left out of both."""
    kinds = kinds.reindex(scores.index)
    keep = (kinds != "duplicate").to_numpy()
    scores, kinds = scores[keep], kinds[keep]
    flags = {rule: toxic.flag(scores, ref, replace(setting, q=q))
             for rule, setting in RULES.items()}
    rows = {}
    for kind in sorted(set(kinds), key=lambda k: (k != "clean", k)):
        m = (kinds == kind).to_numpy()
        row = {"n": int(m.sum())} | {rule: float(f["flag"][m].mean()) for rule, f in flags.items()}
        if kind != "clean":
            both = (kinds.isin([kind, "clean"])).to_numpy()
            y = (kinds[both] == kind).to_numpy()
            row |= {"auroc_" + rule: float(roc_auc_score(y, -f["rank"][both])) for rule, f in flags.items()
                    if rule != "sign"}
        rows[kind] = row
    thresholds = {rule: float(f["threshold"].iloc[0]) for rule, f in flags.items()}
    cuts = toxic.cut_points(ref, q)
    return {"kinds": rows, "thresholds_p": thresholds, "utility_threshold": cuts["utility"],
            "loss_threshold": cuts["loss"]}


def table(result: dict) -> str:
    lines = ["| set | kind | n | " + " | ".join(RULES) + " | AUROC utility | AUROC loss | AUROC utility+loss |",
             "|---" * 10 + "|"]
    for name, r in result["sets"].items():
        for kind, row in r["kinds"].items():
            au = [f"{row[k]:.3f}" if k in row else "" for k in ("auroc_utility", "auroc_loss", "auroc_utility+loss")]
            lines.append(f"| {name} | {kind} | {row['n']} | " + " | ".join(f"{row[k]:.1%}" for k in RULES)
                         + " | " + " | ".join(au) + " |")
    return "\n".join(lines)


def render(result: dict, doc: Path):
    """Replace the table between `<!-- toxic-table:start -->` and `<!-- toxic-table:end -->` in `doc`."""
    sets = "; ".join(f"{name}: proxy {r['val_accuracy']:.0%} validation exact match, {r['n_calibration']} calibration "
                     "samples" for name, r in result["sets"].items())
    fill_block(doc, f"q = {result['q']:g}; {sets}.\n\n{table(result)}", "<!-- toxic-table:start -->",
               "<!-- toxic-table:end -->")


def summary(result: dict) -> str:
    """The README's lines: per set, the realised false-flag rate, the kind flagged least, the lowest AUROC."""
    q, rule = result["q"], "utility+loss"
    lines = [f"Toxic flags at q = {q:.0%} (the utility and the proxy's loss, threshold calibrated on clean samples; "
             "[docs/toxic.md](docs/toxic.md) has every kind and rule):", ""]
    for name, r in result["sets"].items():
        kinds = {k: row for k, row in r["kinds"].items() if k != "clean"}
        least = min(kinds, key=lambda k: kinds[k][rule])
        low = min(kinds, key=lambda k: kinds[k]["auroc_" + rule])
        lines.append(f"- {NAMES.get(name, name)}: {r['kinds']['clean'][rule]:.1%} of clean samples flagged; every kind "
                     f"{kinds[least][rule]:.1%} or more ({least} least); AUROC {kinds[low]['auroc_' + rule]:.3f} "
                     f"or more ({low}; the loss filter there: {kinds[low]['auroc_loss']:.3f})")
    return "\n".join(lines)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default=str(paths.ROOT / "configs" / "main.yaml"))
    parser.add_argument("--sets", nargs="+", default=["main", "pool1", "llava"], choices=["main", "pool1", "llava"])
    parser.add_argument("--q", type=float, default=toxic.Flag().q)
    parser.add_argument("--calibration-fraction", type=float, default=0.5,
                        help="the share of the LLaVA set's validation file that calibrates (the pools have their own)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="the JSON result (read back with --render)")
    parser.add_argument("--render", type=Path, metavar="DOC",
                        help="only write the table of --out into DOC between its toxic-table markers")
    parser.add_argument("--readme", type=Path, help="with --render: also its summary into README's toxic markers")
    args = parser.parse_args(argv)
    if args.render:
        result = json.loads(args.out.read_text())
        render(result, args.render)
        if args.readme:
            fill_block(args.readme, summary(result), "<!-- toxic:start -->", "<!-- toxic:end -->")
        return
    torch.set_num_threads(args.threads)
    config = yaml.safe_load(open(args.config))
    result = {"q": args.q, "calibration_fraction": args.calibration_fraction, "step": DEFAULT.as_dict(), "sets": {}}
    for name in args.sets:
        dd, kinds = load_set(name, config)
        pool, ref, competence = scored(name, dd, Warmup.from_params(config), args.calibration_fraction)
        result["sets"][name] = {"n_pool": len(pool), "n_calibration": len(ref), "val_accuracy": competence,
                                **measure(pool, ref, kinds, args.q)}
        print(f"{name}: proxy {competence:.0%} validation exact match; {len(ref)} calibration samples", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(table(result))


if __name__ == "__main__":
    main()
