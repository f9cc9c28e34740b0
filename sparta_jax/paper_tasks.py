"""The paper's tasks: where their data lives, how a row becomes a record, how it is scored.

Two sources give a task's records, both through `sparta_jax.data.load_instructions`:

    {"kind": "paper", "task": "math_easy", "root": "/data/sparta"}  # the authors' released data/
    {"kind": "hf", "task": "math_easy"}                             # the public dataset, by name

Both take "dev" and "test" (how many rows to hold out of train when the source has no such
split; default `default_holdout`) and "seed" (the hold-out's shuffle, default 0). Held-out
rows always come from train, test first, then dev; a source's own test is never touched. No
test is held out for MATH, MedQA and TruthfulQA, whose test sets are the public ones.
The "paper" kind also takes "public_splits", splits taken from the public dataset instead of
the released files (e.g. ["test"] for MATH and TruthfulQA, whose released copies hold training
prompts only), with the "hf" keys below applying to that part. The "hf" kind takes "name",
"config" (one or a list), "split" ({ours: theirs}), "revision", "cache_dir", "data_dir" to
point elsewhere; they default to the task's public dataset below, and a "name" other than
the default drops the default config and split (e.g. name="HuggingFaceH4/MATH-500").

Each task: evaluator; released file(s), under root; public dataset.
- gsm8k: numeric. gsm8k/questions.json, train [{instruction, input}], no answers;
  gsm8k/test.json, JSON lines {question, answer "... #### N"}. openai/gsm8k "main" (train, test).
- math_easy, math_medium, math_hard: boxed. MATH/train_by_difficulty/{easy,medium,hard}.jsonl,
  train {problem, level, type, solution, id, category, answer}. EleutherAI/hendrycks_math, its
  seven subject configs, levels 1-2 / 3 / 4-5 (train, test).
- medqa: choice. medqa/train.jsonl, medqa/dev.jsonl, medqa/test.jsonl {question, options:
  {A: ..}, answer_idx} (a layout we assume, as the released copy has none; dev and test
  optional). GBaker/MedQA-USMLE-4-options (train, test).
- normad_country, normad_value, normad_rule_of_thumb: normad.
  culture/{country,value,rule_of_thumb}_dataset.json {"train" / "test" / "valid": {id:
  {instruction, label}}}. akhilayerukola/NormAd (train only).
- kcross: choice. knowledge_crosswords/train.json {"train": [{prompt, completion}]}. None.
- com2: com2. com2/train.json [{prompt, gold, datasplit}], split by datasplit where it names
  dev / valid / test. None.
- truthfulqa: likelihood_mc (dev and test). truthfulqa/data_train.jsonl {question}, training
  prompts without targets. truthfulqa/truthful_qa "multiple_choice" (its validation split,
  817 questions): a seeded 100 of them are our dev (the best member is picked on them), the
  other 717 our test, since no other questions carry MC targets.
- alpaca: judged. alpaca/alpaca_data_processed.json [{instruction, input?}] or [str].
  tatsu-lab/alpaca (train).

Records: {"id", "instruction", "answer", "evaluator", "task"} ("answer" is None where the
source has none: GSM8K's and TruthfulQA's released training prompts; an open-ended Alpaca item
has no "answer"); TruthfulQA test records also carry "mc1_targets" and "mc2_targets"
({"choices", "labels"}, as the public data). MATH's null "answer" falls back to the
solution's last \\boxed{}. A record whose reference is missing or unreadable is kept, never
dropped: `sparta_jax.data.reference_problems` lists them.

Scoring (`sparta_jax.evaluation`, the record's "evaluator"): numeric, the final number;
boxed, MATH's equivalence on the last \\boxed{} (its last number when nothing is boxed);
choice, the option letter; normad, the authors' keyword rule; likelihood_mc, MC1 / MC2 from
each option's summed log-probability (the forward pass is the caller's); judged, a 1-10 score
by a judge model. com2: normalised containment of the gold phrase (lower case, contractions
spelled out, no articles or punctuation), among the answer's first 64 words and not right
after "not" / "no" / "never". Why: the gold answers are short free text ("in pain", "hides
evidence") that a chat model wraps in a sentence, so exact match would fail right answers;
containment credits them with no judge model, deterministically, the same in every
implementation. It misses paraphrases ("in a lot of pain"), so it errs towards too low; a
judged score would catch those, but would tie the number to a judge model's own errors.

Prompts: GSM8K test questions get the released training instruction line in front; MATH
problems end "Let's solve this problem step by step." (the released prompt); MedQA options are
"A) ..." lines; public NormAd rows are written in the released files' shape (context, then
"Please justify: <story>." and the three choices); TruthfulQA's MC prompt is "Q: <question>\\nA:",
each option scored as the continuation " <option>".
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from sparta_jax import evaluation
from sparta_jax.errors import DataError

GSM8K_INSTRUCTION = "Solve this math word problem step by step."  # the released train files' line
MATH_SUFFIX = "Let's solve this problem step by step."
CHOICE_SUFFIX = "Answer with the letter of the correct option."
NORMAD_CHOICES = " Choose from:'Yes', 'No', 'Neutral'"
DEFAULT_DEV, DEFAULT_TEST = 100, 200
# Released split keys (Normad's "valid") and COM2 "datasplit" values -> our split names.
_SPLIT_NAMES = {"train": "train", "dev": "dev", "valid": "dev", "validation": "dev", "test": "test"}

RowFn = Callable[[Mapping[str, Any]], dict | None]


@dataclasses.dataclass(frozen=True)
class ReleasedFile:
    """One released file: `split` (ours) read from `path` (under root); `key`: the key the
    split's rows sit under (a list, or an {id: row} dict); `optional`: may be absent."""
    split: str
    path: str
    key: str | None = None
    optional: bool = False


