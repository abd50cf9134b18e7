"""`python -m ost`: from your own SFT file to a selected subset, a toxic list and the scores.

    python -m ost run DATA --val VAL --fraction 0.2 --out DIR
    python -m ost run DATA --val-fraction 0.05 --fraction 0.2 --out DIR      # carve a seeded validation slice

or one stage at a time, each reading the previous one's files from DIR: `prepare DATA (--val VAL |
--val-fraction F) --out DIR`, `warmup --out DIR`, `score --out DIR` (the utility, then the validation shift),
`select --fraction F [--selector NAME] [--toxic-q Q] --out DIR`. Each stage is the method's own function
(`ost.method.prepare`, `.warmup`, `.score` and `.shift`, `.subset`); this module adds the stage records
(`ost.runs.records`) and the files a user takes away. A seeded half of VAL calibrates the toxic
flags (`ost.method.toxic`): it joins the warm-up as DATA does, and the rest is what utility is measured on.
DATA and VAL are a LLaVA-style JSON file, a `save_to_disk` folder or a .parquet file. A stage whose
output is in DIR with the same settings is skipped, and scoring resumes from its finished parts, so a rerun after a
kill goes on.
A folder or .parquet file (e.g. Geometry3K: `--columns question=problem`; its `choices` go into the
question, its `images` list stands for the image) is read by `ost.data.loaders.read_hf_dataset`.

DIR/ holds: `scores.parquet` (+ manifest: every input id with a status), `shift.parquet` (each record's
validation shift, `ost.method.shift`), `subsets.parquet` (the kept ids as a boolean column over every id, as notebook
03 keeps its subsets: `ost.method.subset.read`), `selected.json` (the kept
records, in a LLaVA input's own format, image paths valid from DIR; for a folder or parquet input, the
kept ids, with the kept rows in `selected.parquet`, same columns), `calibration.parquet` (the calibration records'
utility and loss), `toxic.csv` (id, utility, loss, shift, p, rank, signal, reason: the flagged records, most
suspicious first; `ost.method.toxic`), `report.json` (counts, the selector, the toxic rule with its q and
thresholds, seconds per stage, settings).
"""
import argparse
import json
import os
import sys
import time
from dataclasses import replace
from pathlib import Path

import datasets
import numpy as np
import pandas as pd

from ost import runs
from ost.data import loaders, validate
from ost.method import coverage, prepare, score, select, shift, subset, toxic
from ost.method import warmup as warmup_stage
from ost.method.step import DEFAULT
from ost.models import presets, train
from ost.runs import records
from ost.runs.settings import SFT, Selection, Warmup

WARMUP = Warmup()  # the notebooks' stage-01 defaults (ost.runs.settings)
COMPETENT = 0.5     # validation exact match below which the summary says not to trust the ranking
OUTPUTS = {"warmup": (warmup_stage.PROXY, warmup_stage.ADAM_STATE),          # what each stage leaves in DIR
           "score": (score.manifest_path("scores.parquet").name, "calibration.parquet"), "shift": ("shift.parquet",)}


def warmup(out, warm_up: Warmup = WARMUP) -> dict:
    """Warm the proxy on DATA's usable records (a seeded `warmup_fraction` of them), as notebook 01 warms it
    (`ost.runs.settings.Warmup`); DIR/proxy + Adam state."""
    out = Path(out)
    settings = dict(warm_up.as_dict(), prepared=records.settings_of(out, "prepare"))
    if records.done(out, "warmup", settings, OUTPUTS["warmup"]):
        return records.read(out, "warmup")
    dd = prepare.load(out)
    start = time.perf_counter()
    warmed = warmup_stage.warm_up(dd, warm_up, progress=True)          # as notebook 01 warms it
    val = dd["validation"].filter(lambda f: bool(f), input_columns="final")
    ev = train.evaluate(warmed.model, warmed.tokenizer, warmed.processor, val) if len(val) else None
    warmup_stage.save(warmed, out)
    return records.write(out, "warmup", settings, time.perf_counter() - start,
                         n_warm=len(warmed.warm_ids) + len(warmed.calibration_ids), steps=warmed.log["steps"],
                         val_loss=ev["loss"] if ev else None, val_accuracy=ev["accuracy"] if ev else None)


