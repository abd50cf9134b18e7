"""ost: One-Step-Train data selection for multimodal SFT, reproduced at small scale.

Importing the package switches the Hugging Face hub off before transformers is loaded:
the embedded default needs no network, and a real checkpoint must already be on disk.
"""
import os
from typing import TYPE_CHECKING

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
# Spinning OpenMP waits make a shared CPU's timings swing 3-20x; read when torch loads, so only
# effective if ost is imported before torch (the Makefile exports it for everything it runs).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from transformers.utils import logging as _hf_logging

_hf_logging.disable_progress_bar()     # "Loading weights" bars, once per model load, drown the real progress

__version__ = "0.1.0"

# the few names a user needs, loaded on first use (so `import ost` stays light): name → module (, its name there)
_EXPORTS = {"Step": "method.step", "one_step_utility": "method.one_step", "score_pool": "method.score",
            "score_samples": "method.score", "validation_shift": "method.shift",
            "select": ("method.coverage", "choose"), "top_fraction": "method.select", "toxic_flags": "method.select",
            "Flag": "method.toxic", "flag_toxic": ("method.toxic", "flag"), "split_calibration": "method.toxic",
            "calibration_reference": ("method.toxic", "reference"), "load_any": "data.loaders"}
# sorted(_EXPORTS), written out so editors and linters read it (a test checks)
__all__ = ["Flag", "Step", "calibration_reference", "flag_toxic", "load_any", "one_step_utility", "score_pool",
           "score_samples", "select", "split_calibration", "top_fraction", "toxic_flags", "validation_shift"]

if TYPE_CHECKING:     # the same names, imported for editors and type checkers (a test checks they agree)
    from ost.data.loaders import load_any
    from ost.method.coverage import choose as select
    from ost.method.one_step import one_step_utility
    from ost.method.score import score_pool, score_samples
    from ost.method.select import top_fraction, toxic_flags
    from ost.method.shift import validation_shift
    from ost.method.step import Step
    from ost.method.toxic import Flag, split_calibration
    from ost.method.toxic import flag as flag_toxic
    from ost.method.toxic import reference as calibration_reference


def __getattr__(name):
    if name in _EXPORTS:
        import importlib
        module, attr = _EXPORTS[name] if isinstance(_EXPORTS[name], tuple) else (_EXPORTS[name], name)
        return getattr(importlib.import_module(f".{module}", __name__), attr)
    raise AttributeError(f"module 'ost' has no attribute {name!r}")
