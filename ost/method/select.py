"""Turn one score per sample (higher = keep) into subsets: top fraction, budget, toxic flags, quotas.

Every selector takes `scores` as a pandas Series indexed by sample id, so OST and every baseline go
through the same code. Ties break by id, so the same scores always give the same subset. Samples
with a non-finite score are never selected (they are not dropped from the pool: `excluded` lists them).
"""
import math

import numpy as np
import pandas as pd
from sklearn.cluster import KMeans


def _ranked(scores: pd.Series) -> pd.Series:
    """Finite scores, best first, ties by id."""
    s = pd.Series(scores, dtype="float64")
    if s.index.has_duplicates:
        raise ValueError(f"duplicate ids in scores: {list(s.index[s.index.duplicated()][:5])}")
    finite = s[np.isfinite(s.to_numpy())]
    order = sorted(finite.index, key=lambda i: (-finite[i], str(i)))
    return finite.loc[order]


def excluded(scores: pd.Series) -> list:
    """Ids whose score is NaN or infinite: they cannot be ranked, so no selector keeps them."""
    s = pd.Series(scores, dtype="float64")
    return list(s.index[~np.isfinite(s.to_numpy())])


def n_for(fraction: float, n: int) -> int:
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, round(fraction * n))


def top_fraction(scores: pd.Series, fraction: float) -> list:
    """The best `fraction` of the pool (of all samples, ranked or not), best first."""
    return list(_ranked(scores).index[:n_for(fraction, len(scores))])


def budget(scores: pd.Series, max_samples: int | None = None, max_tokens: int | None = None,
           tokens: pd.Series | None = None) -> list:
    """Best first until a budget in samples and/or answer tokens is spent (a sample that would
    overrun the token budget is skipped and smaller ones after it may still fit)."""
    if max_tokens is not None and tokens is None:
        raise ValueError("a token budget needs `tokens`: the answer-token count per id")
    chosen, spent = [], 0
    for i in _ranked(scores).index:
        if max_samples is not None and len(chosen) >= max_samples:
            break
        cost = int(tokens[i]) if max_tokens is not None else 0
        if max_tokens is not None and spent + cost > max_tokens:
            continue
        chosen.append(i)
        spent += cost
    return chosen


def toxic_flags(scores: pd.Series, threshold: float = 0.0) -> pd.Series:
    """True where the score is below `threshold` (OST: a step on it raises the validation loss)."""
    s = pd.Series(scores, dtype="float64")
    return s < threshold


def composition(ids, labels: pd.Series) -> pd.DataFrame:
    """Count and share of each label value in a subset, next to its share in the whole pool."""
    labels = pd.Series(labels)
    missing = set(ids) - set(labels.index)
    if missing:
        raise KeyError(f"{len(missing)} selected ids have no label, e.g. {sorted(missing)[:3]}")
    sub = labels.loc[list(ids)].value_counts()
    pool = labels.value_counts()
    out = pd.DataFrame({"count": sub, "share": sub / max(len(ids), 1), "pool_share": pool / len(labels)})
    out = out.fillna(0).astype({"count": int}).sort_index()
    return out.sort_values("count", ascending=False, kind="stable")


def quotas(sizes: dict, k: int) -> dict:
    """Split k slots across clusters in proportion to their sizes (largest remainder, ties by name)."""
    total = sum(sizes.values())
    exact = {c: k * n / total for c, n in sizes.items()}
    out = {c: min(sizes[c], math.floor(q)) for c, q in exact.items()}
    rest = sorted(sizes, key=lambda c: (-(exact[c] - math.floor(exact[c])), str(c)))
    while sum(out.values()) < min(k, total):
        for c in rest:
            if sum(out.values()) >= min(k, total):
                break
            if out[c] < sizes[c]:
                out[c] += 1
    return out


def coverage_top_fraction(scores: pd.Series, clusters: pd.Series, fraction: float) -> list:
    """Top `fraction` with a quota per cluster, filled in score order, so no region of the task is
    given up. Clusters come from a label column (e.g. `task`) or from proxy embeddings.

    At 20 % pure ranking lost whole regions in the prototype (every carry case) and fell below
    Full-SFT whatever the scorer; quotas keep each cluster's share of the pool.
    """
    ranked = _ranked(scores)
    clusters = pd.Series(clusters).loc[ranked.index]
    k = n_for(fraction, len(scores))
    quota = quotas(clusters.value_counts().to_dict(), k)
    chosen, used = [], dict.fromkeys(quota, 0)
    for i in ranked.index:
        c = clusters[i]
        if used[c] < quota[c]:
            chosen.append(i)
            used[c] += 1
    return sorted(chosen, key=lambda i: (-ranked[i], str(i)))


def label_clusters(labels: pd.DataFrame, coverage: str) -> pd.Series:
    """Clusters named by label columns: "task" → one per task, "task,difficulty" → one per pair ("sum/2")."""
    columns = [c.strip() for c in coverage.split(",")]
    unknown = set(columns) - set(labels.columns)
    if unknown:
        raise ValueError(f"coverage names unknown column(s) {sorted(unknown)}; use {sorted(labels.columns)} "
                         "or 'embedding'")
    return labels[columns].astype(str).agg("/".join, axis=1)


def clusters(vectors, ids, k: int = 16, seed: int = 0) -> pd.Series:
    """k-means cluster of each sample's embedding (e.g. `train.embeddings` of the proxy), indexed by id:
    the regions `coverage_top_fraction` keeps when the pool has no label column to stratify by."""
    x = np.asarray(vectors, dtype="float64")
    if len(x) != len(ids):
        raise ValueError(f"{len(x)} vectors for {len(ids)} ids")
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)    # direction, not length
    labels = KMeans(n_clusters=min(k, len(x)), n_init=4, random_state=seed).fit_predict(x)
    return pd.Series([f"c{c:02d}" for c in labels], index=list(ids), name="cluster")


def membership(subsets: dict, ids) -> pd.DataFrame:
    """Subsets as one boolean column each over every pool id (index) — a compact, diffable file."""
    ids = list(ids)
    known = set(ids)
    out = pd.DataFrame(index=pd.Index(ids, name="id"))
    for name, chosen in subsets.items():
        stray = set(chosen) - known
        if stray:
            raise KeyError(f"subset {name!r} holds {len(stray)} ids not in the pool, e.g. {sorted(stray)[:3]}")
        out[name] = out.index.isin(list(chosen))
    return out


def thinnest(ids, clusters: pd.Series) -> float:
    """How evenly a subset covers the clusters: the share it keeps of its least-kept cluster, as a multiple of that
    cluster's share of the pool (1: every cluster as in the pool; 0: a cluster left out)."""
    pool_share = clusters.value_counts(normalize=True)
    kept = clusters[list(ids)].value_counts(normalize=True).reindex(pool_share.index, fill_value=0)
    return float((kept / pool_share).min())


def subset_name(method: str, fraction: float) -> str:
    return f"{method}@{fraction:g}"
