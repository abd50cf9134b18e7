import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from ost import runs
from ost.runs import notebooks, paths


def test_every_notebook_has_flat_commented_parameters():
    notebooks = sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    assert len(notebooks) >= 8
    for nb in notebooks:
        params = runs.notebook_parameters(nb)
        assert params.get("run") == "quick", nb.name          # quick runs never touch results/main
    assert runs.notebook_parameters(notebooks[0])["n_groups"] == 80


def test_the_main_config_is_accepted_and_mistakes_are_not():
    runs.check_config(yaml.safe_load((paths.CONFIGS / "main.yaml").read_text()))
    with pytest.raises(ValueError, match="'n_group' is a parameter of no notebook"):
        runs.check_config({"n_group": 300})
    with pytest.raises(ValueError, match="'proxy_sizes': 06_check_proxy_transfer expects list"):
        runs.check_config({"proxy_sizes": '["proxy"]'})
    runs.check_config({"sft_lr": 1, "warmup_epochs": 2})                 # an int where a float is expected


def test_a_missing_artifact_names_the_notebook_that_makes_it():
    with pytest.raises(FileNotFoundError, match=r"run notebooks/02_score_utility.ipynb with run='no-such-run'"):
        runs.need("no-such-run", "scores.parquet")
    with pytest.raises(KeyError, match="unknown artifact"):
        runs.artifact("no-such-run", "nope.json")
    assert not (paths.RESULTS / "no-such-run").exists()                   # asking never creates folders


def _tiny_notebook(path, params="steps = 2          # how many\nname = \"x\"        # a label",
                   body="assert steps > 0\nresult = name * steps\nprint(result)"):
    import nbformat
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell(params)
    params.metadata["tags"] = ["parameters"]
    nb.cells = [params, nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, str(path))
    return path


def test_execute_refuses_unknown_or_mistyped_parameters_and_runs_good_ones(tmp_path):
    nb = _tiny_notebook(tmp_path / "00_tiny.ipynb")
    with pytest.raises(ValueError, match=r"no parameter\(s\) \['stpes'\]"):
        runs.execute(nb, tmp_path / "out.ipynb", parameters={"stpes": 3})
    with pytest.raises(ValueError, match="expects int"):
        runs.execute(nb, tmp_path / "out.ipynb", parameters={"steps": "three"})
    assert not (tmp_path / "out.ipynb").exists()                 # refused before anything ran
    done = runs.execute(nb, tmp_path / "out.ipynb", parameters={"steps": 3, "name": "ab"}, progress=False)
    assert "ababab" in done.cells[-1].outputs[0]["text"]


def test_write_parquet_keeps_index_and_settings_and_same_bytes(tmp_path):
    import pandas as pd
    frame = pd.DataFrame({"ost@0.2": [True, False]}, index=pd.Index(["a", "b"], name="id"))
    one = runs.write_parquet(frame, tmp_path / "one.parquet", {"seed": 3}, index=True)
    two = runs.write_parquet(frame, tmp_path / "two.parquet", {"seed": 3}, index=True)
    assert one.read_bytes() == two.read_bytes()
    assert runs.read_meta(one) == {"seed": 3}
    pd.testing.assert_frame_equal(pd.read_parquet(one), frame)
    frame.to_parquet(tmp_path / "plain.parquet")
    assert runs.read_meta(tmp_path / "plain.parquet") == {}


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_pool_workers_exit_when_their_parent_is_killed():
    """A killed notebook must not leave its SFT workers training (they once ran on for minutes)."""
    script = ("import os, time\nfrom ost import runs\npool = runs.worker_pool(1)\n"
              "print(pool.submit(os.getpid).result(), flush=True)\ntime.sleep(120)\n")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=paths.ROOT)
    worker = int(parent.stdout.readline())
    assert _alive(worker)
    parent.kill()
    parent.wait()
    deadline = time.monotonic() + 30
    while _alive(worker) and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not _alive(worker)


def test_execute_on_the_command_line_takes_an_exponent_float(tmp_path):
    import nbformat
    nb = _tiny_notebook(tmp_path / "tiny.ipynb", "lr = 2.0e-3        # a learning rate\nsteps = 2          # how many",
                        "assert isinstance(lr, float)\nprint(lr * steps)")
    notebooks.main(["execute", str(nb), str(tmp_path / "out.ipynb"), "-p", "lr", "1e-3", "-p", "steps", "3"])
    out = nbformat.read(str(tmp_path / "out.ipynb"), as_version=4)
    assert out.cells[-1].outputs[0]["text"].strip() == "0.003"
