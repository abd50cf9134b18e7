import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import TINY
from transformers import PreTrainedTokenizerFast

from ost import baselines
from ost.baselines import deita, judge, suite
from ost.data import schema
from ost.method import select
from ost.models import collate, presets, train


@pytest.fixture(scope="module")
def pool(records):
    return schema.to_dataset(records[:24])


@pytest.fixture(scope="module")
def tiny(tokenizer):
    return presets.build(TINY, tokenizer, seed=0).eval()


def _check(s: baselines.Scores, pool):
    assert list(s.scores.index) == pool["id"] and s.scores.dtype == "float64"
    assert s.seconds >= 0 and s.flops >= 0 and s.name
    top20, top50 = select.top_fraction(s.scores, 0.2), select.top_fraction(s.scores, 0.5)
    assert len(top20) == round(0.2 * len(pool)) and top50[:len(top20)] == top20 == s.top(0.2)


def test_full_random_oracle(pool):
    for s in (baselines.full(pool), baselines.random_scores(pool, seed=3), baselines.oracle_scores(pool)):
        _check(s, pool)
    assert select.top_fraction(baselines.full(pool).scores, 1.0) == sorted(pool["id"])
    r = baselines.random_scores(pool, seed=3)
    assert r.top(0.5) == baselines.random_scores(pool, seed=3).top(0.5) != baselines.random_scores(pool, 4).top(0.5)
    noise = pd.Series(pool["noise"], index=pool["id"])
    ranked = noise.loc[select.top_fraction(baselines.oracle_scores(pool).scores, 1.0)].tolist()
    tier = [0 if n == "clean" else 1 if n == "duplicate" else 2 for n in ranked]
    assert tier == sorted(tier) and 2 in tier                         # clean, then duplicates, then toxic
    clean = baselines.oracle_clean(pool)
    assert set(select.top_fraction(clean.scores, 1.0)) == set(noise.index[noise == "clean"])


def test_suite_scores_by_name_and_names_its_subsets(pool, tiny, tokenizer, processor):
    with pytest.raises(ValueError, match="unknown baseline"):
        suite.check(["random", "los"])
    names = suite.check(["random", "oracle", "loss", "ifd"])
    results = {**suite.free_scores(names, pool, seed=3),
               **suite.proxy_scores(names, pool, pool, tiny, tokenizer, processor, progress=False)}
    assert sorted(results) == ["ifd", "loss", "oracle", "random"]          # loss-high, ost-paper not asked for
    assert results["random"].top(0.5) == baselines.random_scores(pool, seed=3).top(0.5)
    assert suite.judged_scores(names, pool) == {}                           # no judge asked for: none loaded
    subsets = suite.subsets(results, [0.25], pool)
    clean = [n for n in subsets if n.startswith("oracle-clean@")]
    assert len(clean) == 1 and set(subsets[clean[0]]) == {i for i, n in zip(pool["id"], pool["noise"]) if n == "clean"}
    ceiling = subsets["clean-random@0.25"]                  # a random pick of the clean part, of the fraction's size
    assert len(ceiling) == round(0.25 * len(pool)) and set(ceiling) < set(subsets[clean[0]])
    assert ceiling == suite.subsets(results, [0.25], pool)["clean-random@0.25"]       # seeded: the same pick
    assert all(len(subsets[f"{m}@0.25"]) == round(0.25 * len(pool)) for m in results)


def test_loss_low_high_match_the_proxy_answer_loss(pool, tiny, tokenizer, processor):
    losses = baselines.answer_losses(tiny, tokenizer, processor, pool, batch_size=5)
    ref = train.answer_losses(tiny, tokenizer, processor, pool).double().numpy()
    np.testing.assert_allclose(losses[0].to_numpy(), ref, rtol=1e-5)
    assert losses[2] > 0
    low = baselines.loss_scores(tiny, tokenizer, processor, pool, keep="low", batch_size=5)
    high = baselines.loss_scores(tiny, tokenizer, processor, pool, keep="high", losses=losses)
    for s in (low, high):
        _check(s, pool)
    np.testing.assert_allclose(low.scores.to_numpy(), -high.scores.to_numpy(), rtol=1e-5)
    assert low.top(0.2)[0] == losses[0].idxmin() and high.top(0.2)[0] == losses[0].idxmax()
    with pytest.raises(ValueError, match="keep"):
        baselines.loss_scores(tiny, tokenizer, processor, pool, keep="middle")


def test_ifd_divides_by_the_answer_alone_and_ranks_over_one_last(pool, tiny, tokenizer, processor):
    s = baselines.ifd_scores(tiny, tokenizer, processor, pool, batch_size=6)
    _check(s, pool)
    sample = dict(pool[0], question="", image=None)             # the answer with no question, no image
    batch = collate.Collator(tokenizer, processor)([sample])
    with torch.no_grad():
        alone = float(collate.per_sample_loss(tiny, batch)[0])
    assert s.extra["loss_alone"].iloc[0] == pytest.approx(alone, rel=1e-5)
    ifd = s.extra["ifd"]
    np.testing.assert_allclose(ifd, s.extra["loss_conditioned"] / s.extra["loss_alone"])
    assert s.extra["n_over_one"] == int((ifd > 1).sum())
    order = select.top_fraction(s.scores, 1.0)
    first_over = next((k for k, i in enumerate(order) if ifd[i] > 1), len(order))
    assert all(ifd[i] > 1 for i in order[first_over:])          # every IFD > 1 after every IFD ≤ 1
    ppl = baselines.ifd_scores(tiny, tokenizer, processor, pool, ratio="ppl", over_one="drop")
    assert (ppl.extra["ifd"] > 1).equals(ifd > 1) and ppl.scores[ifd > 1].isna().all()