@dataclasses.dataclass(frozen=True)
class PublicDataset:
    name: str
    configs: tuple[str | None, ...]
    splits: Mapping[str, str]  # ours -> theirs


@dataclasses.dataclass(frozen=True)
class PaperTask:
    name: str
    evaluator: str | None  # None: the task's released prompts have no reference to score
    released: tuple[ReleasedFile, ...]
    released_rows: Mapping[str, RowFn]  # our split -> row mapper ("*": every split)
    public: PublicDataset | None
    public_rows: Mapping[str, RowFn]
    split_field: str | None = None  # a released column naming each row's split (COM2)
    # Whether a missing test split is held out of train; False where the paper's test set is
    # the public one (MATH, MedQA, TruthfulQA): take it with "public_splits": ["test"].
    carve_test: bool = True
    evaluators: Mapping[str, str | None] = dataclasses.field(default_factory=dict)  # per split, overrides
    # How many test items become the dev split when only the test is scored (TruthfulQA: its
    # training prompts have no MC targets); 0: dev is held out of train as for every task.
    dev_from_test: int = 0

    def evaluator_for(self, split: str) -> str | None:
        return self.evaluators.get(split, self.evaluator)


def _row_fn(table: Mapping[str, RowFn], split: str) -> RowFn:
    return table.get(split) or table["*"]


# ---------------------------------------------------------------------------------------
# row mappers: one row -> {"instruction", "answer", optional "id", extras}; None: not this task


class _MissingField(Exception):
    pass


def _text(row: Mapping[str, Any], field: str) -> str:
    """The row's `field` as text; a missing or blank one is an error (the prompt needs it)."""
    value = row.get(field)
    if value is None or not str(value).strip():
        raise _MissingField(field)
    return str(value)


def _optional_text(row: Mapping[str, Any], field: str) -> str:
    value = row.get(field)
    return "" if value is None else str(value)


def _final_gsm8k_answer(solution: Any) -> str | None:
    """The text after the last "####" of a GSM8K solution; the whole text when there is no
    marker (the numeric evaluator then reads its last number); None when empty."""
    if solution is None:
        return None
    text = str(solution)
    if "####" in text:
        text = text.rsplit("####", 1)[1]
    return text.strip() or None


def _gsm8k_question(row):
    instruction = _optional_text(row, "instruction").strip()
    question = _text(row, "input").strip()
    return {"instruction": f"{instruction}\n\n{question}" if instruction else question, "answer": None}


def _gsm8k_test(row):
    return {"instruction": f"{GSM8K_INSTRUCTION}\n\n{_text(row, 'question').strip()}",
            "answer": _final_gsm8k_answer(row.get("answer"))}


def _last_boxed(solution: Any) -> str | None:
    return evaluation.extract_boxed(solution) if isinstance(solution, str) else None


def _math_answer(row) -> str | None:
    """The row's "answer", or (null or absent) the last \\boxed{} of its solution."""
    answer = row.get("answer")
    if answer is not None and str(answer).strip():
        return str(answer).strip()
    return _last_boxed(row.get("solution"))


