"""Stage settings: defined once, typed, and the names the notebooks and configs/main.yaml use."""
import json

import pytest
import yaml

from ost.data import schema
from ost.method.step import DEFAULT, Step
from ost.runs import paths
from ost.runs.notebooks import notebook_parameters
from ost.runs.settings import SFT, Pool, Selection, Warmup


def test_from_params_picks_its_stage_and_types_the_values():
    params = {"sft_epochs": 6, "sft_seeds": [0, 1], "warmup_epochs": 3, "n_groups": 10, "other": "x"}
    sft = SFT.from_params(params)
    assert sft.sft_epochs == 6.0 and isinstance(sft.sft_epochs, float) and sft.sft_seeds == (0, 1)
    assert sft.target == "target" and sft.sft_lr == SFT().sft_lr           # unset fields keep their default
    assert Warmup.from_params(params).warmup_epochs == 3.0
    assert Pool.from_params(params).n_groups == 10
    with pytest.raises(TypeError, match="sft_lr is a number"):
        SFT.from_params({"sft_lr": "1e-3"})
    with pytest.raises(TypeError, match="n_groups is a whole number"):
        Pool.from_params({"n_groups": 2.5})
    with pytest.raises(TypeError, match="sft_seeds is a list"):
        SFT.from_params({"sft_seeds": "0"})
    assert SFT().as_dict()["sft_seeds"] == [0, 1, 2]                      # JSON-ready


def test_pool_settings_are_the_schema_defaults_and_keep_the_cache_folder():
    assert Pool().pool_params() == schema.POOL_DEFAULTS
    params = Pool(pool_seed=3).pool_params()
    assert params["seed"] == 3 and "pool_seed" not in params
    assert set(params) == set(schema.POOL_DEFAULTS)


def test_main_config_names_the_committed_pool_and_sets_only_known_types():
    config = yaml.safe_load((paths.ROOT / "configs" / "main.yaml").read_text())
    pool_params = Pool.from_params(config).pool_params()
    committed = json.loads((paths.RESULTS / "main" / "pool.json").read_text())["folder"]
    assert str(schema.pool_dir(pool_params).relative_to(paths.ROOT)) == committed
    for stage in (Pool, Warmup, Step, SFT):
        stage.from_params(config)                                           # every value has its field's type
    assert Step.from_params(config) == DEFAULT                               # the config names the default step
    assert "seed" not in config and "seeds" not in config                   # each seed says its stage


@pytest.mark.parametrize("notebook, stage", [("00_make_pool", Pool), ("01_warm_up_proxy", Warmup),
                                             ("02_score_utility", Step), ("03_select_subsets", Selection),
                                             ("05_train_targets", SFT)])
def test_stage_notebooks_take_every_field_under_its_own_name(notebook, stage):
    params = notebook_parameters(paths.ROOT / "notebooks" / f"{notebook}.ipynb")
    missing = [name for name in stage.names() if name not in params]
    assert not missing, f"{notebook} lacks {missing}"
    stage.from_params(params)                                               # and with the field's type



def test_the_default_selector_is_named_once():
    from ost.method import coverage
    assert coverage.DEFAULT == Selection().selector and Selection().selector in coverage.RULES