def test_ost_paper_is_the_plain_first_order_sgd_utility(pool, tiny, tokenizer, processor, records):
    from ost.method import score
    from ost.method.step import PAPER
    val = schema.to_dataset(records[24:30])
    s = baselines.ost_paper_scores(tiny, tokenizer, processor, pool, val)
    _check(s, pool)
    assert s.name == "ost-paper" and s.flops > 0 and s.extra["step"] == PAPER.as_dict()
    want = score.score_samples(tiny, tokenizer, processor, pool, val, step=PAPER)
    np.testing.assert_allclose(s.scores.to_numpy(), want.to_numpy(), rtol=1e-6)


def test_diversity_pass_keeps_the_best_of_near_copies():
    scores = pd.Series([4.0, 3.0, 2.0, 1.0], index=["a", "b", "c", "d"])
    emb = np.array([[1, 0], [1, 0.01], [0, 1], [0.6, 0.8]], dtype="float32")
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    rank, kept = deita.diversity_rank(scores, emb, threshold=0.9)
    assert kept.tolist() == [True, False, True, True]           # b is a near copy of a
    assert select.top_fraction(rank, 1.0) == ["a", "c", "d", "b"]
    assert deita.diversity_rank(scores, emb, threshold=1.0)[1].all()


@pytest.fixture(scope="module")
def vl_judge(tmp_path_factory, tiny, tokenizer, processor):
    """Any chat model folder works as a judge: here a saved tiny Qwen2-VL (text only), no GGUF."""
    folder = presets.save(tmp_path_factory.mktemp("vl") / "judge", tiny, tokenizer, processor)
    return judge.Judge.load(folder, batch_size=3, cache_dir=tmp_path_factory.mktemp("cache"))


def test_judge_any_chat_model_batched_cached(pool, vl_judge):
    s = judge.judge_scores(pool, vl_judge)
    _check(s, pool)
    unique = len(set(zip(pool["question"], pool["answer"])))    # exact duplicates are rated once
    assert ((s.scores >= 1) & (s.scores <= 5)).all() and s.extra["computed"] == unique < len(pool)
    one = [vl_judge._forward([vl_judge._encode(vl_judge.render(judge.PROMPTS["judge"], q, a))],
                             vl_judge.digit_ids(judge.PROMPTS["judge"]))[0]
           for q, a in zip(pool["question"][:4], pool["answer"][:4])]
    np.testing.assert_allclose(s.scores.to_numpy()[:4], one, rtol=1e-4)   # left padding changes nothing
    fresh = judge.Judge(None, vl_judge.tok, vl_judge.model_id, cache_dir=vl_judge.cache_path.parent)
    again = judge.judge_scores(pool, fresh)                      # no model at all: every rating from the cache
    assert again.extra["cached"] == unique and again.extra["computed"] == 0
    assert again.seconds == pytest.approx(s.seconds) and again.flops == s.flops > 0     # the original cost
    np.testing.assert_allclose(again.scores, s.scores)
    assert len(json.loads(vl_judge.cache_path.read_text())) == unique


def test_judge_without_digit_tokens_fails_clearly():
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tm
    raw = Tokenizer(tm.WordLevel({"[UNK]": 0, "Rating": 1, ":": 2}, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tok = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[UNK]")
    with pytest.raises(ValueError, match="rating digit '1'"):
        judge.Judge(None, tok, "no-digits", cache_dir=None).rate(["q"], ["a"])


def test_packaged_judge_and_embedder_score_two_samples(pool, tmp_path):
    """The real SmolLM2-135M-Instruct (GGUF) and all-MiniLM-L6-v2 wheels, offline."""
    torch.set_num_threads(2)
    two = pool.select(range(2))
    j = judge.Judge.load("packaged", cache_dir=tmp_path)
    emb = deita.Embedder.load()
    s = judge.judge_scores(two, j)
    assert ((s.scores > 1) & (s.scores < 5)).all() and s.flops > 1e9
    d = deita.deita_scores(two, j, emb)
    assert d.extra["complexity"].between(1, 6).all() and d.extra["quality"].between(1, 6).all()
    assert sorted(d.scores) == [1.0, 2.0] and d.flops > s.flops
    shared = deita.deita_scores(two, j, emb, quality=s)        # the judge's rating as the quality score
    np.testing.assert_allclose(shared.extra["quality"], s.scores)
    np.testing.assert_allclose(shared.extra["evol"], d.extra["complexity"] * s.scores)
    with pytest.raises(ValueError, match="ids"):
        deita.deita_scores(two, j, emb, quality=judge.judge_scores(pool.select([1, 0]), j))
    v = emb.encode(["What is 3 + 4?", "What is 3 plus 4?", "The cat sat on the mat."])
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1, rtol=1e-5)
    assert v.shape == (3, 384) and v[0] @ v[1] > v[0] @ v[2]


def test_written_names_every_method_whose_subsets_the_suite_writes(pool):
    results = suite.free_scores(["random", "oracle"], pool, seed=0)
    written = {name.split("@")[0] for name in suite.subsets(results, [0.25], pool)}
    assert written <= set(suite.WRITTEN) and not {"ost", "ost-topk", "ost-cover"} & set(suite.WRITTEN)