def math_level(value: Any) -> int | None:
    """1..5 from "Level 3" (hendrycks_math) or 3 (MATH-500); None for "Level ?" and the like."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    m = re.fullmatch(r"\s*(?:level\s*)?(\d)\s*", str(value), re.IGNORECASE)
    return int(m.group(1)) if m else None


def _math_row(levels: Sequence[int] | None) -> RowFn:
    def make(row):
        if levels is not None and math_level(row.get("level")) not in levels:
            return None
        record = {"instruction": f"{_text(row, 'problem').strip()}\n{MATH_SUFFIX}", "answer": _math_answer(row)}
        if row.get("unique_id"):  # MATH-500
            record["id"] = str(row["unique_id"])
        elif row.get("id") is not None:  # the released files: ids repeat across categories
            record["id"] = f"{row.get('category') or row.get('type') or 'math'}-{row['id']}"
        return record
    return make


def _option_items(options: Any) -> list[tuple[str, str]]:
    """[(letter, text)] from {"A": ..} or [{"key": "A", "value": ..}] or [text, ..]."""
    if isinstance(options, Mapping):
        return [(str(k).strip().upper(), str(v)) for k, v in sorted(options.items()) if v is not None]
    if isinstance(options, (list, tuple)):
        items = []
        for i, option in enumerate(options):
            if isinstance(option, Mapping):
                items.append((str(option.get("key", chr(65 + i))).strip().upper(), str(option.get("value", ""))))
            else:
                items.append((chr(65 + i), str(option)))
        return items
    return []


def _medqa(row):
    options = _option_items(row.get("options"))
    if not options:
        raise _MissingField("options")
    lines = [_text(row, "question").strip()] + [f"{letter}) {text}" for letter, text in options]
    answer = row.get("answer_idx")
    if answer is None or not str(answer).strip():  # fall back to the answer's text among the options
        answer = next((letter for letter, text in options if text == row.get("answer")), None)
    return {"instruction": "\n".join(lines + [CHOICE_SUFFIX]),
            "answer": None if answer is None else str(answer).strip().upper()}


def _label(value: Any) -> str | None:
    return None if value is None else (str(value).strip().lower() or None)


def _normad_released(row):
    return {"instruction": _text(row, "instruction"), "answer": _label(row.get("label"))}


def _normad_public(context: str) -> RowFn:
    """Public NormAd rows (ID, Country, Background, Value, Rule-of-Thumb, Story, Gold Label)
    in the released instructions' shape, with `context` naming what comes before the story."""
    def make(row):
        if context == "country":
            head = f"{_text(row, 'Background').strip()}\n\nCountry: {_text(row, 'Country').strip()}."
        elif context == "value":
            head = f"Value: {_text(row, 'Value').strip()}\n\nCountry: {_text(row, 'Country').strip()}."
        else:
            head = f"Rule-of-thumb: {_text(row, 'Rule-of-Thumb').strip()}"
        record = {"instruction": f"{head}\nPlease justify: {_text(row, 'Story').strip()}.\n{NORMAD_CHOICES}",
                  "answer": _label(row.get("Gold Label"))}
        if row.get("ID") is not None:
            record["id"] = str(row["ID"])
        return record
    return make


def _kcross(row):
    letter = _label(row.get("completion"))
    return {"instruction": _text(row, "prompt"), "answer": letter.upper() if letter else None}


def _com2(row):
    gold = row.get("gold")
    return {"instruction": _text(row, "prompt"), "answer": None if gold is None else str(gold).strip() or None}


def _truthfulqa_prompt(row):
    return {"instruction": _text(row, "question"), "answer": None}


def _truthfulqa_mc(row):
    record = {"instruction": f"Q: {_text(row, 'question').strip()}\nA:"}
    for key in ("mc1_targets", "mc2_targets"):
        targets = row.get(key)
        if isinstance(targets, Mapping):
            record[key] = {"choices": [str(c) for c in targets.get("choices") or []],
                           "labels": [int(x) for x in targets.get("labels") or []]}
    return record


def _alpaca(row):
    if isinstance(row, str):
        return {"instruction": row}
    instruction, extra = _text(row, "instruction").strip(), _optional_text(row, "input").strip()
    return {"instruction": f"{instruction}\n\n{extra}" if extra else instruction}


# ---------------------------------------------------------------------------------------
# the tasks

_HENDRYCKS_SUBJECTS = ("algebra", "counting_and_probability", "geometry", "intermediate_algebra",
                       "number_theory", "prealgebra", "precalculus")
_TRAIN_TEST = {"train": "train", "test": "test"}


