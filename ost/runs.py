"""Where one run's artifacts live, and which notebook makes each of them.

A run (`run="quick"`, `run="main"`) is one pass of the numbered notebooks. Small files that a reader
looks at (JSON reports, score tables, figures) go to `results/<run>/`; heavy or working ones (the warmed
proxy, part files, the SFT progress log) to `data/runs/<run>/`, which is never committed. A notebook that
needs an artifact its upstream notebook has not written yet says which notebook to run first, with which
`run`.
"""
import json
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path

from tqdm.auto import tqdm

from . import data, paths

MADE_BY = {                       # artifact → the notebook that writes it
    "pool.json": "00_make_pool",
    "warmup.json": "01_warm_up_proxy",
    "proxy": "01_warm_up_proxy",
    "adam_state.pt": "01_warm_up_proxy",
    "scores.parquet": "02_score_utility",
    "scoring.json": "02_score_utility",
    "score_parts": "02_score_utility",
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


def replace_text(path, text: str) -> Path:
    """Write `text` to `path` by atomic rename: a reader (another process, a rerun after a crash) sees the
    old file or the new one, never half of one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path


def write_parquet(frame, path, meta: dict, index: bool = False) -> Path:
    """Atomic parquet write with the settings and seed that made it in the file's own metadata (key
    `ost`), and no timestamps: the same inputs give the same bytes. `read_meta` reads them back."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    path = Path(path)
    table = pa.Table.from_pandas(frame, preserve_index=index)
    table = table.replace_schema_metadata({**table.schema.metadata,
                                           b"ost": json.dumps(meta, sort_keys=True).encode()})
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    pq.write_table(table, tmp)
    os.replace(tmp, path)
    return path


def read_meta(path) -> dict:
    """The `ost` metadata `write_parquet` stored in a parquet file ({} when there is none)."""
    import pyarrow.parquet as pq
    raw = (pq.read_schema(path).metadata or {}).get(b"ost")
    return json.loads(raw) if raw else {}


def load_pool(run: str):
    """The pool notebook 00 made for this run (its folder is recorded in pool.json)."""
    return data.load_pool(paths.ROOT / read_json(run, "pool.json")["folder"])


def notebook_parameters(path) -> dict:
    """{name: default} of a notebook's `parameters` cell (flat literals, read without running it)."""
    import ast
    import nbformat
    nb = nbformat.read(str(path), as_version=4)
    cells = [c for c in nb.cells if "parameters" in c.metadata.get("tags", [])]
    if not cells:
        raise ValueError(f"{path} has no cell tagged 'parameters'")
    out = {}
    for node in ast.parse(cells[0].source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            out[node.targets[0].id] = ast.literal_eval(node.value)
    return out


def check_config(config: dict, notebooks=None) -> None:
    """Refuse a config key no notebook has (a typo would otherwise be ignored) or a value whose type
    differs from the notebooks' default (an int where a float is expected is fine)."""
    notebooks = notebooks or sorted(paths.NOTEBOOKS.glob("[0-9][0-9]_*.ipynb"))
    known = {}
    for nb in notebooks:
        for name, default in notebook_parameters(nb).items():
            known.setdefault(name, []).append((Path(nb).stem, default))
    problems = []
    for key, value in config.items():
        if key not in known:
            problems.append(f"{key!r} is a parameter of no notebook")
            continue
        for notebook, default in known[key]:
            ok = isinstance(value, type(default)) or (isinstance(default, float) and isinstance(value, int))
            if not ok:
                problems.append(f"{key!r}: {notebook} expects {type(default).__name__}, got {value!r}")
    if problems:
        raise ValueError("config rejected: " + "; ".join(problems))


def execute(notebook, output, config=None, parameters=None, progress=True):
    """Run one notebook with papermill after checking every parameter it is given: a `-f` config may
    hold keys of other notebooks (it is shared by the chain; only this notebook's are passed on), but a
    key no notebook has, a wrong type, or an explicit parameter this notebook does not have is refused
    (papermill itself only logs "Passed unknown parameter" and runs on)."""
    import papermill
    import yaml
    notebook = Path(notebook)
    shared = yaml.safe_load(Path(config).read_text()) or {} if config else {}
    check_config(shared)
    own = notebook_parameters(notebook)
    explicit = dict(parameters or {})
    unknown = sorted(set(explicit) - set(own))
    if unknown:
        raise ValueError(f"{notebook.name} has no parameter(s) {unknown}; its parameters: {sorted(own)}")
    params = {**{k: v for k, v in shared.items() if k in own}, **explicit}
    check_config(params, notebooks=[notebook])
    return papermill.execute_notebook(str(notebook), str(output), parameters=params, kernel_name="python3",
                                      progress_bar=progress)


def worker_pool(n: int) -> ProcessPoolExecutor:
    """`n` spawned worker processes that exit when the process that made them dies: a killed notebook or
    `make` otherwise leaves its workers training, reparented to init, slowing whatever runs next."""
    return ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"), initializer=_exit_with_parent,
                               initargs=(os.getpid(),))


def _exit_with_parent(parent: int):
    def watch():
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(1)
    threading.Thread(target=watch, daemon=True).start()


def as_done(fn, jobs: dict, workers: int = 1, desc: str | None = None, progress: bool = True):
    """Yield (key, fn(*args, **kw)) for each job {key: (args, kw)} as it finishes: one after another in
    this process when `workers` <= 1, else `workers` at a time in `worker_pool` processes."""
    bar = tqdm(total=len(jobs), desc=desc, disable=not progress)
    try:
        if workers <= 1:
            for key, (args, kw) in jobs.items():
                yield key, fn(*args, **kw)
                bar.update()
        else:
            with worker_pool(workers) as ex:
                futures = {ex.submit(fn, *args, **kw): key for key, (args, kw) in jobs.items()}
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
                    bar.update()
    finally:
        bar.close()



def main(argv=None):
    import argparse
    import yaml
    parser = argparse.ArgumentParser(description="check a config against the notebooks' parameters, or run "
                                                 "one notebook with checked parameters")
    sub = parser.add_subparsers(dest="command", required=True)
    check = sub.add_parser("check", help="check a configs/*.yaml against every notebook's parameters")
    check.add_argument("config")
    run = sub.add_parser("execute", help="papermill one notebook; unknown parameters are refused")
    run.add_argument("notebook")
    run.add_argument("output")
    run.add_argument("-f", "--config", help="a configs/*.yaml shared by the chain")
    run.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                     help="one parameter; VALUE is read as YAML (3 → int, 1e-3 → float, [0, 1] → list)")
    args = parser.parse_args(argv)
    if args.command == "check":
        config = yaml.safe_load(Path(args.config).read_text()) or {}
        check_config(config)
        print(f"{len(config)} keys, each a parameter of a notebook with a matching type")
    else:
        params = {name: yaml.safe_load(value) for name, value in args.parameter}
        execute(args.notebook, args.output, args.config, params)


if __name__ == "__main__":
    main()

