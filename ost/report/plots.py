"""One look for every figure, and the pictures several notebooks draw."""
from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")

# The colour of a planted kind wherever a figure marks toxic samples: only the kinds of `ost.data.pool.TOXIC` are
# toxic; an exact duplicate is wasteful, not toxic, so it takes a neutral colour of its own.
CLEAN, DUPLICATE, TOXIC = "steelblue", "darkgrey", "firebrick"


def is_toxic(kind) -> bool:
    """Whether a planted noise kind is toxic (`ost.data.pool.TOXIC`): "clean" and "duplicate" are not."""
    from ost.data.pool import TOXIC as TOXIC_KINDS
    return kind in TOXIC_KINDS


def toxic_colour(kind) -> str:
    """`CLEAN`, `DUPLICATE` or `TOXIC` for a planted noise kind; a kind that is neither clean nor toxic (a
    duplicate, or a label this pool does not plant) is neutral."""
    return TOXIC if is_toxic(kind) else CLEAN if kind == "clean" else DUPLICATE


def scatter_by_toxic(x, y, noise, ax=None, s: float = 12, **kw):
    """Points coloured by whether their planted kind is toxic: clean, exact duplicates (neutral: wasteful, not
    toxic), and the toxic kinds of `ost.data.pool.TOXIC`; each group that occurs gets a legend entry."""
    import numpy as np
    x, y, noise = np.asarray(x, dtype=float), np.asarray(y, dtype=float), np.asarray(noise)
    ax = ax or plt.subplots(figsize=(4.8, 4.4))[1]
    colours = np.array([toxic_colour(k) for k in noise])
    for colour, label in ((CLEAN, "clean"), (DUPLICATE, "duplicate (not toxic)"), (TOXIC, "toxic")):
        m = colours == colour
        if m.any():
            ax.scatter(x[m], y[m], s=s, color=colour, label=label, **kw)
    ax.legend(fontsize=8)
    return ax


def save_fig(fig, path) -> Path:
    """Save as PNG (folders created) and return the path, so a notebook can assert it exists."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def sample_grid(dataset, n: int = 12, cols: int = 4, width: int = 34):
    """Images with their question, answer and noise label: what the model is actually fed."""
    import textwrap
    rows = -(-n // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.4 * rows))
    for ax, sample in zip(axes.flat, dataset.select(range(min(n, len(dataset))))):
        ax.imshow(sample["image"])
        ax.set_xticks([]), ax.set_yticks([])
        text = "\n".join(textwrap.wrap(f"Q: {sample['question']}", width) +
                         textwrap.wrap(f"A: {sample['answer']}", width))
        colour = TOXIC if is_toxic(sample["noise"]) else "black"
        ax.set_title(f"{sample['task']} · {sample['noise']}", fontsize=9, color=colour)
        ax.set_xlabel(text, fontsize=7, loc="left")
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.tight_layout()
    return fig


def composition_bar(counts: dict, title: str, ax=None):
    """Horizontal bars of a label column's counts, clean first."""
    ax = ax or plt.subplots(figsize=(6, 0.35 * len(counts) + 1))[1]
    labels = sorted(counts, key=lambda k: (k != "clean", -counts[k], k))
    sns.barplot(x=[counts[k] for k in labels], y=labels, ax=ax, color=sns.color_palette()[0])
    ax.set_title(title)
    ax.set_xlabel("samples")
    return ax


def loss_curve(history: list, title: str = "training loss", ax=None):
    """Loss against optimizer step, from `train.sft`'s history rows."""
    ax = ax or plt.subplots(figsize=(6, 3.4))[1]
    ax.plot([r["step"] for r in history], [r["loss"] for r in history], marker=".")
    ax.set_xlabel("step"), ax.set_ylabel("loss"), ax.set_title(title)
    return ax


def by_kind_order(labels) -> list:
    """Noise kinds in reading order: clean, duplicate, then the toxic kinds by name."""
    return sorted(set(labels), key=lambda k: (k != "clean", k != "duplicate", k))


def score_hist(scores, labels, title: str, ax=None, xlabel: str = "utility"):
    """One distribution per label value (e.g. noise kind), on a shared axis, with 0 marked."""
    import numpy as np
    import pandas as pd
    frame = pd.DataFrame({"score": np.asarray(scores, dtype=float), "kind": list(labels)})
    frame = frame[np.isfinite(frame["score"])]
    ax = ax or plt.subplots(figsize=(8, 0.45 * frame["kind"].nunique() + 1.5))[1]
    sns.boxplot(frame, x="score", y="kind", order=by_kind_order(frame["kind"]), ax=ax, fliersize=1.5,
                color=sns.color_palette()[0])
    ax.axvline(0, color="firebrick", lw=1, ls="--")
    ax.set_xlabel(xlabel), ax.set_ylabel(""), ax.set_title(title)
    return ax