def score_stage(out, *, batch_size=32, part_size=256, max_length=None) -> dict:
    """Score every pool row with the project's default step (resumable parts in DIR/scores.parquet.parts), then
    the calibration records the same way (DIR/calibration.parquet: the clean reference of the toxic flags)."""
    out = Path(out)
    settings = dict(step=DEFAULT.as_dict(), batch_size=batch_size, part_size=part_size, max_length=max_length,
                    warmup=records.settings_of(out, "warmup"))
    if records.done(out, "score", settings, OUTPUTS["score"]):
        return records.read(out, "score")
    if not records.read(out, "warmup"):
        raise FileNotFoundError(f"{out} holds no warmed proxy: run `python -m ost warmup --out {out}` first")
    dd = prepare.load(out)
    proxy = warmup_stage.load(out, device=score.device_for())   # a GPU when there is one
    model, tok, proc, state = proxy.model, proxy.tokenizer, proxy.processor, proxy.adam_state
    start = time.perf_counter()
    frame = score.score_pool(model, tok, proc, dd["pool"], dd["validation"], out / "scores.parquet", step=DEFAULT,
                             warm_state=state, batch_size=batch_size, part_size=part_size, max_length=max_length,
                             overwrite=True)   # parts of an earlier warm-up or data are stale here; same ones resume
    ref = toxic.reference(model, tok, proc, dd["calibration"], dd["validation"], step=DEFAULT, warm_state=state,
                          batch_size=batch_size)
    toxic.write_reference(ref, out / "calibration.parquet")
    return records.write(out, "score", settings, time.perf_counter() - start,
                         status=frame["status"].value_counts().to_dict(),
                         paths=score.read_manifest(out / "scores.parquet")["paths"])   # how it was scored (ghost
                                                                                       # unless a layer had no rule)


def shift_stage(out) -> dict:
    """DIR/shift.parquet: each usable record's validation shift (`ost.method.shift`), from the warmed proxy
    fine-tuned on VAL in the SFT regime (`ost.runs.settings.SFT`); the default selector's harm rank reads it."""
    out = Path(out)
    settings = dict(regime=SFT().as_dict(), warmup=records.settings_of(out, "warmup"),
                    score=records.settings_of(out, "score"))
    if records.done(out, "shift", settings, OUTPUTS["shift"]):
        return records.read(out, "shift")
    dd = prepare.load(out)
    model, tok, proc = presets.load(out / warmup_stage.PROXY)
    status = score.read_scores(out / "scores.parquet").set_index("id")["status"]
    start = time.perf_counter()
    frame = shift.validation_shift(model, tok, proc, dd["pool"], dd["validation"], statuses=status, progress=True)
    shift.write(frame, out / "shift.parquet")
    return records.write(out, "shift", settings, time.perf_counter() - start, negative=int((frame["shift"] < 0).sum()))


def _selected_records(source: Path, ids: set, out: Path):
    """The kept records in the input's own form: LLaVA JSON objects (image paths made valid from `out`)."""
    if source.is_file() and source.suffix.lower() == ".json":
        raw = json.loads(source.read_text())
        kept = []
        for i, r in enumerate(raw):
            if loaders.record_id(r, i, source) in ids:
                r = dict(r)
                r["image"] = os.path.relpath(source.parent / r["image"], out)
                kept.append(r)
        return kept
    if source.suffix.lower() == ".parquet":
        rows = datasets.Dataset.from_parquet(str(source), keep_in_memory=True)
    else:
        rows = loaders._pick_split(datasets.load_from_disk(str(source)), source, None)
    # ids as the loader names them
    own = rows["id"] if "id" in rows.column_names else [f"{i:06d}" for i in range(len(rows))]
    rows.select([i for i, rid in enumerate(own) if str(rid) in ids]).to_parquet(str(out / "selected.parquet"))
    return {"source": str(source), "rows": "selected.parquet", "ids": sorted(ids)}


