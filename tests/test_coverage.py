import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY

from ost.data import schema
from ost.method import coverage, score
from ost.method.sketch import Sketch
from ost.method.step import Step
from ost.models import presets

N, DIM, N_VAL = 120, 16, 7


@pytest.fixture(autouse=True)
def _threads():
    torch.set_num_threads(1)


@pytest.fixture
def pool():
    """A scored pool with two rows not `ok`, one NaN utility, and label columns that no rule may read."""
    rng = np.random.default_rng(3)
    scores = pd.DataFrame({"id": [f"s{i:03d}" for i in range(N)], "utility": rng.normal(size=N),
                           "loss": rng.exponential(size=N), "shift": rng.normal(0.5, 1, size=N), "status": "ok",
                           "noise": rng.choice(["clean", "wrong_answer"], N), "difficulty": rng.integers(1, 4, N),
                           "task": rng.choice(["sum", "product"], N)})
    scores.loc[[5, 17], "status"] = ["nonfinite", "skipped:too_long"]
    scores.loc[9, "utility"] = np.nan
    return scores, rng.normal(size=(N, DIM)), rng.normal(size=(N_VAL, DIM))


RULES = {
    "top_k": lambda s, f, v, seed: coverage.top_k(s, 0.25),
    "filter_stratify": lambda s, f, v, seed: coverage.filter_stratify(s, 0.25, coverage.FilterStratify(seed=seed)),
    "lookahead": lambda s, f, v, seed: coverage.lookahead_greedy(s, f, v, 0.25, coverage.Lookahead(drop=0.1)),
    "round_robin": lambda s, f, v, seed: coverage.round_robin(s, f, v, 0.25),
    "round_robin_raw": lambda s, f, v, seed: coverage.round_robin(s, f, v, 0.25, coverage.RoundRobin(0.0, False)),
    "max_alignment": lambda s, f, v, seed: coverage.max_alignment(s, f, v, 0.25),
    "filter_random": lambda s, f, v, seed: coverage.filter_random(s, 0.25, coverage.FilterRandom(seed=seed)),
    **{f"choose:{name}": (lambda name: lambda s, f, v, seed: coverage.choose(s, 0.25, name, seed=seed, features=f,
                                                                          val_features=v))(name)
       for name in coverage.RULES},
}


@pytest.mark.parametrize("name", RULES)
def test_rule_is_deterministic_sized_and_keeps_only_ok_rows(pool, name):
    scores, f, v = pool
    ids = RULES[name](scores, f, v, 0)
    assert ids == RULES[name](scores.copy(), f.copy(), v.copy(), 0)
    assert len(ids) == 30 and len(set(ids)) == 30
    assert not {"s005", "s017", "s009"} & set(ids)


@pytest.mark.parametrize("name", RULES)
def test_rule_reads_no_label(pool, name):
    scores, f, v = pool
    ids = RULES[name](scores, f, v, 0)
    assert RULES[name](scores[["id", "utility", "loss", "shift", "status"]], f, v, 0) == ids
    shuffled = scores.assign(**{c: scores[c].sample(frac=1, random_state=1).to_numpy()
                                for c in ("noise", "difficulty", "task")})
    assert RULES[name](shuffled, f, v, 0) == ids


@pytest.mark.parametrize("name", ["filter_stratify", "filter_random"])
def test_seed_changes_the_random_draw(pool, name):
    scores, f, v = pool
    assert RULES[name](scores, f, v, 0) != RULES[name](scores, f, v, 1)


def test_filter_random_drops_the_rows_ranked_worst_by_either_signal(pool):
    scores, _, _ = pool
    usable = scores[(scores["status"] == "ok") & scores["utility"].notna()]
    worst_utility = set(usable.nsmallest(10, "utility")["id"])
    worst_shift = set(usable.nsmallest(10, "shift")["id"])
    for seed in range(5):
        chosen = coverage.filter_random(scores, 0.25, coverage.FilterRandom(seed=seed))
        assert not (worst_utility | worst_shift) & set(chosen)
    harm = coverage.harm_rank(scores)
    assert np.isnan(harm[[5, 9, 17]]).all() and np.nanmax(harm) <= 1
    without_shift = coverage.harm_rank(scores.drop(columns="shift"))      # the utility alone when there is no shift
    np.testing.assert_allclose(without_shift[usable.index], usable["utility"].rank(pct=True))


def test_filter_random_never_returns_fewer_than_asked():
    """Six rows, a drop of 0.9 and half of them asked for: the drop gives way to the size, worst rows last."""
    scores = pd.DataFrame({"id": list("abcdef"), "utility": [1.0, 2.0, -3.0, 0.5, -1.0, 5.0],
                           "shift": [0.1, 0.2, 0.3, -0.01, -2.0, 0.4], "status": ["ok"] * 5 + ["nonfinite"]})
    chosen = coverage.filter_random(scores, 0.5, coverage.FilterRandom(drop=0.9))
    assert len(chosen) == 3 and set(chosen) == {"a", "b", "d"}           # e is worst by shift, c by utility


