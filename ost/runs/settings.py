"""Each stage's settings, defined once: the notebooks' parameters, the CLI, credibility and the benchmarks
read their defaults and their names from here (the step of stage 02 is `ost.method.step.Step`, whose
`step_*` keys are read the same way by `Step.from_params`).

Names say their stage (`pool_seed`, `warmup_seed`, `sft_seeds` …), so one key of `configs/*.yaml` means
one thing wherever it is read. `from_params` picks a stage's fields out of a flat mapping — a config, or a
notebook's `globals()` — and checks their types, so a YAML `6` for a float field still works and a string
where a number belongs is an error, not a silent default.
"""
from dataclasses import asdict, dataclass, fields


def typed(cls, name: str, value):
    """`value` as the type of field `name` of `cls` (its default's type): int → float is fine, "6" is not."""
    default = next(f.default for f in fields(cls) if f.name == name)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{cls.__name__}.{name} is a bool, not {value!r}")
        return value
    if isinstance(default, (int, float)):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{cls.__name__}.{name} is a number, not {value!r}")
        if isinstance(default, int) and value != int(value):
            raise TypeError(f"{cls.__name__}.{name} is a whole number, not {value!r}")
        return type(default)(value)
    if isinstance(default, tuple):
        if isinstance(value, str) or not hasattr(value, "__iter__"):
            raise TypeError(f"{cls.__name__}.{name} is a list, not {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise TypeError(f"{cls.__name__}.{name} is a string, not {value!r}")
    return value


class _Stage:
    PREFIX = ""       # what a field's name takes in a config or a notebook's parameters (the step's: "step_")

    @classmethod
    def names(cls) -> list:
        return [cls.PREFIX + f.name for f in fields(cls)]

    @classmethod
    def from_params(cls, params) -> "_Stage":
        """The stage's settings from a flat mapping that may hold other stages' keys too (they are ignored)."""
        return cls(**{f.name: typed(cls, f.name, params[cls.PREFIX + f.name]) for f in fields(cls)
                      if cls.PREFIX + f.name in params})

    def as_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def as_params(self) -> dict:
        """The settings under the names `from_params` reads."""
        return {self.PREFIX + k: v for k, v in self.as_dict().items()}


@dataclass(frozen=True)
class Pool(_Stage):
    """Stage 00, the synthetic pool (`ost.data.pool`): the main scale's values."""
    n_groups: int = 2500           # items; each asked `copies` times
    copies: int = 2                # near-duplicate samples per item
    noise_rate: float = 0.35       # share of toxic samples
    systematic_share: float = 0.8  # part of the toxic share a faulty generator writes (whole items)
    carry_share: float = 0.8       # part of the systematic share that drops the carry
    duplicate_rate: float = 0.05   # exact copies on top (wasteful, not toxic)
    extra_kinds: tuple = ()        # noise kinds beyond the main pool's (the second pool of the step check)
    n_val: int = 200               # clean validation samples
    n_cal: int = 200               # clean calibration samples of the toxic flags, drawn as the pool's clean ones
    n_test: int = 1000             # clean test samples
    pool_seed: int = 0             # decides the whole pool

    def pool_params(self) -> dict:
        """The keyword arguments of `ost.data.schema.make_pool` (its cache folder hashes these names)."""
        d = asdict(self)
        d["seed"] = d.pop("pool_seed")
        return d


@dataclass(frozen=True)
class Warmup(_Stage):
    """Stage 01, the proxy's warm-up: long enough that the proxy can do the task (results/main/warmup_curve.json)."""
    proxy: str = "proxy"           # a preset of ost.models.presets, or a Qwen2-VL checkpoint folder / hub id
    warmup_fraction: float = 1.0   # share of the pool warmed on
    warmup_epochs: float = 12.0
    warmup_lr: float = 2e-3        # AdamW peak, cosine schedule
    warmup_batch_size: int = 32
    warmup_seed: int = 0           # picks the slice and seeds training

    def sft_kwargs(self) -> dict:
        """The keyword arguments of `ost.models.train.sft` for this warm-up (the slice is the caller's)."""
        return dict(epochs=self.warmup_epochs, lr=self.warmup_lr, batch_size=self.warmup_batch_size,
                    seed=self.warmup_seed)


@dataclass(frozen=True)
class Selection(_Stage):
    """Stage 03, the subset rule behind the `ost` rows (a name of `ost.method.coverage.RULES`) and its seed."""
    selector: str = "filter-random"   # the default: the score removes harm, chance keeps every region
    selector_seed: int = 0            # seeds the rule's random pick


@dataclass(frozen=True)
class SFT(_Stage):
    """Stage 05, fine-tuning the target: the regime results/main/regime.json chose."""
    target: str = "target"         # a preset, or a Qwen2-VL checkpoint folder / hub id
    sft_epochs: float = 6.0
    sft_lr: float = 1e-3           # AdamW peak, cosine schedule
    sft_batch_size: int = 32
    sft_seeds: tuple = (0, 1, 2)   # each subset × protocol is trained once per seed
