"""Stage 01, the warm-up: the proxy learns the task before it ranks anything.

A proxy that cannot do the task cannot tell a right answer from a wrong one (results/main/warmup_curve.json), so
it is fine-tuned first on a seeded share of the usable pool, with the clean calibration samples in the same share
(so the toxic flags' reference is treated as the pool's clean samples are). Notebook 01, `python -m ost warmup`
and every experiment that warms a model call `warm_up`; the artifact is one folder (`save`): the proxy as a
checkpoint (`proxy/`) and the warm-up optimizer's state (`adam_state.pt`), which the default step continues.
`load` reads it back for scoring.
"""
import os
from dataclasses import dataclass
from pathlib import Path

import datasets
import numpy as np
import torch

from ost.models import base, presets, train
from ost.runs.settings import Warmup

PROXY, ADAM_STATE = "proxy", "adam_state.pt"      # the artifact folder's two entries


def warm_rows(n: int, fraction: float, seed: int) -> list:
    """The warm-up's share of n rows: the first `fraction` of a seeded permutation, sorted."""
    return sorted(np.random.default_rng(seed).permutation(n)[:round(fraction * n)].tolist())


def usable_rows(pool) -> list:
    """Rows a loader marked `ok` (every row of a pool without a status column)."""
    if "status" not in pool.column_names:
        return list(range(len(pool)))
    return [i for i, s in enumerate(pool["status"]) if s == "ok"]


def with_calibration(data, calibration, settings: Warmup):
    """The warm-up's rows `data` and the calibration samples in the warm-up's share (`warm_rows`)."""
    if calibration is None or not len(calibration):
        return data
    extra = calibration.select(warm_rows(len(calibration), settings.warmup_fraction, settings.warmup_seed))
    return datasets.concatenate_datasets([data, extra.cast(data.features)])


@dataclass
class Warmed:
    """A warmed proxy and what the warm-up did: the optimizer state the default step continues, the training log
    (history, steps, seconds) and the ids it trained on."""
    model: object
    tokenizer: object
    processor: object
    adam_state: dict
    log: dict
    warm_ids: list
    calibration_ids: list


def warm_up(dd, settings: Warmup = Warmup(), *, warm_ids=None, calibration=None, progress=False,
            **sft_kw) -> Warmed:
    """`settings.proxy` fine-tuned as `settings` says, on its share of `dd["pool"]`'s usable rows, or on `warm_ids`
    (a slice recorded elsewhere), plus the calibration samples (`calibration`, by default `dd`'s own split when it
    has one) in the same share. `sft_kw` go to `ost.models.train.sft` (e.g. logging_steps)."""
    pool = dd["pool"]
    if calibration is None:
        calibration = dd.get("calibration")
    if warm_ids is None:
        ok = usable_rows(pool)
        rows = [ok[i] for i in warm_rows(len(ok), settings.warmup_fraction, settings.warmup_seed)]
    else:
        where = {i: n for n, i in enumerate(pool["id"])}
        missing = [i for i in warm_ids if i not in where]
        if missing:
            raise KeyError(f"{len(missing)} warm-up ids are not in the pool, e.g. {missing[:3]}")
        rows = sorted(where[i] for i in warm_ids)
    try:
        model, tok, proc = base.load_model(settings.proxy, progress=progress)
    except OSError as err:
        hint = " (the hub is off: HF_HUB_OFFLINE=1; pass a local checkpoint folder)" if os.environ.get(
            "HF_HUB_OFFLINE") == "1" else ""
        raise OSError(f"cannot load the proxy {settings.proxy!r}{hint}: {err}") from None
    data = with_calibration(pool.select(rows), calibration, settings)
    log = train.sft(model, tok, proc, data, **settings.sft_kwargs(), progress=progress, **sft_kw)
    ids = list(data["id"])
    return Warmed(model, tok, proc, log["adam_state"], log, ids[:len(rows)], ids[len(rows):])


def save(warmed: Warmed, folder) -> Path:
    """The artifact: folder/proxy (a checkpoint folder) and folder/adam_state.pt."""
    folder = Path(folder)
    presets.save(folder / PROXY, warmed.model, warmed.tokenizer, warmed.processor)
    torch.save(warmed.adam_state, folder / ADAM_STATE)
    return folder


@dataclass
class Proxy:
    """A saved warm-up read back: what scoring needs."""
    model: object
    tokenizer: object
    processor: object
    adam_state: dict


def load(folder, device=None) -> Proxy:
    """The artifact `save` wrote, the model on `device` (default: where it loads, the CPU)."""
    folder = Path(folder)
    missing = [name for name in (PROXY, ADAM_STATE) if not (folder / name).exists()]
    if missing:
        raise FileNotFoundError(f"{folder} holds no warmed proxy ({', '.join(missing)} missing): warm it up first "
                                "(notebook 01, or `python -m ost warmup`)")
    model, tok, proc = presets.load(folder / PROXY)
    if device is not None:
        model.to(device)
    return Proxy(model, tok, proc, torch.load(folder / ADAM_STATE, weights_only=True, map_location=device))