def _math_task(name: str, file: str, levels: tuple[int, ...]) -> PaperTask:
    return PaperTask(
        name=name, evaluator="boxed",
        released=(ReleasedFile("train", f"MATH/train_by_difficulty/{file}.jsonl"),),
        released_rows={"*": _math_row(None)},  # the file is the difficulty
        public=PublicDataset("EleutherAI/hendrycks_math", _HENDRYCKS_SUBJECTS, _TRAIN_TEST),
        public_rows={"*": _math_row(levels)}, carve_test=False)


def _normad_task(name: str, file: str, context: str) -> PaperTask:
    path = f"culture/{file}"
    return PaperTask(
        name=name, evaluator="normad",
        released=(ReleasedFile("train", path, "train"), ReleasedFile("test", path, "test"),
                  ReleasedFile("dev", path, "valid")),
        released_rows={"*": _normad_released},
        public=PublicDataset("akhilayerukola/NormAd", (None,), {"train": "train"}),
        public_rows={"*": _normad_public(context)})


TASKS: dict[str, PaperTask] = {t.name: t for t in (
    PaperTask(name="gsm8k", evaluator="numeric",
              released=(ReleasedFile("train", "gsm8k/questions.json"), ReleasedFile("test", "gsm8k/test.json")),
              released_rows={"train": _gsm8k_question, "*": _gsm8k_test},
              public=PublicDataset("openai/gsm8k", ("main",), _TRAIN_TEST), public_rows={"*": _gsm8k_test}),
    _math_task("math_easy", "easy", (1, 2)),
    _math_task("math_medium", "medium", (3,)),
    _math_task("math_hard", "hard", (4, 5)),
    PaperTask(name="medqa", evaluator="choice",
              released=(ReleasedFile("train", "medqa/train.jsonl"),
                        ReleasedFile("dev", "medqa/dev.jsonl", optional=True),
                        ReleasedFile("test", "medqa/test.jsonl", optional=True)),
              released_rows={"*": _medqa},
              public=PublicDataset("GBaker/MedQA-USMLE-4-options", (None,), _TRAIN_TEST), public_rows={"*": _medqa},
              carve_test=False),
    _normad_task("normad_country", "country_dataset.json", "country"),
    _normad_task("normad_value", "value_dataset.json", "value"),
    _normad_task("normad_rule_of_thumb", "rule_of_thumb_dataset.json", "rule_of_thumb"),
    PaperTask(name="kcross", evaluator="choice",
              released=(ReleasedFile("train", "knowledge_crosswords/train.json", "train"),),
              released_rows={"*": _kcross}, public=None, public_rows={}),
    PaperTask(name="com2", evaluator="com2", released=(ReleasedFile("train", "com2/train.json"),),
              released_rows={"*": _com2}, public=None, public_rows={}, split_field="datasplit"),
    PaperTask(name="truthfulqa", evaluator="likelihood_mc",
              released=(ReleasedFile("train", "truthfulqa/data_train.jsonl"),),
              released_rows={"*": _truthfulqa_prompt},
              public=PublicDataset("truthfulqa/truthful_qa", ("multiple_choice",), {"test": "validation"}),
              public_rows={"*": _truthfulqa_mc}, carve_test=False, dev_from_test=100,
              evaluators={"train": None}),  # the training prompts have no targets
    PaperTask(name="alpaca", evaluator="judged",
              released=(ReleasedFile("train", "alpaca/alpaca_data_processed.json"),),
              released_rows={"*": _alpaca},
              public=PublicDataset("tatsu-lab/alpaca", (None,), {"train": "train"}), public_rows={"*": _alpaca}),
)}
TASK_NAMES = tuple(TASKS)


def get_task(name: Any) -> PaperTask:
    if name not in TASKS:
        raise DataError(f"unknown paper task {name!r}; known tasks: {', '.join(TASK_NAMES)}")
    return TASKS[name]


# ---------------------------------------------------------------------------------------
# records


def build_records(task: PaperTask, split: str, rows: Iterable[tuple[str, Any]], *, public: bool,
                  where: str) -> list[dict]:
    """Records of `split` from (default id, row) pairs, through the task's released or
    public row mapper; a row the mapper skips (another MATH level) is left out. Raises
    DataError on a row without the fields its prompt needs, or a repeated id."""
    make = _row_fn(task.public_rows if public else task.released_rows, split)
    records, seen = [], set()
    for default_id, row in rows:
        try:
            fields = make(row)
        except _MissingField as e:
            found = sorted(row) if isinstance(row, Mapping) else type(row).__name__
            raise DataError(f"{where}: row {default_id!r} has no {e.args[0]!r} (it has {found})") from None
        except (AttributeError, TypeError):  # a row that is not an object
            raise DataError(f"{where}: row {default_id!r} is not an object with the task's fields") from None
        if fields is None:
            continue
        record_id = str(fields.pop("id", default_id))
        if record_id in seen:
            raise DataError(f"{where}: id {record_id!r} appears twice")
        seen.add(record_id)
        record = {"id": record_id, **fields, "task": task.name}
        evaluator = task.evaluator_for(split)
        if evaluator is not None:
            record["evaluator"] = evaluator
        records.append(record)
    return records


