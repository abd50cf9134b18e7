"""Score a whole pool with the one-step utility, in resumable parts.

Each part of `part_size` samples is written to `<out>.parts/part-NNNNN.parquet` by an atomic rename,
so an interrupted run leaves only finished parts; a rerun skips them and writes the same final file.
`<out>.manifest.json` (rows, counts by status, seed, settings, sha256) is written last: `read_scores`
refuses a file without a matching one. Under `torchrun --nproc_per_node N -m ost.method.score …` each
process scores every N-th part (gloo on CPU, nccl on GPU) and rank 0 merges them: the file is the
same as one process writes. Every pool id appears in the output once, with a status (`ok`;
`nonfinite` when its loss or utility is not a finite number; `skipped:<reason>` for a record a loader
could not use or one over `max_length`): only `ok` rows are ever selected, but none is lost.

    python -m ost.method.score --model data/base/proxy-… --pool data/pools/synth-… --out results/x/scores.parquet
"""
import argparse
import hashlib
import json
import math
import os
import shutil
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ost import runs
from ost.data import schema, validate
from ost.method import ghost, one_step
from ost.method.step import DEFAULT, METHODS, OPTIMIZERS, Step
from ost.models import collate, presets, train
from ost.runs.workers import bar

COLUMNS = ("id", "utility", "loss", "status")


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
        if "status" in split.column_names:      # a record fixed (or newly broken) since: parts are stale
            h.update("\n".join(split["status"]).encode() + b"|")
    return h.hexdigest()[:20]


def manifest_path(out) -> Path:
    out = Path(out)
    return out.with_name(out.name + ".manifest.json")


def read_manifest(out) -> dict:
    """A finished score file's manifest: rows, counts by status, seed, settings, the paths that scored it, sha256."""
    return json.loads(manifest_path(out).read_text())


def read_scores(out) -> pd.DataFrame:
    """A finished score file: its manifest (written last) must exist and match its size and hash, so
    a file a killed run left half-done, or one copied from elsewhere, is never taken as finished."""
    out, man = Path(out), manifest_path(out)
    if not man.exists():
        raise ValueError(f"{out} has no manifest ({man.name}): scoring did not finish; rerun it (finished "
                         "parts are reused)")
    m = read_manifest(out)
    digest = hashlib.sha256(out.read_bytes()).hexdigest() if out.exists() else None
    if digest != m["sha256"]:
        raise ValueError(f"{out} does not match its manifest (sha256 {digest} ≠ {m['sha256']}): it was "
                         "changed or left half-written; rerun scoring")
    frame = pd.read_parquet(out)
    if len(frame) != m["rows"]:
        raise ValueError(f"{out}: {len(frame)} rows, its manifest says {m['rows']}")
    return frame


def score_samples(model, tok, proc, samples, validation, *, step=DEFAULT, warm_state=None, batch_size=32,
              with_loss=False, sketch=None):
    """One-step utility of each sample (index = id) under `step` (an `ost.Step`), in memory, the step moving
    what SFT trains; with `with_loss`, a frame of `utility` and the sample's own answer `loss` at θ (free:
    the forward pass runs anyway). `score_pool` is the resumable, file-writing form for a whole pool.

    With `sketch` (an `ost.method.sketch.Sketch`; a step with normalize=True) the return is
    (scores, features, val_features): float32 (N, dim) and (N_val, dim) count sketches of each
    D^(-1/2) g / ‖g‖, the pool's from the same per-sample pass as the utility, for the selectors of
    `ost.method.coverage`."""
    col = collate.Collator(tok, proc)
    with train.frozen_vision(model):
        out = one_step.utilities(model, collate.batches(samples, col, batch_size),
                                 collate.batches(validation, col, batch_size), collate.per_sample_loss, step,
                                 warm_state=warm_state, sketch=sketch)
        u, loss = out.utility, out.loss
        if sketch is not None:
            val_feats = one_step.gradient_features(model, collate.batches(validation, col, batch_size),
                                                   collate.per_sample_loss, sketch, step.adam_state(warm_state))
    ids = list(samples["id"])
    u, loss = u.cpu(), loss.cpu()
    frame = (pd.DataFrame({"utility": u.numpy(), "loss": loss.numpy()}, index=ids) if with_loss
             else pd.Series(u.numpy(), index=ids, name="utility"))
    return frame if sketch is None else (frame, out.features.numpy(), val_feats.numpy())


