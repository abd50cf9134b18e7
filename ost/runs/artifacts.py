"""Where one run's artifacts live, and which notebook makes each of them.

A run (`run="quick"`, `run="main"`) is one pass of the numbered notebooks. Small files that a reader
looks at (JSON reports, score tables, figures) go to `results/<run>/`; heavy or working ones (the warmed
proxy, part files, the SFT progress log) to `data/runs/<run>/`, which is never committed. A notebook that
needs an artifact its upstream notebook has not written yet says which notebook to run first, with which
`run`.
"""
import json
from pathlib import Path

from ost.runs import paths

MADE_BY = {                       # artifact → the notebook that writes it
    "pool.json": "00_make_pool",
    "warmup.json": "01_warm_up_proxy",
    "proxy": "01_warm_up_proxy",
    "adam_state.pt": "01_warm_up_proxy",
    "scores.parquet": "02_score_utility",
    "scoring.json": "02_score_utility",
    "score_parts": "02_score_utility",
    "shift.parquet": "02_score_utility",
    "calibration.parquet": "02_score_utility",
    "subsets.parquet": "03_select_subsets",
    "baselines.parquet": "04_score_baselines",
    "baselines.json": "04_score_baselines",
    "sft_runs.jsonl": "05_train_targets",
    "sft_progress.jsonl": "05_train_targets",
    "transfer.json": "06_check_proxy_transfer",
    "summary.json": "07_analyze_results",
}
HEAVY = {"proxy", "adam_state.pt", "score_parts", "sft_progress.jsonl"}


def results_dir(run: str) -> Path:
    path = paths.RESULTS / run
    path.mkdir(parents=True, exist_ok=True)
    return path


def work_dir(run: str) -> Path:
    path = paths.DATA / "runs" / run
    path.mkdir(parents=True, exist_ok=True)
    return path


def _path(run: str, name: str) -> Path:
    if name not in MADE_BY:
        raise KeyError(f"unknown artifact {name!r}; known: {sorted(MADE_BY)}")
    return (paths.DATA / "runs" if name in HEAVY else paths.RESULTS) / run / name


def artifact(run: str, name: str) -> Path:
    """Path of a run's artifact, to write it (its folder is created)."""
    path = _path(run, name)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def need(run: str, name: str) -> Path:
    """Path of an artifact that must exist; if it does not, the error names the notebook that makes it."""
    path = _path(run, name)
    if not path.exists():
        notebook = MADE_BY[name]
        raise FileNotFoundError(
            f"{path.relative_to(paths.ROOT)} is missing: run notebooks/{notebook}.ipynb with run={run!r} first "
            f"(e.g. papermill notebooks/{notebook}.ipynb results/{run}/{notebook}.ipynb -p run {run})")
    return path


def read_json(run: str, name: str) -> dict:
    return json.loads(need(run, name).read_text())


def write_json(run: str, name: str, payload: dict) -> Path:
    path = artifact(run, name)
    path.write_text(json.dumps(payload, indent=1, sort_keys=False) + "\n")
    return path