def read_json_rows(path: str, key: str | None = None) -> list[tuple[str | None, Any]]:
    """(id or None, row) pairs of a released JSON file: a JSON list, JSON lines (GSM8K's
    test.json, whatever its extension), or (given `key`) an object whose `key` holds a list
    or an {id: row} dict (Knowledge Crosswords, Normad)."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror})") from None
    data = _parse_json_or_lines(text, path)
    if key is None and isinstance(data, Mapping):
        data = [data]  # JSON lines of one row
    if key is not None:
        if not isinstance(data, Mapping) or key not in data:
            found = sorted(data) if isinstance(data, Mapping) else type(data).__name__
            raise DataError(f"{path}: expected an object with key {key!r}, found {found}")
        data = data[key]
    if isinstance(data, Mapping):
        return [(str(k), v) for k, v in data.items()]
    if isinstance(data, list):
        return [(None, row) for row in data]
    raise DataError(f"{path}: expected a list of rows or an {{id: row}} object, found {type(data).__name__}")


def _parse_json_or_lines(text: str, path: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as whole:
        rows = []
        for number, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                if number == 1:  # neither one JSON value nor JSON lines
                    raise DataError(f"{path} is not valid JSON ({whole})") from None
                raise DataError(f"{path} line {number} is not valid JSON ({e})") from None
        return rows


def released_splits(task: PaperTask, root: str) -> dict[str, list[dict]]:
    """The splits the released files hold (no hold-out here), read from `root`."""
    if not root:
        raise DataError(f"a 'paper' source needs 'root', the folder laid out as the authors' data/ "
                        f"(task {task.name!r} reads {', '.join(f.path for f in task.released)})")
    root = os.path.expanduser(str(root))
    if not os.path.isdir(root):
        raise DataError(f"data root {root} is not a folder")
    out: dict[str, list[dict]] = {}
    for file in task.released:
        path = os.path.join(root, file.path)
        if not os.path.isfile(path):
            if file.optional:
                continue
            raise DataError(f"task {task.name!r}: {path} not found (split {file.split!r})")
        pairs = read_json_rows(path, file.key)
        rows = [(row_id or f"{file.split}-{i}", row) for i, (row_id, row) in enumerate(pairs)]
        where = f"{path}" + (f" key {file.key!r}" if file.key else "")
        if task.split_field:
            for split, part in _split_by_field(rows, task.split_field, where).items():
                out.setdefault(split, []).extend(build_records(task, split, part, public=False, where=where))
        else:
            out[file.split] = build_records(task, file.split, rows, public=False, where=where)
    return {split: records for split, records in out.items() if records}


def _split_by_field(rows: list[tuple[str, Any]], field: str, where: str) -> dict[str, list]:
    """Rows grouped by their `field` (COM2's "datasplit"); rows without it are train."""
    groups: dict[str, list] = {}
    for row_id, row in rows:
        value = str(row.get(field) or "train").strip().lower() if isinstance(row, Mapping) else "train"
        if value not in _SPLIT_NAMES:
            raise DataError(f"{where}: row {row_id!r} has {field}={value!r}; known: {', '.join(_SPLIT_NAMES)}")
        groups.setdefault(_SPLIT_NAMES[value], []).append((row_id, row))
    return groups


def default_holdout(n_train: int, want_test: bool, want_dev: bool) -> tuple[int, int]:
    """(test, dev) rows to hold out of `n_train` train rows when the source lacks them:
    DEFAULT_TEST and DEFAULT_DEV, at most a tenth of train each (at least one), and never so
    many that train is left empty (test gives way first)."""
    cap = max(1, n_train // 10)
    test = min(DEFAULT_TEST, cap) if want_test else 0
    dev = min(DEFAULT_DEV, cap) if want_dev else 0
    while test + dev >= n_train and (test or dev):
        if test:
            test -= 1
        else:
            dev -= 1
    return test, dev
