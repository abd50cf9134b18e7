"""Every baseline by name: the one place a list of names (notebook 04's `baselines`) becomes scores and subsets.

Three kinds, by what they need: `FREE` ones need nothing but the pool and a seed, `PROXY` ones the warmed
proxy (notebook 01's), `JUDGED` ones a judge model (DEITA also an embedder). Each function scores the names
of its kind in the list and skips the rest, so a notebook calls the three in turn and shows each kind's cost.
"""
from ost.baselines import deita, scores
from ost.baselines import judge as jd
from ost.method import select

FREE = ("random", "oracle")
PROXY = ("loss", "loss-high", "ifd", "ost-paper")
JUDGED = ("judge", "deita")
KNOWN = FREE + PROXY + JUDGED
WRITTEN = KNOWN + ("oracle-clean", "clean-random")   # every method whose subsets `subsets` may name


def check(names) -> list:
    """The names, refused with the known ones listed when one is unknown (before any model is loaded)."""
    unknown = sorted(set(names) - set(KNOWN))
    if unknown:
        raise ValueError(f"unknown baseline(s) {unknown}; known: {list(KNOWN)}")
    return list(names)


def free_scores(names, pool, seed: int = 0) -> dict:
    """random and the oracle (the planted labels: clean first, toxic last), seeded."""
    out = {}
    if "random" in names:
        out["random"] = scores.random_scores(pool, seed=seed)
    if "oracle" in names:
        out["oracle"] = scores.oracle_scores(pool, seed=seed)
    return out


def proxy_scores(names, pool, validation, model, tok, proc, progress: bool = True) -> dict:
    """The proxy's own signals: low loss (`loss`), high loss (`loss-high`), IFD, and the paper's plain
    first-order step (`ost-paper`); the loss pass is run once and shared by both loss orders."""
    out = {}
    if {"loss", "loss-high"} & set(names):
        losses = scores.answer_losses(model, tok, proc, pool, progress=progress)
        for keep, name in (("low", "loss"), ("high", "loss-high")):
            if name in names:
                out[name] = scores.loss_scores(model, tok, proc, pool, keep=keep, losses=losses)
                out[name].name = name
    if "ifd" in names:
        out["ifd"] = scores.ifd_scores(model, tok, proc, pool, progress=progress)
    if "ost-paper" in names:
        out["ost-paper"] = scores.ost_paper_scores(model, tok, proc, pool, validation)
    return out


def judged_scores(names, pool, *, judge_model: str = "packaged", judge_batch_size: int = 16,
                  deita_threshold: float = 0.9, progress: bool = True) -> dict:
    """LLM-as-a-Judge and DEITA (complexity × quality, then a diversity pass); DEITA reuses the judge's
    quality pass when both run. The judge is loaded once, only if one of them is asked for."""
    if not {"judge", "deita"} & set(names):
        return {}
    judge = jd.Judge.load(judge_model, batch_size=judge_batch_size)
    if progress:
        print(f"judge {judge.model_id} loaded in {judge.load_seconds:.0f} s")
    out = {}
    if "judge" in names:
        out["judge"] = jd.judge_scores(pool, judge, progress=progress)
    if "deita" in names:
        out["deita"] = deita.deita_scores(pool, judge, deita.Embedder.load(), threshold=deita_threshold,
                                          progress=progress, quality=out.get("judge"))
    return out


def subsets(results: dict, fractions, pool) -> dict:
    """{subset name: ids} of every scorer's top fractions; with the oracle, also `oracle-clean@<share>`,
    the pool without its planted noise (its fraction is the pool's clean share), and `clean-random@<f>`, a
    random pick of each fraction's size from that clean part (seeded as the oracle is)."""
    out = {select.subset_name(name, f): s.top(f) for name, s in results.items() for f in fractions}
    if "oracle" in results:
        ceiling = scores.clean_random(pool, seed=results["oracle"].extra.get("seed", 0))
        out |= {select.subset_name("clean-random", f): ceiling.top(f) for f in fractions}
        clean = scores.oracle_clean(pool)
        out[select.subset_name("oracle-clean", round(clean.scores.notna().mean(), 2))] = list(
            clean.scores.dropna().index)
    return out
