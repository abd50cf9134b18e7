"""What a run shows, a few sentences per notebook, read from the run's own artifacts.

Every notebook ends on `findings.show(run, "<notebook>")`. The numbers are read, never typed, so a papermill
rerun with other parameters states its own findings, and a verdict ("near chance", "below Full-SFT") is a
comparison made here, in one place, on what the run wrote.
"""
import json

import pandas as pd

from ost import runs
from ost.data import schema
from ost.data.pool import TOXIC
from ost.method import coverage, subset
from ost.report.analysis import load_runs


def _pct(x: float) -> str:
    return f"{100 * x:.1f} %"


def _labels(run: str) -> pd.DataFrame:
    """(index = pool id) noise kind, task, difficulty and whether the kind is toxic."""
    pool = schema.load_run_pool(run)["pool"]
    frame = pd.DataFrame({c: pool[c] for c in ("noise", "task", "difficulty")}, index=pool["id"])
    return frame.assign(toxic=frame["noise"].isin(TOXIC))


def _mix(labels: pd.DataFrame) -> str:
    """The difficulty levels' shares, e.g. "68/22/10 %" for levels 1/2/3."""
    shares = labels["difficulty"].value_counts(normalize=True).sort_index()
    return "/".join(f"{100 * v:.0f}" for v in shares) + f" % (levels {'/'.join(str(k) for k in shares.index)})"


def pool(run: str) -> list:
    p = runs.read_json(run, "pool.json")
    toxic = {k: v for k, v in p["noise"].items() if k in TOXIC}
    largest = max(toxic, key=toxic.get)
    n = p["sizes"]["pool"]
    lines = [f"The pool holds {n:,} samples; {_pct(p['toxic_share'])} carry planted noise. The largest kind is "
             f"`{largest}` ({_pct(toxic[largest] / n)} of the pool): a wrong rule a faulty generator writes "
             "consistently, the kind a model learns instead of averaging it out.",
             "Clean splits: " + ", ".join(f"{s} {v:,}" for s, v in p["sizes"].items() if s != "pool") + "."]
    if "calibration" not in p["sizes"]:
        lines.append("No calibration split (`n_cal = 0`): notebook 02 cannot state a false-flag rate for its flags.")
    return lines


def warmup(run: str) -> list:
    w = runs.read_json(run, "warmup.json")
    weakest = min(w["per_task_after"], key=w["per_task_after"].get)
    lines = [f"{w['steps']} optimizer steps on {w['n_warm']:,} pool samples and {len(w.get('calibration_ids', []))} "
             f"calibration samples took the proxy from {_pct(w['accuracy_before'])} to "
             f"{_pct(w['accuracy_after'])} validation exact match (answer loss {w['val_loss_before']:.3f} → "
             f"{w['val_loss_after']:.3f}); its weakest task is `{weakest}` ({_pct(w['per_task_after'][weakest])}).",
             ("A proxy this competent can tell a wrong rule from a right one: notebook 02 reads its gradients."
              if w["accuracy_after"] >= 0.5 else
              "This proxy is far from competent: its utility will find format noise (garbled, off-task text) "
              "but cannot yet tell a wrong rule from a right one. The main run warms for longer.")]
    return lines