def roc_by_kind(scores, labels, title: str, ax=None):
    """ROC of each toxic kind against the clean samples (higher score = keep), AUROC in the legend."""
    import numpy as np
    from sklearn.metrics import roc_auc_score, roc_curve

    from ost.data.pool import TOXIC
    scores, labels = np.asarray(scores, dtype=float), np.asarray(labels)
    ax = ax or plt.subplots(figsize=(5, 5))[1]
    clean = labels == "clean"
    for kind in by_kind_order(k for k in labels if k in TOXIC):
        mask = (clean | (labels == kind)) & np.isfinite(scores)
        fpr, tpr, _ = roc_curve(clean[mask], scores[mask])
        ax.plot(fpr, tpr, label=f"{kind} ({roc_auc_score(clean[mask], scores[mask]):.2f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls=":")
    ax.set_xlabel("toxic kept (false positive rate)"), ax.set_ylabel("clean kept (true positive rate)")
    ax.set_title(title), ax.legend(fontsize=8, title="kind (AUROC)", title_fontsize=8)
    return ax


def utility_vs_norm(utility, norms, labels, title: str, ax=None, xlabel: str = "gradient norm ‖g_i‖"):
    """Utility against the sample's gradient norm (or another positive quantity, e.g. the proxy's loss; log x),
    one colour per noise kind: does the score follow how large the gradient is rather than where it points?
    Clean samples are light grey and exact duplicates (not toxic) a darker grey; each toxic kind has a colour."""
    import itertools

    import numpy as np
    utility, norms, labels = np.asarray(utility, dtype=float), np.asarray(norms, dtype=float), np.asarray(labels)
    ax = ax or plt.subplots(figsize=(6.4, 4.6))[1]
    palette = sns.color_palette("tab10", 10)
    toxic = itertools.cycle([c for i, c in enumerate(palette) if i != 7] + ["black"])   # tab10's 8th is grey
    for k in by_kind_order(labels):
        m = labels == k
        if is_toxic(k):
            ax.scatter(norms[m], utility[m], s=10, alpha=0.8, color=next(toxic), label=k)
        else:
            ax.scatter(norms[m], utility[m], s=6, alpha=0.35, color="silver" if k == "clean" else "dimgrey",
                       label="duplicate (not toxic)" if k == "duplicate" else k)
    ax.set_xscale("log"), ax.axhline(0, color="firebrick", lw=1, ls="--")
    ax.set_xlabel(xlabel), ax.set_ylabel("utility"), ax.set_title(title)
    ax.legend(fontsize=7, markerscale=1.5, ncol=2)
    return ax


def accuracy_bars(table, protocol: str, ax=None, reference: float | None = None):
    """Mean test accuracy ± 95 % CI per method and fraction for one protocol (`analysis.paper_table`)."""
    import numpy as np
    t = table[table["protocol"] == protocol].copy()
    t["label"] = t["method"] + " @" + t["fraction"].map("{:g}".format)
    t = t.sort_values(["fraction", "accuracy"])
    ax = ax or plt.subplots(figsize=(6.5, 0.32 * len(t) + 1.2))[1]
    colours = [sns.color_palette()[1] if m.startswith("ost") else sns.color_palette()[0] for m in t["method"]]
    ax.barh(t["label"], 100 * t["accuracy"], xerr=100 * np.nan_to_num(t["ci95"]), color=colours, capsize=2)
    if reference is not None:
        ax.axvline(100 * reference, color="black", ls="--", lw=1, label="Full-SFT")
        ax.legend(fontsize=8, loc="lower right")
    ax.set_xlabel("test exact match, % (mean ± 95 % CI over seeds)")
    ax.set_title(protocol.replace("_", " "))
    return ax


def pareto(table, ax=None):
    """Accuracy against total cost (scoring + training seconds): up and to the left is better."""
    ax = ax or plt.subplots(figsize=(6.5, 4.6))[1]
    colours = dict(zip(sorted(set(table["method"])), sns.color_palette("tab20", 20)))
    for method, group in table.groupby("method"):
        ax.scatter(group["score_seconds"] + group["train_seconds"], 100 * group["accuracy"], label=method,
                   color=colours[method], marker="*" if method.startswith("ost") else "o",
                   s=90 if method.startswith("ost") else 40)
        for r in group.itertuples():
            ax.annotate(f"{r.fraction:g} {'fc' if r.protocol == 'fixed_compute' else 'se'}",
                        (r.score_seconds + r.train_seconds, 100 * r.accuracy), fontsize=6,
                        xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log"), ax.set_xlabel("total seconds: scoring + one SFT run (log)")
    ax.set_ylabel("test exact match, %"), ax.set_title("accuracy against cost (se: same epochs, fc: fixed compute)")
    ax.legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.01, 1))
    return ax


def auroc_heatmap(auroc: dict, ax=None):
    """Toxic-detection AUROC, scorers × noise kinds (0.5 = blind)."""
    import pandas as pd
    frame = pd.DataFrame(auroc).T
    frame = frame[["all"] + sorted(c for c in frame.columns if c != "all")]
    ax = ax or plt.subplots(figsize=(0.8 * frame.shape[1] + 2, 0.4 * frame.shape[0] + 1.2))[1]
    sns.heatmap(frame, annot=True, fmt=".2f", vmin=0, vmax=1, cmap="RdBu", center=0.5, ax=ax, cbar=False)
    ax.set_title("toxic detection AUROC (higher score = clean)")
    return ax


def significant(table, digits: int = 3):
    """A table (DataFrame or Series) to display, its floats written with `digits` significant figures: a utility
    of 0.000446 keeps its digits where `.round(3)` would show 0. The float columns become text: display only."""
    import pandas as pd

    def column(c):
        return c.map(lambda v: f"{v:.{digits}g}") if pd.api.types.is_float_dtype(c) else c
    return column(table) if isinstance(table, pd.Series) else table.apply(column)
