"""Worker processes that die with their parent, a loop that runs jobs in them or in this process, and the
progress bars of every long loop: drawn on the command line, quiet inside a notebook.

Inside a Jupyter kernel a progress bar is a widget, and the executed copy of a notebook keeps it as a "0 %" bar
wherever it is read outside JupyterLab. So `show_progress` answers no there whatever `progress` says, and
importing this module (every `import ost.runs` does) in a kernel also quiets the bars of `datasets`.
"""
import multiprocessing
import os
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm


def in_notebook() -> bool:
    """True inside a Jupyter kernel (JupyterLab, papermill), false on the command line and in worker processes."""
    ipython = sys.modules.get("IPython")          # never imported here: a kernel has it loaded already
    shell = ipython.get_ipython() if ipython is not None else None
    return shell is not None and "IPKernelApp" in getattr(shell, "config", {})


def show_progress(progress: bool = True) -> bool:
    """Whether to draw a progress bar: `progress` on the command line, never inside a notebook."""
    return bool(progress) and not in_notebook()


def bar(iterable=None, *, progress: bool = True, **kw):
    """`tqdm(iterable, **kw)`, drawn only when `show_progress(progress)`."""
    return tqdm(iterable, disable=not show_progress(progress), **kw)


def quiet_in_notebook() -> None:
    """In a Jupyter kernel, switch off the progress bars of `datasets` (save, map, filter, cast). The command
    line keeps them."""
    if not in_notebook() or "HF_DATASETS_DISABLE_PROGRESS_BARS" in os.environ:     # a user's setting stands
        return
    os.environ["HF_DATASETS_DISABLE_PROGRESS_BARS"] = "1"     # read when datasets is imported
    if "datasets" in sys.modules:
        sys.modules["datasets"].disable_progress_bars()


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
    this process when `workers` <= 1, else `workers` at a time in `worker_pool` processes. The bar counts the
    finished jobs (`show_progress`: not inside a notebook)."""
    done = bar(total=len(jobs), desc=desc, progress=progress)
    try:
        if workers <= 1:
            for key, (args, kw) in jobs.items():
                yield key, fn(*args, **kw)
                done.update()
        else:
            with worker_pool(workers) as ex:
                futures = {ex.submit(fn, *args, **kw): key for key, (args, kw) in jobs.items()}
                for fut in as_completed(futures):
                    yield futures[fut], fut.result()
                    done.update()
    finally:
        done.close()


quiet_in_notebook()