def scoring(run: str) -> list:
    s = runs.read_json(run, "scoring.json")
    au = s["toxic_auroc"]
    worst = min((k for k in au["ost"] if k != "all"), key=au["ost"].get)
    lines = [f"The first-order utility ranks {s['n_check']} checked samples as the exact step does "
             f"(Spearman {s['spearman_first_order_exact']:.3f}).",
             f"Toxic-detection AUROC over all kinds: this run's step {au['ost']['all']:.3f}, the paper's step "
             f"{au['ost-paper']['all']:.3f}, the proxy's loss {au['loss']['all']:.3f}, the validation shift "
             f"{au['shift']['all']:.3f}. The step's hardest kind is `{worst}` ({au['ost'][worst]:.3f}).",
             _size(s["size_spearman"])]
    t = s.get("toxic")
    if t:
        shares = {k: v for k, v in t["flagged_share"].items() if k in TOXIC}
        least = min(shares, key=shares.get)
        sign_clean = t["sign_flagged_share"].get("clean", float("nan"))
        lines.append(f"Toxic flags at q = {_pct(t['q'])}, calibrated on {t['n_calibration']} clean samples: "
                     f"{_pct(t['realised_false_flag_rate'])} of the pool's clean samples flagged (expected "
                     f"{_pct(t['expected_false_flag_rate'])}); every toxic kind {_pct(shares[least])} or more "
                     f"(`{least}` least). The sign rule (utility < 0) flags {_pct(sign_clean)} of the clean "
                     f"samples and {_pct(t['sign_flagged_share'][least])} of `{least}`, with no rate it can state.")
    dropped = s.get("default_dropped_share", {})
    if dropped:
        toxic = [v for k, v in dropped.items() if k in TOXIC]
        lines.append(f"The default selector's filter drops between {_pct(min(toxic))} and {_pct(max(toxic))} of "
                     f"each toxic kind and {_pct(dropped['clean'])} of the clean samples.")
    return lines


def _size(rho: dict) -> str:
    """What the Spearman of |utility| with ‖g_i‖ says of each step."""
    paper, ours = rho["ost-paper"], rho["ost"]
    line = (f"Spearman of |utility| with the gradient's length: {paper:.2f} for the paper's step, {ours:.2f} for "
            f"this run's. The paper's utility {'mostly' if paper > 0.5 else 'partly'} measures size")
    if ours < 0:
        return line + ("; at unit length a long gradient buys no score, and the long ones (samples the proxy fits "
                       "worst) are now the low-utility ones.")
    return line + "; at unit length the size no longer enters the score."


def subsets(run: str) -> list:
    labels = _labels(run)
    member = subset.read(runs.need(run, "subsets.parquet"))
    lines = [f"The pool: {_pct(labels['toxic'].mean())} toxic, difficulty {_mix(labels)}."]
    for name in sorted(c for c in member.columns if c.split("@")[0] in ("ost", "ost-topk")):
        chosen = labels.loc[member.index[member[name].to_numpy()]]
        lines.append(f"`{name}` ({len(chosen):,} samples): {_pct(chosen['toxic'].mean())} toxic, difficulty "
                     f"{_mix(chosen)}.")
    topk = [c for c in member.columns if c.startswith("ost-topk@")]
    if topk:
        easy = labels["difficulty"].min()
        small = min(topk, key=lambda c: float(c.split("@")[1]))
        share = (labels.loc[member.index[member[small].to_numpy()], "difficulty"] == easy).mean()
        lines.append(f"The paper's top-k keeps the easy, typical samples: {_pct(share)} of `{small}` is of the "
                     f"easiest level, against {_pct((labels['difficulty'] == easy).mean())} of the pool.")
    return lines


def baselines(run: str) -> list:
    b = runs.read_json(run, "baselines.json")
    auroc = {k: v["all"] for k, v in b["toxic_auroc"].items() if "all" in v and k not in ("oracle", "random")}
    order = sorted(auroc, key=auroc.get, reverse=True)
    ost_all = runs.read_json(run, "scoring.json")["toxic_auroc"]["ost"]["all"]
    lines = ["Toxic-detection AUROC over all kinds: " + ", ".join(f"{k} {auroc[k]:.3f}" for k in order)
             + f"; the default step's utility {ost_all:.3f}."]
    below = [k for k in order if auroc[k] < 0.5]
    if below:
        lines.append("Below 0.5 (" + ", ".join(below) + "): these rank toxic samples above clean ones; a scorer "
                     "that keeps the hardest or most surprising samples keeps the noise first.")
    return lines