def gradient_norms(model, tok, proc, samples, *, batch_size=32) -> pd.Series:
    """‖g_i‖ of each sample's answer loss over what SFT trains (index = id): how far a plain step on it
    moves the model, which an unnormalised utility grows with whatever the step's direction."""
    col = collate.Collator(tok, proc)
    out = []
    with train.frozen_vision(model):
        was = model.training
        model.eval()
        try:
            params = [p for p in model.parameters() if p.requires_grad]
            for batch in collate.batches(samples, col, batch_size):
                out.append(ghost.norms(model, batch, collate.per_sample_loss, params))
        finally:
            model.train(was)
    return pd.Series(torch.cat(out).cpu().numpy() if out else [], index=list(samples["id"]), name="grad_norm")


def _score_rows(model, col, samples, val, batch_size, freeze_vision, step, warm_state, val_grad):
    batches = [col(samples[i:i + batch_size]) for i in range(0, len(samples), batch_size)]
    with train.frozen_vision(model, freeze_vision):
        return one_step.utilities(model, batches, val, collate.per_sample_loss, step, warm_state=warm_state,
                                  val_grad=val_grad)


def _score_part(model, col, samples, status, val, batch_size, freeze_vision, max_length, step, warm_state,
                val_grad):
    """(utility, loss, status, path) of one part (path: how it was scored; None when nothing was). Rows not `ok`
    on input, or over max_length, are not scored.
    A sample whose loss is not finite can turn other samples' gradients into NaN through shared
    weights (0·NaN in a backward pass), so when some losses are NaN the rest are scored again alone."""
    n = len(samples)
    u, loss, status = np.full(n, np.nan), np.full(n, np.nan), list(status)
    if max_length:
        for j, s in enumerate(samples):
            if status[j] == "ok" and col.n_tokens(s) > max_length:
                status[j] = "skipped:too_long"
    todo = [j for j in range(n) if status[j] == "ok"]
    path = None
    if todo:
        scored = _score_rows(model, col, [samples[j] for j in todo], val, batch_size, freeze_vision, step, warm_state,
                             val_grad)
        uu, ll, path = scored.utility.cpu().numpy(), scored.loss.cpu().numpy(), scored.path
        bad = ~np.isfinite(ll)
        if bad.any() and not bad.all():
            keep = [j for j, b in zip(todo, bad) if not b]
            again = _score_rows(model, col, [samples[j] for j in keep], val, batch_size, freeze_vision, step,
                                warm_state, val_grad)
            uu[~bad], ll[~bad] = again.utility.cpu().numpy(), again.loss.cpu().numpy()
        u[todo], loss[todo] = uu, ll
        for j in todo:
            status[j] = "ok" if np.isfinite(u[j]) and np.isfinite(loss[j]) else "nonfinite"
    return u, loss, status, path