def select_stage(out, *, fraction=0.2, selection: Selection = Selection(), flag: toxic.Flag = toxic.Flag()) -> dict:
    """subsets.parquet (the kept ids, as notebook 03 keeps its subsets), selected.json, toxic.csv and report.json
    from DIR/scores.parquet, shift.parquet and calibration.parquet."""
    out = Path(out)
    shift_file = out / "shift.parquet"
    frame = subset.read_scored(out / "scores.parquet", shift_file if shift_file.exists() else None)
    ok = frame[frame["status"] == "ok"]
    kept = subset.choose(frame, fraction, selection)
    subset.write({select.subset_name("ost", fraction): kept}, frame.index, out / "subsets.parquet",
                 meta=dict(fraction=fraction, **selection.as_dict()))
    source = Path(records.settings_of(out, "prepare")["data"])
    runs.replace_text(out / "selected.json", json.dumps(_selected_records(source, set(kept), out), indent=1))
    ref = toxic.read_reference(out / "calibration.parquet")
    flags = toxic.flag(ok, ref, flag)
    listed = ok[["utility", "loss"]].assign(shift=ok.get("shift", np.nan)).join(flags[["p", "rank", "signal"]])
    listed["reason"] = _reasons(listed, flag)
    listed = listed[flags["flag"]].sort_values(["rank", "id"]).reset_index()
    listed.astype({"rank": int}).to_csv(out / "toxic.csv", index=False)
    stages = {s: records.read(out, s) for s in ("prepare", "warmup", "score", "shift")}
    threshold = float(flags["threshold"].iloc[0]) if len(flags) else flag.q
    stated = dict(rule=flag.rule, q=flag.q, signals=list(flag.signals), calibration=len(ref), flagged=len(listed),
                  threshold_p=threshold)
    if flag.rule == "calibrated":
        cuts = toxic.cut_points(ref, flag.q)
        stated |= dict(expected_false_flag_rate=flag.q, can_flag=toxic.can_flag(threshold, len(ref)),
                       utility_below=cuts["utility"], loss_above=cuts["loss"])
    report = dict(rows=len(frame), status=frame["status"].value_counts().sort_index().to_dict(),
                  selected=len(kept), fraction=fraction,
                  selector=dict(name=selection.selector, seed=selection.selector_seed,
                                signals=["utility"] + (["shift"] if "shift" in ok else [])),
                  toxic=stated,
                  seconds={s: v.get("seconds") for s, v in stages.items() if v},
                  settings={s: v.get("settings") for s, v in stages.items() if v},
                  prepare=stages["prepare"].get("report"), warmup_val_accuracy=stages["warmup"].get("val_accuracy"))
    runs.replace_text(out / "report.json", json.dumps(report, indent=1, default=str))
    return report


def _reasons(listed: pd.DataFrame, flag: toxic.Flag) -> list:
    """One sentence per row: what the flag saw."""
    if flag.rule == "sign":
        return ["utility < 0: one step on it raises the validation loss"] * len(listed)
    said = {"utility": "its step helps the validation loss less than", "loss": "the proxy fits it worse than"}
    return [f"{said[s]} {1 - p:.0%} of the clean calibration records (p = {p:.3f})" if s else ""
            for s, p in zip(listed["signal"], listed["p"])]


def summary(report: dict) -> str:
    p = report["prepare"] or {}
    lines = [f"{report['rows']} records: " + ", ".join(f"{n} {s}" for s, n in report["status"].items()),
             f"validation: {p.get('validation')} records ({p.get('validation_source')}), and {p.get('calibration')} "
             "more that calibrate the toxic flags",
             f"kept {report['selected']} ({report['fraction']:.0%}, selector {report['selector']['name']})",
             _toxic_line(report["toxic"]),
             "seconds: " + ", ".join(f"{s} {v:.0f}" for s, v in report["seconds"].items() if v is not None)]
    if p.get("no_final"):
        lines.append(f"{p['no_final']} records have no final answer we can find: scored, not evaluable")
    acc = report.get("warmup_val_accuracy")
    if acc is not None:
        lines.append(f"proxy after warm-up: {acc:.0%} validation exact match")
        if acc < COMPETENT:
            lines.append(f"  below {COMPETENT:.0%}: a proxy that cannot do the task cannot tell a right answer from "
                         "a wrong one, so do not trust this ranking yet: warm longer (--warmup-epochs) or pass a "
                         "stronger --proxy")
    return "\n".join(lines)