def targets(run: str) -> list:
    sft = load_runs(runs.need(run, "sft_runs.jsonl"))
    lines = []
    for protocol, part in sft.groupby("protocol", sort=False):
        full = sft.loc[sft["subset"] == "full", "accuracy"].mean()
        means = part.groupby("subset")["accuracy"].mean().sort_values(ascending=False)
        best = means.index[0] if means.index[0] != "full" or len(means) == 1 else means.index[1]
        lines.append(f"{protocol.replace('_', ' ')}: " + ", ".join(f"`{k}` {_pct(v)}" for k, v in means.items())
                     + f" (means over {part['seed'].nunique()} seed(s)); Full-SFT {_pct(full)}, best subset `{best}`.")
    lines.append(("One seed per cell cannot tell a few points from noise: n" if sft["seed"].nunique() == 1 else "N")
                 + "otebook 07 pairs the seeds and adds the intervals.")
    return lines


def transfer(run: str) -> list:
    t = runs.read_json(run, "transfer.json")
    chance = t["fraction"]
    lines = [f"Proxy → target: Spearman {t['proxy_target_spearman']:.2f} between the proxy's utility and the "
             f"target's own exact one-step change on {t['n_transfer']} samples."]
    near = [k for k, v in t["sensitivity_overlap"].items() if v < 1.5 * chance]
    lines.append(f"Top-{100 * chance:.0f} % overlap with the default setting (chance {chance:.2f}): "
                 + ", ".join(f"{k} {v:.2f}" for k, v in t["sensitivity_overlap"].items()) + ".")
    if near:
        lines.append("Near chance: " + ", ".join(near) + ". There the ranking is nearly unrelated to the default's: "
                     "what the proxy can do decides what its utility ranks.")
    return lines


def analysis(run: str) -> list:
    s = runs.read_json(run, "summary.json")
    lines = []
    for name, c in s["claims"].items():
        if c["difference_points"] is None:
            lines.append(f"{name.replace('_', ' ')}: not measured in this run.")
            continue
        ci = c.get("ci95_points")
        known = ci is not None and ci == ci and c.get("resolved") is not None
        here = f"{c['difference_points']:+.1f}" + (f" ± {ci:.1f}" if known else "")
        lines.append(f"{name.replace('_', ' ')}: paper {c['paper_points']:+.1f} points, here {here}: "
                     f"{_verdict(c, ci if known else None)}.")
    lines += _why(run, s)
    return lines


def _below_paper(c: dict) -> bool:
    """Whether the claim's whole interval lies below the paper's figure."""
    return c["difference_points"] + (c["ci95_points"] or 0) < c["paper_points"]


def _verdict(c: dict, ci) -> str:
    """A claim in words: whether it holds here, and whether the paper's size is inside what was measured."""
    sign = "the paper's sign" if c["holds"] else "the opposite sign"
    if ci is None:
        return f"{sign}, one seed: no interval"
    below = _below_paper(c)
    if c["resolved"] and c["holds"]:
        return "holds here (resolved in the paper's direction)" + (", smaller than the paper's" if below else "")
    if c["resolved"]:
        return "does not hold: resolved against the paper"
    return "not shown here: the interval spans 0" + (", and the paper's figure lies above it" if below else "")