def test_choose_refuses_an_unknown_rule_and_a_feature_rule_without_features(pool):
    scores, _, _ = pool
    with pytest.raises(ValueError, match="unknown selector"):
        coverage.choose(scores, 0.25, "top-k")
    with pytest.raises(ValueError, match="needs the gradient features"):
        coverage.choose(scores, 0.25, "lookahead")
    assert coverage.choose(scores, 0.25) == coverage.filter_random(scores, 0.25)     # the default


def test_harm_filter_drops_the_lowest_utilities(pool):
    scores, _, _ = pool
    rows = coverage.eligible(scores, drop=0.5)
    kept = scores["utility"].iloc[rows]
    finite_ok = scores[(scores["status"] == "ok") & scores["utility"].notna()]
    assert len(rows) == len(finite_ok) - round(0.5 * len(finite_ok))     # the drop is rounded, the rest kept
    assert kept.min() >= finite_ok["utility"].median() - 1e-12
    signed = scores["utility"].iloc[coverage.eligible(scores, drop_negative=True)]
    assert len(signed) == (finite_ok["utility"] >= 0).sum() and signed.min() >= 0


def test_lookahead_prefers_a_new_direction_over_a_repeat():
    """Two copies of the best-aligned sample and one slightly less aligned, orthogonal to them: after the first
    copy, the lookahead takes the new direction, where top-k would take the repeat."""
    f = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 0.9]])
    v = np.array([[1.0, 1.0]])
    scores = pd.DataFrame({"id": ["a", "b", "c"], "utility": f @ v[0], "status": "ok"})
    assert coverage.lookahead_greedy(scores, f, v, 2 / 3) == ["a", "c"]
    assert coverage.top_k(scores, 2 / 3) == ["a", "b"]


def test_round_robin_serves_every_validation_sample():
    """Validation samples along three axes, candidates clustered on them with one axis crowded: each axis's
    validation sample gets a candidate of its own, where top-k by the mean alignment takes only the crowd."""
    f = np.array([[1, 0, 0]] * 6 + [[0, 1, 0], [0, 0, 1]], dtype=float) + 0.01 * np.arange(24).reshape(8, 3)
    v = np.eye(3)
    scores = pd.DataFrame({"id": [f"x{i}" for i in range(8)], "utility": f @ v.mean(0), "status": "ok"})
    chosen = coverage.round_robin(scores, f, v, 3 / 8, coverage.RoundRobin(drop=0.0, centre=False))
    assert {"x6", "x7"} <= set(chosen)


def test_sketch_keeps_inner_products_and_is_seeded():
    torch.manual_seed(0)
    params = [torch.zeros(50, 40), torch.zeros(300)]
    grads = [torch.randn(4, 50, 40), torch.randn(4, 300)]
    exact = sum((g.flatten(1) @ g.flatten(1).T) for g in grads)
    a = Sketch(dim=2048, seed=1).bind(params)(grads)
    assert torch.equal(a, Sketch(dim=2048, seed=1).bind(params)(grads))
    assert not torch.equal(a, Sketch(dim=2048, seed=2).bind(params)(grads))
    assert torch.allclose(a @ a.T, exact, rtol=0, atol=0.15 * float(exact.diagonal().mean()))


def test_scoring_with_a_sketch_keeps_the_utility_and_sketches_its_inner_products(records, tokenizer, processor):
    """The sketch comes from the scoring pass and leaves the utility as it was; with a sketch as wide as the
    model, ⟨mean validation feature, φ_i⟩ ranks the samples as the utility does (an unpreconditioned step here)."""
    model = presets.build(TINY, tokenizer, seed=0).eval()
    pool, val = schema.to_dataset(records[:16]), schema.to_dataset(records[16:24])
    step = Step(optimizer="sgd", normalize=True, unit_val=True, continue_warmup=False)
    plain = score.score_samples(model, tokenizer, processor, pool, val, step=step)
    wide = sum(p.numel() for p in model.parameters() if p.requires_grad) * 16
    u, f, v = score.score_samples(model, tokenizer, processor, pool, val, step=step, sketch=Sketch(dim=wide))
    np.testing.assert_allclose(u.to_numpy(), plain.to_numpy(), rtol=1e-9)
    assert f.shape == (16, wide) and v.shape == (8, wide)
    assert np.corrcoef(f @ v.mean(0), u.to_numpy())[0, 1] > 0.95


def test_the_package_names_the_selector_and_every_entry_point_resolves():
    import ast
    import importlib

    import ost
    assert ost.select is coverage.choose
    assert all(callable(getattr(ost, name)) for name in ost.__all__)
    assert ost.__all__ == sorted(ost._EXPORTS)
    tree = ast.parse(open(ost.__file__).read())          # what an editor resolves: the TYPE_CHECKING imports
    static = {a.asname or a.name: getattr(importlib.import_module(node.module), a.name)
              for block in tree.body if isinstance(block, ast.If) and getattr(block.test, "id", "") == "TYPE_CHECKING"
              for node in block.body for a in node.names}
    assert static == {name: getattr(ost, name) for name in ost.__all__}
