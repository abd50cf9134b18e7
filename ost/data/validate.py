"""Checks every record a loader reads, so bad input is either refused by name or kept with a status.

A loader run with `on_error="raise"` (the default) stops at the first bad record with an error that
names the file, the record and the field. With `on_error="skip"` the record stays in the dataset as a
row with `status` = `skipped:<reason>` (image None, a `note` saying what was wrong): ids in = ids out,
and `ost.method.score` carries the status into the score file instead of scoring the row. `report()` counts
the statuses and shows the first examples of each.

Images are opened here, not by PIL's defaults: a zero-byte, unreadable or truncated file, or one
larger than `MAX_PIXELS` (a decompression bomb), is a bad record; CMYK, RGBA, grayscale, palette and
16-bit images are converted to 8-bit RGB (alpha composited onto white) and noted, not refused.
"""
import io
import warnings
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

MAX_PIXELS = 4096 * 4096      # far above what Qwen2-VL's processor keeps (3584² by default); larger is a bomb
REASONS = {                   # status suffix → what it means
    "not_a_record": "the entry is not a JSON object",
    "missing_field": "a required field is absent or null",
    "unknown_field": "a field the schema does not know (pass ignore_fields to accept it)",
    "bad_field": "a field of the wrong type or shape",
    "image_missing": "no image file at the path given",
    "image_empty": "the image file or bytes are zero-size",
    "image_unreadable": "not an image PIL can identify",
    "image_truncated": "the image data ends early",
    "image_too_large": f"more pixels than the limit ({MAX_PIXELS:,} by default)",
    "not_a_string": "question or answer is not text",
    "not_utf8": "question or answer is not valid UTF-8",
    "empty_question": "the question is empty",
    "empty_answer": "the answer is empty",
    "duplicate_id": "an id an earlier record already has (the first one is kept)",
    "too_long": "more tokens than max_length when scored (see ost.method.score)",
}
ON_ERROR = ("raise", "skip")


class BadRecord(ValueError):
    """One record is unusable: `reason` is a REASONS key, `field` the field at fault."""

    def __init__(self, reason: str, field: str | None, message: str):
        assert reason in REASONS, reason
        super().__init__(message)
        self.reason, self.field = reason, field

    def at(self, where: str) -> "BadRecord":
        """The same problem, its message prefixed with where it was found (file, record, id)."""
        cls = MissingImage if self.reason == "image_missing" else BadRecord
        return cls(self.reason, self.field, f"{where}: {self}")


class MissingImage(BadRecord, FileNotFoundError):
    """A missing image file is both a bad record and a missing file, for callers that catch either."""


def check_on_error(on_error: str):
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, not {on_error!r}")


def text(value, field: str) -> str:
    """A question or answer as a non-empty, valid UTF-8 str (bytes are decoded when they are UTF-8)."""
    if value is None:
        raise BadRecord("missing_field", field, f"field {field!r} is missing")
    if isinstance(value, (bytes, bytearray)):
        try:
            value = bytes(value).decode("utf-8")
        except UnicodeDecodeError as err:
            raise BadRecord("not_utf8", field, f"field {field!r} is not valid UTF-8 ({err})") from None
    if not isinstance(value, str):
        raise BadRecord("not_a_string", field, f"field {field!r} must be text, got {type(value).__name__} "
                                               f"{str(value)[:40]!r}")
    try:
        value.encode("utf-8")    # lone surrogates: undecodable bytes read with surrogateescape, or a "\udXXX" escape
    except UnicodeEncodeError as err:
        raise BadRecord("not_utf8", field, f"field {field!r} is not valid UTF-8 (position {err.start})") from None
    if not value.strip():
        raise BadRecord(f"empty_{field}" if field in ("question", "answer") else "missing_field", field,
                        f"field {field!r} is empty")
    return value


def _to_rgb(im: Image.Image) -> tuple:
    """(8-bit RGB image, note): the one pixel format the collator feeds the image processor."""
    mode = im.mode
    if mode == "RGB":
        return im, ""
    if mode.startswith("I;16") or mode in ("I", "F"):
        a = np.asarray(im, dtype=np.float64)
        a = a / 257.0 if mode.startswith("I;16") or a.max(initial=0) > 255 else a
        im = Image.fromarray(np.clip(a, 0, 255).astype(np.uint8), "L")
    if im.mode == "P" and "transparency" in im.info:
        im = im.convert("RGBA")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        im = Image.alpha_composite(white, rgba)
    return im.convert("RGB"), f"image mode {mode} converted to RGB"