def score_pool(model, tokenizer, processor, pool, validation, out, *, step=DEFAULT, warm_state=None,
               part_size=256, batch_size=32, freeze_vision=True,
               parts_dir=None, overwrite=False, progress=True, max_length=None, seed=0) -> pd.DataFrame:
    """One row per pool sample (id, utility, loss, status), written to `out` (parquet) and returned.

    `step` (an `ost.Step`, default `ost.method.step.DEFAULT`) says which one-step update is simulated;
    `warm_state` is the warm-up's Adam state_dict, which a step that continues the warm-up needs.
    With `freeze_vision` (the default, as in `train.sft`) the step moves only what SFT trains: the
    language model and the merger, and `warm_state` covers exactly those tensors.
    Part files go to `parts_dir` (default: `<out>.parts/` next to the output). Parts made with other
    settings or inputs raise an error, or are deleted first with `overwrite=True`.

    Statuses: `ok`; `nonfinite` (loss or utility NaN/inf); a pool row a loader marked `skipped:<reason>`
    keeps that status, unscored. Over-long policy: with `max_length` (tokens, prompt + image + answer),
    a longer sample is not truncated (cutting the prompt would score a different question) but marked
    `skipped:too_long`; without it every sample is scored whole. Either way, rows out = rows in. `seed`
    is set before each part (so a resumed part is the one an uninterrupted run makes) and recorded,
    with the settings and counts, in the file's metadata and in `<out>.manifest.json`.
    """
    if not isinstance(step, Step):
        raise TypeError(f"step is an ost.Step, not {type(step).__name__} (a recorded dict: Step.from_dict(d))")
    shared = schema.overlap(pool, validation)
    if shared:
        raise ValueError(f"the validation set overlaps the pool in {len(shared)} sample(s), e.g. pool "
                         f"{shared[0][0]!r} = validation {shared[0][1]!r}: utility must be measured on held-out "
                         "samples; remove them from one of the two")
    if "status" in validation.column_names and set(validation["status"]) != {"ok"}:
        bad = [(i, s) for i, s in zip(validation["id"], validation["status"]) if s != "ok"]
        raise ValueError(f"the validation set holds {len(bad)} record(s) a loader skipped, e.g. {bad[0]}: every "
                         "utility is measured against it, so fix or remove them first")
    status = list(pool["status"]) if "status" in pool.column_names else ["ok"] * len(pool)
    out = Path(out)
    parts_dir = Path(parts_dir) if parts_dir else out.with_name(out.name + ".parts")
    parts_dir.mkdir(parents=True, exist_ok=True)
    adam_state = step.adam_state(warm_state)
    settings = dict(step=step.as_dict(), part_size=part_size, n=len(pool),
                    adam_state=adam_state is not None, freeze_vision=freeze_vision, max_length=max_length,
                    seed=seed, inputs=fingerprint(model, adam_state, pool, validation))
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
        runs.replace_text(manifest, json.dumps(settings, sort_keys=True))
    _barrier(world)
    col = collate.Collator(tokenizer, processor)
    val = collate.batches(validation, col, batch_size)
    n_parts = math.ceil(len(pool) / part_size)
    mine = [k for k in range(rank, n_parts, world) if not (parts_dir / f"part-{k:05d}.parquet").exists()]
    val_grad = None
    if mine and step.method == "first_order":  # one validation pass per call, not per part, none when resuming is done
        with train.frozen_vision(model, freeze_vision):
            val_grad = one_step.val_gradient(model, val, collate.per_sample_loss, unit_val=step.unit_val)
        if not all(torch.isfinite(g).all() for g in val_grad):
            warnings.warn("the validation gradient is not finite: every utility will be 'nonfinite'; check the "
                          "model's weights and the validation samples", stacklevel=2)
    for k in bar(mine, desc=f"scoring parts (rank {rank}/{world})", progress=progress):
        rows = range(k * part_size, min((k + 1) * part_size, len(pool)))
        part = pool.select(rows)
        torch.manual_seed(seed)
        u, loss, st, path = _score_part(model, col, list(part), [status[i] for i in rows], val, batch_size,
                                        freeze_vision, max_length, step, warm_state, val_grad)
        frame = pd.DataFrame({"id": part["id"], "utility": u, "loss": loss, "status": st})
        runs.write_parquet(frame, parts_dir / f"part-{k:05d}.parquet", {"settings": settings, "part": k, "path": path})
    _barrier(world)
    part_files = [parts_dir / f"part-{k:05d}.parquet" for k in range(n_parts)]
    frame = pd.concat([pd.read_parquet(f) for f in part_files], ignore_index=True)
    # how the parts were scored ("ghost", "exact", …; a fallback shows as a second path), kept with the file
    scored_by = sorted({runs.read_meta(f).get("path") for f in part_files} - {None})
    if frame["id"].tolist() != list(pool["id"]):
        raise RuntimeError(f"parts in {parts_dir} do not cover the pool in order; delete the folder and rerun")
    if rank == 0:
        counts = frame["status"].value_counts().sort_index().to_dict()
        runs.write_parquet(frame, out, {"settings": settings, "seed": seed, "rows": len(frame), "status": counts,
                                        "paths": scored_by})
        man = dict(file=out.name, rows=len(frame), status=counts, seed=seed, settings=settings, paths=scored_by,
                   sha256=hashlib.sha256(out.read_bytes()).hexdigest())
        runs.replace_text(manifest_path(out), json.dumps(man, indent=1, sort_keys=True) + "\n")
    _barrier(world)
    return frame


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", required=True, help="a model folder (e.g. a warmed proxy) or checkpoint id")
    parser.add_argument("--pool", required=True,
                        help="a pool folder: ost.data.schema.make_pool's, "
                             "or a saved DatasetDict with pool and validation splits")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--lr", type=float, default=DEFAULT.lr, help=f"step lr (default {DEFAULT.lr:g})")
    parser.add_argument("--method", choices=METHODS, default=DEFAULT.method)
    parser.add_argument("--optimizer", choices=OPTIMIZERS, default=DEFAULT.optimizer)
    parser.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=DEFAULT.normalize,
                        help="step on g_i/|g_i| (rank by direction, not gradient size)")
    parser.add_argument("--unit-val", action=argparse.BooleanOptionalAction, default=DEFAULT.unit_val,
                        help="every validation sample votes once (its gradient at unit length)")
    parser.add_argument("--fresh-adam", action="store_true",
                        help="adam: start from a fresh state instead of continuing the warm-up's")
    parser.add_argument("--adam-state", type=Path, default=None,
                        help="torch.save'd Adam state_dict of the warm-up (the default step continues it)")
    parser.add_argument("--train-vision", action="store_true", help="let the step move the vision tower too")
    parser.add_argument("--part-size", type=int, default=256)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=None,
                        help="tokens per sample; a longer one gets status skipped:too_long (default: no limit)")
    parser.add_argument("--seed", type=int, default=0, help="set before each part; recorded in the file")
    parser.add_argument("--device", default="auto",
                        help="cpu, cuda, cuda:N; auto: this process's GPU (LOCAL_RANK under torchrun) if there is one")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32",
                        help="the weights' dtype (bfloat16 halves a GPU's memory; scores then round coarser)")
    return parser


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def device_for(spec: str = "auto") -> torch.device:
    """The device a scoring process puts its model on: `spec`, or with "auto" its own GPU when there is one."""
    if spec != "auto":
        return torch.device(spec)
    if torch.cuda.is_available():
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device("cpu")


