import math

import numpy as np
import pandas as pd
import pytest

from ost import runs
from ost.method import select, subset
from ost.runs.settings import Selection


@pytest.fixture
def scores():
    return pd.Series([0.5, -0.2, 0.9, float("nan"), 0.5, 0.1, -1.0, 0.3, 0.7, 0.0],
                     index=[f"s{i}" for i in range(10)])


def test_top_fraction_ranks_and_breaks_ties_by_id(scores):
    assert select.top_fraction(scores, 0.2) == ["s2", "s8"]
    assert select.top_fraction(scores, 0.5) == ["s2", "s8", "s0", "s4", "s7"]      # s0/s4 tie → by id
    assert select.top_fraction(scores.sample(frac=1, random_state=3), 0.5) == select.top_fraction(scores, 0.5)
    assert "s3" not in select.top_fraction(scores, 1.0) and select.excluded(scores) == ["s3"]
    with pytest.raises(ValueError):
        select.top_fraction(scores, 0.0)


def test_budget_in_samples_and_tokens(scores):
    assert select.budget(scores, max_samples=3) == ["s2", "s8", "s0"]
    tokens = pd.Series(10, index=scores.index)
    tokens["s8"] = 50
    assert select.budget(scores, max_tokens=35, tokens=tokens) == ["s2", "s0", "s4"]   # s8 skipped: too long
    with pytest.raises(ValueError, match="tokens"):
        select.budget(scores, max_tokens=5)


def test_toxic_flags_and_composition(scores):
    flags = select.toxic_flags(scores)
    assert sorted(flags[flags].index) == ["s1", "s6"]
    assert sorted(select.toxic_flags(scores, threshold=0.2)[lambda f: f].index) == ["s1", "s5", "s6", "s9"]
    labels = pd.Series(["clean"] * 6 + ["carry_dropped"] * 4, index=scores.index)
    comp = select.composition(["s2", "s8", "s6"], labels)
    assert comp.loc["carry_dropped", "count"] == 2 and comp.loc["clean", "count"] == 1
    assert math.isclose(comp.loc["clean", "pool_share"], 0.6)
    with pytest.raises(KeyError):
        select.composition(["nope"], labels)


def test_quotas_sum_and_respect_sizes():
    q = select.quotas({"a": 50, "b": 30, "c": 20}, 10)
    assert q == {"a": 5, "b": 3, "c": 2}
    q = select.quotas({"a": 1, "b": 99}, 10)
    assert sum(q.values()) == 10 and q["a"] <= 1


def test_coverage_keeps_every_cluster():
    rng = np.random.default_rng(0)
    ids = [f"x{i}" for i in range(100)]
    cluster = pd.Series(["easy"] * 70 + ["carry"] * 30, index=ids)
    score = pd.Series(np.where(cluster == "easy", 1.0, 0.0) + rng.random(100) * 0.1, index=ids)
    plain = select.top_fraction(score, 0.2)
    covered = select.coverage_top_fraction(score, cluster, 0.2)
    assert set(cluster[plain]) == {"easy"}                       # pure ranking gives up a whole region
    assert cluster[covered].value_counts().to_dict() == {"easy": 14, "carry": 6}
    assert len(covered) == len(plain) == 20
    carry_kept = [i for i in covered if cluster[i] == "carry"]
    best_carry = score[cluster == "carry"].sort_values(ascending=False).index[:6]
    assert sorted(carry_kept) == sorted(best_carry)              # within a cluster, utility order


def test_clusters_are_seeded_and_find_separated_groups():
    rng = np.random.default_rng(1)
    centers = np.eye(4)[:3] * 10
    x = np.concatenate([c + rng.normal(scale=0.3, size=(20, 4)) for c in centers])
    ids = [f"e{i}" for i in range(60)]
    c = select.clusters(x, ids, k=3, seed=0)
    assert c.index.tolist() == ids and c.nunique() == 3
    assert all(c.iloc[g * 20:(g + 1) * 20].nunique() == 1 for g in range(3))   # each group one cluster
    assert c.equals(select.clusters(x, ids, k=3, seed=0))
    covered = select.coverage_top_fraction(pd.Series(np.arange(60.0), index=ids), c, 0.3)
    assert c[covered].value_counts().tolist() == [6, 6, 6]
    with pytest.raises(ValueError, match="ids"):
        select.clusters(x, ids[:5])


def test_membership_round_trip():
    ids = [f"m{i}" for i in range(6)]
    frame = select.membership({select.subset_name("ost", 0.5): ["m4", "m1", "m0"]}, ids)
    assert frame.columns.tolist() == ["ost@0.5"] and frame.index.tolist() == ids
    assert frame.index[frame["ost@0.5"]].tolist() == ["m0", "m1", "m4"]
    with pytest.raises(KeyError, match="not in the pool"):
        select.membership({"x": ["zz"]}, ids)


def test_label_clusters_join_the_named_columns():
    labels = pd.DataFrame({"task": ["sum", "sum", "product"], "difficulty": [1, 2, 1]}, index=["a", "b", "c"])
    assert select.label_clusters(labels, "task").tolist() == ["sum", "sum", "product"]
    assert select.label_clusters(labels, "task, difficulty").tolist() == ["sum/1", "sum/2", "product/1"]
    with pytest.raises(ValueError, match="unknown column"):
        select.label_clusters(labels, "tsak")


def test_subsets_written_are_read_back_checked_for_booleans_and_the_pool_order(tmp_path):
    ids = [f"m{i}" for i in range(4)]
    subset.write({"ost@0.5": ["m0", "m2"]}, ids, tmp_path / "s.parquet", meta={"selector": "topk"})
    assert subset.read(tmp_path / "s.parquet", ids)["ost@0.5"].tolist() == [True, False, True, False]
    assert runs.read_meta(tmp_path / "s.parquet") == {"selector": "topk"}
    with pytest.raises(ValueError, match="in order"):
        subset.read(tmp_path / "s.parquet", ids[::-1])
    pd.DataFrame({"ost@0.5": [0.1, 0.2]}, index=pd.Index(ids[:2], name="id")).to_parquet(tmp_path / "u.parquet")
    with pytest.raises(ValueError, match="not booleans"):
        subset.read(tmp_path / "u.parquet")


def test_thinnest_is_the_least_kept_clusters_share_against_the_pools():
    clusters = pd.Series(["a"] * 6 + ["b"] * 3 + ["c"], index=[f"x{i}" for i in range(10)])
    assert select.thinnest(clusters.index, clusters) == 1.0                       # the pool itself
    assert select.thinnest(["x0", "x1", "x6", "x9"], clusters) == pytest.approx(0.25 / 0.3)   # b: 1 of 4 vs 3 of 10
    assert select.thinnest(["x0", "x6"], clusters) == 0.0                         # c left out


def test_the_select_stage_keeps_a_fraction_of_the_usable_rows_only():
    ids = [f"m{i}" for i in range(10)]
    scored = pd.DataFrame({"utility": np.arange(10.0), "shift": np.ones(10),
                           "status": ["ok"] * 8 + ["nonfinite", "skipped:too_long"]}, index=pd.Index(ids, name="id"))
    kept = subset.choose(scored, 0.5, Selection(selector="topk"))
    assert kept == ["m7", "m6", "m5", "m4"]             # half of the 8 usable rows, the best utility first
    again = subset.choose(scored, 0.5, Selection(selector_seed=3))
    assert len(again) == 4 and not {"m8", "m9"} & set(again)
    assert again == subset.choose(scored, 0.5, Selection(selector_seed=3))
