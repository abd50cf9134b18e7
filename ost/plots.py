"""One look for every figure, and the pictures several notebooks draw."""
from pathlib import Path

import matplotlib

if matplotlib.get_backend().lower() not in ("agg", "module://matplotlib_inline.backend_inline"):
    matplotlib.use("Agg")
import matplotlib.pyplot as plt
import seaborn as sns

sns.set_theme(context="notebook", style="whitegrid", palette="colorblind")


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
        colour = "black" if sample["noise"] == "clean" else "firebrick"
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