def open_image(source, field: str = "image", max_pixels: int = MAX_PIXELS) -> tuple:
    """(RGB image, note) from a path, raw bytes or a PIL image; BadRecord when it cannot be used."""
    if source is None:
        raise BadRecord("missing_field", field, f"field {field!r} is missing")
    if isinstance(source, Image.Image):
        im = source
    else:
        if isinstance(source, (str, Path)):
            path = Path(source)
            if not path.is_file():
                raise MissingImage("image_missing", field, f"field {field!r}: no image file at {path}")
            raw = path.read_bytes()
            label = str(path)
        else:
            raw, label = bytes(source), "the stored image"
        if not raw:
            raise BadRecord("image_empty", field, f"field {field!r}: {label} is empty (0 bytes)")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("error", Image.DecompressionBombWarning)
                im = Image.open(io.BytesIO(raw))
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as err:
            raise BadRecord("image_too_large", field, f"field {field!r}: {label}: {err}") from None
        except UnidentifiedImageError:
            raise BadRecord("image_unreadable", field, f"field {field!r}: {label} is not an image in any format "
                                                       f"PIL reads (starts {raw[:8]!r})") from None
        except (OSError, SyntaxError, ValueError) as err:
            raise BadRecord("image_unreadable", field, f"field {field!r}: {label} is not a readable image "
                                                       f"({type(err).__name__}: {str(err)[:120]})") from None
    w, h = im.size
    if w * h > max_pixels:      # checked on the header, before any pixel is decoded
        raise BadRecord("image_too_large", field, f"field {field!r}: image is {w}×{h} = {w * h:,} pixels, "
                                                  f"over the limit of {max_pixels:,}")
    if w * h == 0:
        raise BadRecord("image_empty", field, f"field {field!r}: image is {w}×{h}")
    try:
        im.load()
    except OSError as err:
        raise BadRecord("image_truncated", field, f"field {field!r}: image data is truncated or corrupt "
                                                  f"({str(err)[:120]})") from None
    except (SyntaxError, ValueError) as err:
        raise BadRecord("image_unreadable", field, f"field {field!r}: image cannot be decoded "
                                                   f"({type(err).__name__}: {str(err)[:120]})") from None
    return _to_rgb(im)


class Ids:
    """Duplicate-id check across one source: the first record with an id keeps it."""

    def __init__(self):
        self.first = {}

    def claim(self, rid: str, where: str):
        if rid in self.first:
            raise BadRecord("duplicate_id", "id", f"id {rid!r} is already used by {self.first[rid]}")
        self.first[rid] = where


def skipped(rid: str, bad: BadRecord, partial: dict) -> dict:
    """The row a skipped record becomes: its id, whatever text was usable, no image, the status."""
    rec = {"id": rid, "image": None, "question": "", "answer": "", "final": "", "task": "real",
           "difficulty": 0, "noise": "clean", "group": rid}
    for k in ("question", "answer", "task", "group"):
        v = partial.get(k)
        if isinstance(v, str) and _encodes(v):
            rec[k] = v
    rec.update(status=f"skipped:{bad.reason}", note=str(bad))
    return rec


def _encodes(s: str) -> bool:
    try:
        s.encode("utf-8")
        return True
    except UnicodeEncodeError:
        return False


def warn_skipped(source, records: list):
    """Skipping is never silent: one warning with the counts (the rows and their notes stay)."""
    counts = Counter(r["status"] for r in records if r["status"] != "ok")
    if counts:
        warnings.warn(f"{source}: {sum(counts.values())} of {len(records)} records skipped "
                      f"({', '.join(f'{k}: {v}' for k, v in sorted(counts.items()))}); "
                      "see ost.data.validate.report(dataset)", stacklevel=3)


def report(table, examples: int = 3) -> dict:
    """Counts by status and the first `examples` ids (with their note, when there is one) of each
    non-ok status, from a loaded dataset or a score table (anything with `id` and `status` columns)."""
    cols = table.column_names if hasattr(table, "column_names") else list(table.columns)
    ids, status = list(table["id"]), list(table["status"])
    notes = list(table["note"]) if "note" in cols else [""] * len(ids)
    counts = Counter(status)
    first = {}
    for i, s, n in zip(ids, status, notes):
        if s != "ok" and len(first.setdefault(s, [])) < examples:
            first[s].append({"id": i, "note": n} if n else {"id": i})
    return {"total": len(ids), "ok": counts.get("ok", 0),
            "by_status": dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))), "examples": first}


def format_report(rep: dict) -> str:
    """report() as a few readable lines."""
    lines = [f"{rep['total']} records: {rep['ok']} ok, {rep['total'] - rep['ok']} not scored or excluded"]
    for status, n in rep["by_status"].items():
        if status == "ok":
            continue
        reason = status.split(":", 1)[-1]
        lines.append(f"  {status}: {n}  ({REASONS.get(reason, 'loss or utility not finite')})")
        for ex in rep["examples"].get(status, []):
            lines.append(f"    {ex['id']}" + (f": {ex['note']}" if ex.get("note") else ""))
    return "\n".join(lines)
