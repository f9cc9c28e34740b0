"""The duel log: one JSON object per line, written by the main loop, read by the replay.

    {"iteration": t, "index": i, "instruction": str, "models": [a, b],
     "responses": [ra, rb],
     "judges": {judge: {"scores": [sa, sb] or null, "raw": [text_a, text_b] or null}}}

`iteration` counts from 1, `index` from 0 (the duel's place in its iteration). `scores`
holds parsed scores (numbers in [0, 10]; null where unparseable, per score or for the whole
pair) so both modes can replay the same log; `raw` holds the judge outputs when kept (and
may be omitted). Unknown keys are ignored, so the log can grow fields.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import tempfile
from typing import Any, Iterable, Iterator, Mapping, Optional, Tuple

from sparta_jax.errors import SpartaError
from sparta_jax.sparta.judging import parse_pair

Score = Any  # int or float


class DuelLogError(SpartaError, ValueError):
    """A malformed duel log; names the file and the line (1-based) when known."""

    def __init__(self, message: str, line: Optional[int] = None, path: Optional[str] = None):
        self.message = message
        self.line = line
        self.path = path
        where = []
        if path is not None:
            where.append(str(path))
        if line is not None:
            where.append(f"line {line}")
        super().__init__(": ".join(where + [message]))


@dataclasses.dataclass(frozen=True)
class JudgeRecord:
    """One judge's verdict on a duel: parsed scores (s_a, s_b) with None where unparseable
    (or None for the whole pair), and the raw outputs when kept."""

    scores: Optional[Tuple[Optional[Score], Optional[Score]]]
    raw: Optional[Tuple[Optional[str], Optional[str]]] = None

    @classmethod
    def from_raw(cls, raw_a: Optional[str], raw_b: Optional[str], keep_raw: bool = True) -> "JudgeRecord":
        """Parses two sampled judge outputs (docs/algorithm.md §2.3)."""
        return cls(parse_pair(raw_a, raw_b), (raw_a, raw_b) if keep_raw else None)


@dataclasses.dataclass(frozen=True)
class DuelRecord:
    iteration: int
    index: int
    instruction: str
    models: Tuple[str, str]
    responses: Tuple[str, str]
    judges: Mapping[str, JudgeRecord]

    def judge_scores(self) -> dict:
        """{judge: scores or None}, the input of judging.effective_judgements."""
        return {name: j.scores for name, j in self.judges.items()}


# --------------------------------------------------------------------------------------
# JSON <-> records
# --------------------------------------------------------------------------------------
def duel_to_json(record: DuelRecord) -> dict:
    return {
        "iteration": record.iteration,
        "index": record.index,
        "instruction": record.instruction,
        "models": list(record.models),
        "responses": list(record.responses),
        "judges": {
            name: {
                "scores": None if j.scores is None else list(j.scores),
                "raw": None if j.raw is None else list(j.raw),
            }
            for name, j in record.judges.items()
        },
    }


def dumps_duel(record: DuelRecord) -> str:
    """One log line (no newline). Validates the record first."""
    obj = duel_to_json(record)
    duel_from_json(obj)  # refuse to write what could not be read back
    return json.dumps(obj, ensure_ascii=False, allow_nan=False)


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _pair(value: Any, what: str, check, allow_none_items: bool) -> tuple:
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"{what} must be a list of two items")
    for item in value:
        if item is None and allow_none_items:
            continue
        check(item)
    return tuple(value)


def _check_name(name: Any, tribe: Optional[frozenset], what: str) -> None:
    if not isinstance(name, str) or not name:
        raise ValueError(f"{what} must be a non-empty string, got {name!r}")
    if tribe is not None and name not in tribe:
        raise ValueError(f"unknown model {name!r} in {what}")


def duel_from_json(obj: Any, tribe: Optional[Iterable[str]] = None) -> DuelRecord:
    """Validates one parsed log object and returns its record (ValueError when bad).

    With `tribe`, every model and judge must be a member."""
    tribe = None if tribe is None else frozenset(tribe)
    if not isinstance(obj, dict):
        raise ValueError("a duel must be a JSON object")
    for key in ("iteration", "index", "instruction", "models", "responses", "judges"):
        if key not in obj:
            raise ValueError(f"missing key {key!r}")
    iteration, index = obj["iteration"], obj["index"]
    if not _is_int(iteration) or iteration < 1:
        raise ValueError(f"'iteration' must be an integer >= 1, got {iteration!r}")
    if not _is_int(index) or index < 0:
        raise ValueError(f"'index' must be an integer >= 0, got {index!r}")
    if not isinstance(obj["instruction"], str):
        raise ValueError("'instruction' must be a string")

    def check_model(name):
        _check_name(name, tribe, "'models'")

    models = _pair(obj["models"], "'models'", check_model, False)
    if models[0] == models[1]:
        raise ValueError(f"a model cannot duel itself ({models[0]!r})")

    def check_text(text):
        if not isinstance(text, str):
            raise ValueError(f"expected a string, got {type(text).__name__}")

    responses = _pair(obj["responses"], "'responses'", check_text, False)
    judges_obj = obj["judges"]
    if not isinstance(judges_obj, dict):
        raise ValueError("'judges' must be an object {judge: {...}}")
    judges = {}
    for name, entry in judges_obj.items():
        _check_name(name, tribe, "'judges'")
        if name in models:
            raise ValueError(f"judge {name!r} is also a duelist")
        if not isinstance(entry, dict) or "scores" not in entry:
            raise ValueError(f"judge {name!r}: expected an object with 'scores'")
        scores = entry["scores"]
        if scores is not None:

            def check_score(s, name=name):
                if not _is_number(s) or not math.isfinite(s) or not 0 <= s <= 10:
                    raise ValueError(f"judge {name!r}: a score must be a number in [0, 10] or null, got {s!r}")

            scores = _pair(scores, f"judge {name!r}: 'scores'", check_score, True)
        raw = entry.get("raw")
        if raw is not None:
            raw = _pair(raw, f"judge {name!r}: 'raw'", check_text, True)
        judges[name] = JudgeRecord(scores, raw)
    return DuelRecord(iteration, index, obj["instruction"], models, responses, judges)


def parse_duel_line(line: str, tribe: Optional[Iterable[str]] = None) -> DuelRecord:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as e:
        raise ValueError(f"not valid JSON ({e.msg} at column {e.colno})") from None
    except (ValueError, RecursionError) as e:
        raise ValueError(f"not valid JSON ({e})") from None
    return duel_from_json(obj, tribe)


# --------------------------------------------------------------------------------------
# Files
# --------------------------------------------------------------------------------------
def iter_duel_log(path: str, tribe: Optional[Iterable[str]] = None) -> Iterator[Tuple[int, DuelRecord]]:
    """Yields (line number, record) for every non-blank line; DuelLogError names the line.
    Also rejects a repeated (iteration, index)."""
    tribe = None if tribe is None else frozenset(tribe)
    seen = {}
    try:
        handle = open(path, encoding="utf-8")
    except OSError as e:
        raise DuelLogError(f"cannot read the duel log ({e.strerror})", path=path) from None
    with handle:
        line_no = 0
        while True:
            try:
                line = handle.readline()
            except UnicodeDecodeError:
                raise DuelLogError("not UTF-8 text", line_no + 1, path) from None
            if not line:
                break
            line_no += 1
            if not line.strip():
                continue
            try:
                record = parse_duel_line(line, tribe)
            except ValueError as e:
                raise DuelLogError(str(e), line_no, path) from None
            key = (record.iteration, record.index)
            if key in seen:
                raise DuelLogError(
                    f"duel {record.index} of iteration {record.iteration} repeats line {seen[key]}", line_no, path
                )
            seen[key] = line_no
            yield line_no, record


def read_duel_log(path: str, tribe: Optional[Iterable[str]] = None) -> list:
    """All records of a duel log, validated (see iter_duel_log)."""
    return [record for _, record in iter_duel_log(path, tribe)]


def write_duel_log(path: str, records: Iterable[DuelRecord]) -> None:
    """Writes a whole log atomically (temp file in the same folder, then os.replace)."""
    lines = [dumps_duel(r) + "\n" for r in records]
    write_text_atomic(path, "".join(lines))


def append_duel_log(path: str, records: Iterable[DuelRecord]) -> None:
    """Appends records to a log (validated before anything is written)."""
    lines = [dumps_duel(r) + "\n" for r in records]
    with open(path, "a", encoding="utf-8") as f:
        f.write("".join(lines))


def write_bytes_atomic(path: str, data: bytes) -> None:
    """Writes `data` to `path` via a temp file and os.replace: all or nothing, with the
    permissions a plain open() would give (mkstemp's 0600 would hide run files from others)."""
    folder = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=os.path.basename(path), dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def write_text_atomic(path: str, text: str) -> None:
    """Writes `text` (UTF-8) to `path`: all or nothing."""
    write_bytes_atomic(path, text.encode("utf-8"))


__all__ = [
    "write_bytes_atomic",
    "DuelLogError",
    "JudgeRecord",
    "DuelRecord",
    "duel_to_json",
    "duel_from_json",
    "dumps_duel",
    "parse_duel_line",
    "iter_duel_log",
    "read_duel_log",
    "write_duel_log",
    "append_duel_log",
    "write_text_atomic",
]
