"""Figures mark toxic samples by `ost.data.pool.TOXIC`: an exact duplicate is wasteful, not toxic."""
import numpy as np
import pandas as pd

from ost.data.pool import TOXIC
from ost.report import plots


def test_only_the_toxic_kinds_take_the_toxic_colour():
    assert plots.toxic_colour("clean") == plots.CLEAN
    assert plots.toxic_colour("duplicate") == plots.DUPLICATE != plots.TOXIC
    assert all(plots.toxic_colour(k) == plots.TOXIC for k in TOXIC)
    assert not plots.is_toxic("duplicate") and not plots.is_toxic("clean")


def test_scatter_by_toxic_keeps_duplicates_apart_from_the_toxic_points():
    noise = ["clean", "duplicate", "carry_dropped", "clean", "duplicate"]
    ax = plots.scatter_by_toxic(np.arange(5), np.arange(5), noise)
    groups = {c.get_label(): len(c.get_offsets()) for c in ax.collections}
    assert groups == {"clean": 2, "duplicate (not toxic)": 2, "toxic": 1}
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["clean", "duplicate (not toxic)", "toxic"]
    plots.plt.close(ax.figure)


def test_utility_vs_norm_draws_duplicates_neutral():
    noise = np.array(["clean", "duplicate", "wrong_image", "garbled"] * 3)
    ax = plots.utility_vs_norm(np.linspace(-1, 1, 12), np.linspace(1, 2, 12), noise, "t")
    colours = {c.get_label(): tuple(c.get_facecolor()[0][:3]) for c in ax.collections}
    grey = {tuple(plots.matplotlib.colors.to_rgb(c)) for c in ("silver", "dimgrey")}
    assert colours["duplicate (not toxic)"] in grey and colours["clean"] in grey
    assert colours["wrong_image"] not in grey and colours["garbled"] not in grey
    plots.plt.close(ax.figure)


def test_significant_keeps_small_values_readable():
    frame = pd.DataFrame({"utility": [0.000446, -0.026068, 2.603776], "rank": [1, 2, 3]})
    shown = plots.significant(frame)
    assert shown["utility"].tolist() == ["0.000446", "-0.0261", "2.6"] and shown["rank"].tolist() == [1, 2, 3]
    assert plots.significant(frame["utility"], 2).tolist() == ["0.00045", "-0.026", "2.6"]
