"""ost.Step: one typed step, and one default everywhere it is named."""
import ast
import json

import pytest
import torch
from torch import nn

import ost
from ost.method import one_step, score
from ost.method.step import DEFAULT, PAPER, Step
from ost.runs.paths import NOTEBOOKS


def test_bad_settings_are_refused_by_name():
    with pytest.raises(ValueError, match="method"):
        Step(method="second_order")
    with pytest.raises(ValueError, match="optimizer"):
        Step(optimizer="lion")
    with pytest.raises(ValueError, match="lr"):
        Step(lr=0.0)
    with pytest.raises(TypeError, match="unknown Step setting.*'step_lr'"):
        Step.from_dict({"step_lr": 1e-4})
    assert Step.from_dict(DEFAULT.as_dict()) == DEFAULT
    with pytest.raises(TypeError, match="Step.from_dict"):     # the object travels down, a dict is not re-read
        score.score_pool(None, None, None, None, None, "unused.parquet", step=DEFAULT.as_dict())


def test_adam_state_follows_continue_warmup():
    state = {"state": {}, "param_groups": []}
    assert Step().adam_state(state) is state
    assert Step(continue_warmup=False).adam_state(state) is None
    assert PAPER.adam_state(state) is None and PAPER.optimizer == "sgd" and not PAPER.normalize
    with pytest.raises(ValueError, match="no state was given"):
        Step().adam_state(None)


def test_utilities_of_a_step_are_one_step_utility_with_its_settings():
    torch.manual_seed(0)
    model = nn.Linear(3, 1).double()
    x, y = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, dtype=torch.float64)
    loss = lambda m, b: (m(b[0]).squeeze(-1) - b[1]) ** 2
    step = Step(optimizer="sgd", lr=0.1, normalize=True, unit_val=False)
    want = ost.one_step_utility(model, [(x, y)], [(x, y)], loss, lr=0.1, normalize=True)
    torch.testing.assert_close(one_step.utilities(model, [(x, y)], [(x, y)], loss, step).utility, want)


def _notebook_parameters(name):
    nb = json.loads((NOTEBOOKS / name).read_text())
    cell = next(c for c in nb["cells"] if "parameters" in c["metadata"].get("tags", []))
    return {t.id: ast.literal_eval(n.value) for n in ast.parse("".join(cell["source"])).body
            for t in n.targets}


def test_the_default_step_is_the_same_in_the_notebook_and_the_cli():
    p = _notebook_parameters("02_score_utility.ipynb")
    assert Step.from_params(p) == DEFAULT and set(Step.names()) <= set(p)      # every field, under its step_ name
    d = vars(score.parser().parse_args(["--model", "m", "--pool", "p", "--out", "o"]))
    assert Step(method=d["method"], optimizer=d["optimizer"], lr=d["lr"], normalize=d["normalize"],
                unit_val=d["unit_val"], continue_warmup=not d["fresh_adam"]) == DEFAULT


def test_the_package_exports_what_a_user_needs():
    for name in ("Step", "one_step_utility", "score_pool", "score_samples", "top_fraction", "toxic_flags", "Flag",
                 "flag_toxic", "split_calibration", "calibration_reference"):
        assert callable(getattr(ost, name))
    with pytest.raises(AttributeError):
        ost.not_a_name


def test_step_keys_are_typed_and_a_config_reads_them():
    got = Step.from_params({"step_lr": 3, "step_normalize": False, "lr": 9.0})     # "lr" belongs to no step
    assert got == DEFAULT.with_(lr=3.0, normalize=False)
    assert Step.from_params(DEFAULT.as_params()) == DEFAULT
    with pytest.raises(TypeError, match="normalize is a bool"):
        Step.from_params({"step_normalize": "yes"})
    with pytest.raises(TypeError, match="lr is a number"):
        Step.from_params({"step_lr": "1e-4"})


def test_the_formulas_loose_defaults_are_the_papers_step():
    import inspect

    from ost.method.one_step import one_step_utility
    defaults = {k: v.default for k, v in inspect.signature(one_step_utility).parameters.items()}
    assert {k: defaults[k] for k in ("method", "optimizer", "normalize", "unit_val")} == {
        k: getattr(PAPER, k) for k in ("method", "optimizer", "normalize", "unit_val")}
