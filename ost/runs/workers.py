"""Worker processes that die with their parent, and a loop that runs jobs in them or in this process."""
import multiprocessing
import os
import threading
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from tqdm.auto import tqdm


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
