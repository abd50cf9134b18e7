"""The command line's `-p NAME VALUE`, the names of the notebooks' seeds, and progress bars inside a notebook."""
import sys
import types

import pytest

from ost.models import train
from ost.runs import notebooks, paths, workers


@pytest.mark.parametrize("text, value", [
    ("1e-3", 1e-3), ("2e-5", 2e-5), ("2E5", 2e5), ("-1.5e-3", -1.5e-3), ("2.0e-3", 2e-3), ("3", 3), ("-1.5", -1.5),
    ("0.5", 0.5), ("true", True), ("False", False), ("[0, 1]", [0, 1]), ("[1e-3, 2e-5]", [1e-3, 2e-5]),
    ("[proxy, target]", ["proxy", "target"]), ("proxy", "proxy"), ("", ""), ("null", "null"), ("yes", "yes"),
    ("'3'", "3"), ("e5", "e5"), ("1e", "1e"), ("tests/fixtures/mine.json", "tests/fixtures/mine.json"),
])
def test_a_command_line_value_is_a_number_when_it_reads_as_one(text, value):
    got = notebooks.parameter_value(text)
    assert got == value and type(got) is type(value)


def test_every_seed_parameter_names_what_it_seeds():
    for nb in sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb")):
        bare = {"seed", "seeds"} & set(notebooks.notebook_parameters(nb))
        assert not bare, f"{nb.name}: name the seed by its stage (pool_seed, warmup_seed, run_seed …), not {bare}"


@pytest.fixture
def in_a_kernel(monkeypatch):
    shell = types.SimpleNamespace(config={"IPKernelApp": {}})
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: shell))


def test_progress_bars_show_on_the_command_line_only(in_a_kernel, monkeypatch):
    assert workers.in_notebook()
    assert not workers.show_progress(True) and not workers.show_progress(False)
    assert workers.bar(range(3), progress=True).disable
    assert [k for k, _ in workers.as_done(lambda x: x, {"a": ((1,), {})}, progress=True)] == ["a"]
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))   # a terminal
    assert not workers.in_notebook() and workers.show_progress(True) and not workers.show_progress(False)


def test_in_a_kernel_the_datasets_bars_are_quiet(in_a_kernel, monkeypatch):
    import datasets
    monkeypatch.delenv("HF_DATASETS_DISABLE_PROGRESS_BARS", raising=False)
    was = datasets.is_progress_bar_enabled()
    try:
        workers.quiet_in_notebook()
        assert not datasets.is_progress_bar_enabled()
    finally:
        if was:
            datasets.enable_progress_bars()


def test_trainer_shows_no_notebook_table_inside_a_kernel(in_a_kernel, monkeypatch):
    """`train.sft` with progress=True inside a kernel: Trainer gets disable_tqdm, so it adds neither its bar nor
    NotebookProgressCallback (its HTML table of the losses)."""
    seen = {}

    class Stop(Exception):
        pass

    def fake_trainer(*args, **kw):
        seen["disable_tqdm"] = kw["args"].disable_tqdm
        raise Stop

    monkeypatch.setattr(train, "AnswerLossTrainer", fake_trainer)
    monkeypatch.setattr(train, "EncodedDataset", lambda *a, **kw: types.SimpleNamespace(fill=lambda: None))
    monkeypatch.setattr(train, "Collator", lambda *a, **kw: types.SimpleNamespace(pad=None))
    monkeypatch.setattr(train, "_tower_to_cache", lambda *a: None)
    with pytest.raises(Stop):
        train.sft(None, None, None, [1], progress=True)
    assert seen["disable_tqdm"] is True
