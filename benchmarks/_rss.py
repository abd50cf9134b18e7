"""Score one pool with `ost.method.score.score_pool` in a process of its own and report its peak memory.

`bench_utility.py` runs this once per pool size, so pools of 10k and 100k samples are compared on the
same footing: each child's own peak, nothing of the parent's. Prints one JSON line on stdout.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")   # see bench_utility.py: spinning threads on shared cores

import argparse
import json
import resource
import sys
import tempfile
import threading
import time

import torch

from ost.data import schema
from ost.method import score
from ost.method.step import Step
from ost.models import presets


def status_mb(key: str) -> float | None:
    """A memory line of /proc/self/status in MB (None off Linux): VmHWM peak, VmRSS, RssAnon, RssFile."""
    if not os.path.exists("/proc/self/status"):
        return None
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(key + ":")) / 1024


def peak_mb() -> float:
    """Peak resident memory of this process (VmHWM), in MB.

    Not ru_maxrss on Linux: it is carried across exec, so a child's ru_maxrss starts at its parent's
    RSS at fork time (measured: 811 MB reported by a child whose own peak was 11 MB).
    """
    hwm = status_mb("VmHWM")
    if hwm is not None:
        return hwm
    r = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss        # elsewhere: may include the parent's
    return r / 2**20 if sys.platform == "darwin" else r / 1024     # bytes on macOS, KB on BSD


class AnonPeak(threading.Thread):
    """Largest RssAnon (heap and tensors, no file pages) seen every 0.1 s: what must stay flat in N."""

    def __init__(self):
        super().__init__(daemon=True)
        self.peak, self.running = status_mb("RssAnon") or 0.0, True

    def run(self):
        while self.running:
            self.peak = max(self.peak, status_mb("RssAnon") or 0.0)
            time.sleep(0.1)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="the warmed proxy's folder")
    parser.add_argument("--pool", required=True, help="a pool folder written by ost.data.schema.make_pool")
    parser.add_argument("--n", type=int, default=None, help="score the first n samples (default: all)")
    parser.add_argument("--adam-state", default=None, help="torch.save'd warm-up Adam state (a step continuing it)")
    parser.add_argument("--step", default="{}", help="the ost.Step as JSON (default: ost.method.step.DEFAULT)")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    model, tok, proc = presets.load(args.model)
    dd = schema.load_pool(args.pool)
    pool = dd["pool"].select(range(min(args.n or len(dd["pool"]), len(dd["pool"]))))
    state = torch.load(args.adam_state) if args.adam_state else None
    before = status_mb("VmRSS")
    sampler = AnonPeak()
    sampler.start()
    with tempfile.TemporaryDirectory() as tmp:      # score_pool freezes the vision tower, as the warmup did
        start = time.perf_counter()
        frame = score.score_pool(model, tok, proc, pool, dd["validation"], os.path.join(tmp, "s.parquet"),
                                 step=Step.from_dict(json.loads(args.step)), warm_state=state)
        seconds = time.perf_counter() - start
    sampler.running = False
    # peak RSS also counts the pool's memory-mapped Arrow pages scoring has read (RssFile, ~2 KB per
    # sample here): page cache the kernel can drop, not memory the process holds
    print(json.dumps({"n": len(frame), "peak_rss_mb": peak_mb(), "peak_anon_mb": sampler.peak,
                      "rss_before_scoring_mb": before, "rss_file_end_mb": status_mb("RssFile"),
                      "seconds": seconds, "ok": int((frame["status"] == "ok").sum())}), flush=True)


if __name__ == "__main__":
    main()