def _why(run: str, summary: dict) -> list:
    """Why the top-20 % lands where it does: what it holds, next to a random pick of the clean part."""
    rows = pd.DataFrame(summary["rows"])
    fixed = rows[rows["protocol"] == "fixed_compute"].groupby("method")["accuracy"].mean()
    full = rows[rows["method"] == "full"]["accuracy"].mean()
    member = subset.read(runs.need(run, "subsets.parquet"))
    if "ost" not in fixed or "ost@0.2" not in member.columns:
        return []
    labels = _labels(run)
    chosen = labels.loc[member.index[member["ost@0.2"].to_numpy()]]
    claim = summary["claims"].get("top20_fixed_compute_vs_full", {})
    reached = claim.get("difference_points") is not None and claim.get("resolved") and not _below_paper(claim)
    line = (f"{'What it holds' if reached else 'Why it falls short of the paper'}: the default's top-20 % is "
            f"{_pct(chosen['toxic'].mean())} toxic with difficulty {_mix(chosen)} "
            f"(the clean part: {_mix(labels[labels['noise'] == 'clean'])}); at fixed compute it reaches "
            f"{_pct(fixed['ost'])} against Full-SFT's {_pct(full)}")
    if "clean-random" in fixed:
        line += (f", and a random 20 % of the clean part {_pct(fixed['clean-random'])}: what a filter that finds "
                 "the noise and drops nothing else would reach")
    return [line + ".", _dropped_clean(run, labels)]


def _dropped_clean(run: str, labels: pd.DataFrame) -> str:
    """Which clean samples the default filter drops: where the systematic noise sits, the clean items beside it."""
    frame = subset.read_scored(runs.need(run, "scores.parquet"), runs.need(run, "shift.parquet"))
    harm = pd.Series(coverage.harm_rank(frame.reset_index()), index=frame.index)
    dropped = harm <= harm.quantile(coverage.FilterRandom().drop)
    clean = labels["noise"] == "clean"
    by_task = dropped[clean].groupby(labels.loc[clean, "task"]).mean().sort_values(ascending=False)
    toxic = labels.groupby("task")["toxic"].mean()
    together = by_task.corr(toxic.reindex(by_task.index), method="spearman")
    line = (f"The harm filter drops {_pct(dropped[clean].mean())} of the clean samples, unevenly: "
            + ", ".join(f"`{t}` {_pct(v)} (its toxic share {_pct(toxic[t])})" for t, v in by_task.items()) + ". ")
    n = len(by_task)
    if together > 0:
        return line + (f"Clean samples tend to go where more of their task is noise (Spearman {together:.2f} over {n} "
                       "tasks): the filter cannot always tell them from their noisy neighbours, and a random pick of "
                       "the clean part keeps them.")
    return line + f"That is not where the noise sits (Spearman {together:.2f} over {n} tasks)."


def own_data(run: str) -> list:
    r = json.loads((runs.results_dir(run) / "mine" / "report.json").read_text())
    t = r["toxic"]
    lines = [f"{r['rows']} records ({', '.join(f'{k} {v}' for k, v in r['status'].items())}); {r['selected']} "
             f"selected by `{r['selector']['name']}` at fraction {r['fraction']:g}.",
             f"The warmed proxy reaches {_pct(r['warmup_val_accuracy'])} validation exact match."
             + (" That is too low to trust its ranking: give it more epochs or records before reading the toxic "
                "list." if r["warmup_val_accuracy"] < 0.5 else "")]
    if t["rule"] == "calibrated":
        lines.append(f"Toxic flags: {t['flagged']} records at q = {_pct(t['q'])}, calibrated on {t['calibration']} "
                     f"clean records" + ("." if t["can_flag"] else ": too few to flag anything at this q."))
    else:
        lines.append(f"Toxic flags: {t['flagged']} records by the sign rule (utility < 0), no stated rate.")
    return lines


FINDINGS = {"00_make_pool": pool, "01_warm_up_proxy": warmup, "02_score_utility": scoring,
            "03_select_subsets": subsets, "04_score_baselines": baselines, "05_train_targets": targets,
            "06_check_proxy_transfer": transfer, "07_analyze_results": analysis, "08_select_your_data": own_data}


def markdown(run: str, notebook: str) -> str:
    return "### What this run shows\n\n" + "\n".join(f"- {line}" for line in FINDINGS[notebook](run))


def show(run: str, notebook: str):
    """The closing cell of a notebook: its findings as rendered Markdown."""
    from IPython.display import Markdown
    return Markdown(markdown(run, notebook))
