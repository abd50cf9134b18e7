"""Score a whole pool with the one-step utility, in resumable parts.

Each part of `part_size` samples is written to `<out>.parts/part-NNNNN.parquet` by an atomic rename,
so an interrupted run leaves only finished parts; a rerun skips them and writes the same final
file. Under `torchrun --nproc_per_node N -m ost.score …` each process scores every N-th part (gloo on
CPU, nccl on GPU) and rank 0 merges them: the file is the same as one process writes. Every pool id appears in the output once, with a status (`ok`, or `nonfinite` when its loss or
utility is not a finite number: such samples are never selected, but they are not lost).

    python -m ost.score --model data/base/proxy-… --pool data/pools/synth-… --out results/x/scores.parquet
"""
import argparse
import hashlib
import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd
import torch
from tqdm.auto import tqdm

from . import collate, data, models, train, utility

COLUMNS = ("id", "utility", "loss", "status")


def _atomic_parquet(frame: pd.DataFrame, path: Path):
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


def _rank_world():
    """(rank, world size), joining the process group torchrun describes in the environment."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return 0, 1
    import torch.distributed as dist
    if not dist.is_initialized():
        dist.init_process_group("nccl" if torch.cuda.is_available() else "gloo")
    return dist.get_rank(), world


def _barrier(world):
    if world > 1:
        import torch.distributed as dist
        dist.barrier()


def _bytes(t: torch.Tensor) -> bytes:
    return t.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes()


def fingerprint(model, adam_state, pool, validation) -> str:
    """Hash of everything a score depends on besides the settings: weights, optimizer state, sample ids.
    Parts scored under another fingerprint (a re-warmed proxy, another pool) are never reused."""
    h = hashlib.sha256()
    for name, p in model.named_parameters():
        h.update(name.encode() + _bytes(p))
    for i, st in sorted((adam_state or {}).get("state", {}).items()):
        for k, v in sorted(st.items()):
            h.update(f"{i}.{k}".encode() + (_bytes(v) if torch.is_tensor(v) else repr(v).encode()))
    for split in (pool, validation):
        h.update("\n".join(map(str, split["id"])).encode() + b"|")
    return h.hexdigest()[:20]


def score_pool(model, tokenizer, processor, pool, validation, out, *, lr=1e-4, method="first_order",
               optimizer="sgd", adam_state=None, part_size=256, batch_size=32, freeze_vision=True,
               parts_dir=None, overwrite=False, progress=True) -> pd.DataFrame:
    """One row per pool sample (id, utility, loss, status), written to `out` (parquet) and returned.

    With `freeze_vision` (the default, as in `train.sft`) the step moves only what SFT trains: the
    language model and the merger, and `adam_state` (the warmup's) covers exactly those tensors.
    Part files go to `parts_dir` (default: `<out>.parts/` next to the output). Parts made with other
    settings or inputs raise an error, or are deleted first with `overwrite=True`.
    """
    shared = data.overlap(pool, validation)
    if shared:
        raise ValueError(f"the validation set overlaps the pool in {len(shared)} sample(s), e.g. pool "
                         f"{shared[0][0]!r} = validation {shared[0][1]!r}: utility must be measured on held-out "
                         "samples; remove them from one of the two")
    out = Path(out)
    parts_dir = Path(parts_dir) if parts_dir else out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    settings = dict(lr=lr, method=method, optimizer=optimizer, part_size=part_size, n=len(pool),
                    adam_state=adam_state is not None, freeze_vision=freeze_vision,
                    inputs=fingerprint(model, adam_state, pool, validation))
    manifest = parts_dir / "settings.json"
    rank, world = _rank_world()
    if manifest.exists() and json.loads(manifest.read_text()) != settings:
        if not overwrite:
            raise ValueError(f"{parts_dir} holds parts scored with other settings or inputs "
                             f"({manifest.read_text()}); delete it, choose another output, or pass overwrite=True")
        _barrier(world)
        if rank == 0:
            shutil.rmtree(parts_dir)
            parts_dir.mkdir(parents=True)
    if rank == 0:     # atomic, like the parts: another rank may be reading it right now
        tmp = manifest.with_name(manifest.name + f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(settings, sort_keys=True))
        os.replace(tmp, manifest)
    _barrier(world)
    col = collate.Collator(tokenizer, processor)
    val = collate.batches(validation, col, batch_size)
    n_parts = math.ceil(len(pool) / part_size)
    mine = [k for k in range(rank, n_parts, world) if not (parts_dir / f"part-{k:05d}.parquet").exists()]
    gval = None                 # one validation pass per call, not per part, and none when resuming is done
    if mine and method == "first_order":
        with train.frozen_vision(model, freeze_vision):
            gval = utility.val_gradient(model, val, collate.per_sample_loss)
    for k in tqdm(mine, desc=f"scoring parts (rank {rank}/{world})", disable=not progress):
        path = parts_dir / f"part-{k:05d}.parquet"
        part = pool.select(range(k * part_size, min((k + 1) * part_size, len(pool))))
        train_b = collate.batches(part, col, batch_size)
        with train.frozen_vision(model, freeze_vision):
            u, loss = utility.one_step_utility(model, train_b, val, collate.per_sample_loss, lr=lr, method=method,
                                               optimizer=optimizer, adam_state=adam_state, val_grad=gval,
                                               return_loss=True)
        finite = torch.isfinite(u) & torch.isfinite(loss)
        frame = pd.DataFrame({"id": part["id"], "utility": u.numpy(), "loss": loss.numpy(),
                              "status": ["ok" if f else "nonfinite" for f in finite.tolist()]})
        _atomic_parquet(frame, path)
    _barrier(world)
    frame = pd.concat([pd.read_parquet(parts_dir / f"part-{k:05d}.parquet") for k in range(n_parts)],
                      ignore_index=True)
    if frame["id"].tolist() != list(pool["id"]):
        raise RuntimeError(f"parts in {parts_dir} do not cover the pool in order; delete the folder and rerun")
    if rank == 0:
        _atomic_parquet(frame, out)
    _barrier(world)
    return frame


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model folder (e.g. a warmed proxy) or checkpoint id")
    parser.add_argument("--pool", required=True, help="a pool folder written by ost.data.make_pool")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--method", choices=("first_order", "exact"), default="first_order")
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default="sgd")
    parser.add_argument("--adam-state", type=Path, default=None,
                        help="torch.save'd Adam state_dict of the warmup (optimizer=adam continues it)")
    parser.add_argument("--train-vision", action="store_true", help="let the step move the vision tower too")
    parser.add_argument("--part-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    args = parser.parse_args(argv)
    model, tok, proc = models.load(args.model)
    adam_state = torch.load(args.adam_state, weights_only=True) if args.adam_state else None
    dd = data.load_pool(args.pool)
    frame = score_pool(model, tok, proc, dd["pool"], dd["validation"], args.out, lr=args.lr, method=args.method,
                       optimizer=args.optimizer, adam_state=adam_state, part_size=args.part_size,
                       batch_size=args.batch_size, freeze_vision=not args.train_vision)
    if int(os.environ.get("RANK", "0")) == 0:
        print(frame["status"].value_counts().to_string())
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