def main(argv=None):
    cli = parser()
    args = cli.parse_args(argv)
    device = device_for(args.device)
    model, tok, proc = presets.load(args.model, dtype=DTYPES[args.dtype])
    model.to(device)
    step = Step(method=args.method, optimizer=args.optimizer, lr=args.lr, normalize=args.normalize,
                unit_val=args.unit_val, continue_warmup=not args.fresh_adam)
    warm_state = torch.load(args.adam_state, weights_only=True, map_location=device) if args.adam_state else None
    try:
        step.adam_state(warm_state)
    except ValueError as err:
        cli.error(f"{err} ({step.label}): pass --adam-state (notebook 01 saves adam_state.pt next to the proxy), "
                  "or --fresh-adam, or --optimizer sgd")
    dd = schema.load_pool(args.pool)
    frame = score_pool(model, tok, proc, dd["pool"], dd["validation"], args.out, step=step,
                       warm_state=warm_state, part_size=args.part_size,
                       batch_size=args.batch_size, freeze_vision=not args.train_vision,
                       max_length=args.max_length, seed=args.seed)
    if int(os.environ.get("RANK", "0")) == 0:
        notes = dd["pool"]["note"] if "note" in dd["pool"].column_names else None   # the loader's, for the report
        print(validate.format_report(validate.report(frame if notes is None else frame.assign(note=notes))))
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        import torch.distributed as dist
        dist.destroy_process_group()


if __name__ == "__main__":
    main()
