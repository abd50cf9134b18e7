"""Runs and their files: the lowest layer, which imports nothing else of ost.

`paths` anchors every folder at the repository root; `artifacts` says where each artifact of a run
lives and which notebook writes it; `files` writes atomically; `notebooks` checks and runs the numbered
notebooks with papermill; `workers` runs jobs in processes that die with their parent. The names below
are the ones the rest of the package uses (`runs.need(run, "scores.parquet")`).
"""
from ost.runs.artifacts import HEAVY, MADE_BY, artifact, need, read_json, results_dir, work_dir, write_json
from ost.runs.files import read_meta, replace_text, write_parquet
from ost.runs.notebooks import check_config, execute, notebook_parameters
from ost.runs.workers import as_done, worker_pool

__all__ = ["HEAVY", "MADE_BY", "artifact", "as_done", "check_config", "execute", "need", "notebook_parameters",
           "read_json", "read_meta", "replace_text", "results_dir", "work_dir", "worker_pool", "write_json",
           "write_parquet"]