def _toxic_line(t: dict) -> str:
    if t["rule"] == "sign":
        return f"flagged toxic: {t['flagged']} (toxic.csv; the sign rule: utility < 0, no stated false-flag rate)"
    line = (f"flagged toxic: {t['flagged']} (toxic.csv): about {t['q']:.0%} of clean records are flagged too, "
            f"calibrated on {t['calibration']} clean records")
    if not t["can_flag"]:
        line += (f"\n  {t['calibration']} calibration records are too few to flag anything at q = {t['q']:g}: give a "
                 "larger validation set (about 2/q records go to calibration) or a larger --toxic-q")
    return line


def main(argv=None):
    prog = "ost" if Path(sys.argv[0]).name == "ost" else "python -m ost"    # the console script, or the module
    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    cmds = {name: sub.add_parser(name, help=text) for name, text in [
        ("run", "every stage: prepare, warmup, score, select"), ("prepare", "load and check DATA and VAL"),
        ("warmup", "warm the proxy on DATA"),
        ("score", "score every record: the default step's utility, then the validation shift"),
        ("select", "the subset, the toxic list and the report")]}
    for name, p in cmds.items():
        p.add_argument("--out", type=Path, required=True, help="the folder every stage writes to")
        if name in ("run", "prepare"):
            p.add_argument("data", help="a LLaVA-style JSON file, a save_to_disk folder or a .parquet file")
            p.add_argument("--val", help="the validation set, same formats (clean: it is what utility is measured on)")
            p.add_argument("--val-fraction", type=float, help="carve a seeded validation slice from DATA instead")
            p.add_argument("--final-pattern", help="a regex with one group for the final answer, tried first")
            p.add_argument("--columns", nargs="+", metavar="FIELD=COLUMN", default=[],
                           help="a folder's or parquet file's columns, e.g. question=problem")
            p.add_argument("--calibration-fraction", type=float, default=toxic.CALIBRATION_FRACTION,
                           help="share of the validation set that calibrates the toxic flags (it joins the warm-up)")
        if name in ("run", "warmup"):
            p.add_argument("--proxy", default=WARMUP.proxy, help="a preset or a Qwen2-VL checkpoint folder / id")
            p.add_argument("--warmup-fraction", type=float, default=WARMUP.warmup_fraction)
            p.add_argument("--warmup-epochs", type=float, default=WARMUP.warmup_epochs)
        if name in ("run", "score"):
            p.add_argument("--max-length", type=int, help="tokens; a longer record gets status skipped:too_long")
            p.add_argument("--part-size", type=int, default=256, help="records per resumable part file")
        if name in ("run", "select"):
            p.add_argument("--fraction", type=float, default=0.2, help="share of the usable records kept")
            usable = sorted(set(coverage.RULES) - set(coverage.NEEDS_FEATURES))
            p.add_argument("--selector", default=coverage.DEFAULT, choices=usable,
                           help=f"the subset rule (default {coverage.DEFAULT}: drop the 40 %% the utility and the "
                                "validation shift rank worst, then a seeded random pick; topk: the paper's top "
                                "fraction)")
            p.add_argument("--toxic-q", type=float, default=toxic.Flag().q,
                           help="share of clean records the toxic flag may catch too (calibrated on clean records)")
            p.add_argument("--toxic-rule", choices=toxic.RULES, default=toxic.Flag().rule,
                           help="calibrated (worse of utility and loss against clean records) or sign (utility < 0)")
        p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    if args.command in ("run", "prepare"):
        try:
            settings = prepare.Prepare(data=args.data, val=args.val or "", val_fraction=args.val_fraction or 0.0,
                                       final_pattern=args.final_pattern or "", columns=tuple(args.columns),
                                       split_seed=args.seed, calibration_fraction=args.calibration_fraction)
        except ValueError as err:
            parser.error(str(err))
        prepare.prepare(settings, out)
    if args.command in ("run", "warmup"):
        warmup(out, replace(WARMUP, proxy=args.proxy, warmup_fraction=args.warmup_fraction,
                            warmup_epochs=args.warmup_epochs, warmup_seed=args.seed))
    if args.command in ("run", "score"):
        score_stage(out, part_size=args.part_size, max_length=args.max_length)
        print(validate.format_report(validate.report(score.read_scores(out / "scores.parquet"))))
        shift_stage(out)
    if args.command in ("run", "select"):
        flag = toxic.Flag(rule=args.toxic_rule, q=args.toxic_q)
        selection = Selection(selector=args.selector, selector_seed=args.seed)
        print(summary(select_stage(out, fraction=args.fraction, selection=selection, flag=flag)))
