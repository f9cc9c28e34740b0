"""Instruction sources and per-iteration prompt sampling (docs/algorithm.md §1).

A source spec (a dict, or an ml_collections ConfigDict) says where instructions come from:

    {"kind": "bundled", "task": "arithmetic", "train": 1000, "dev": 100, "test": 200,
     "seed": 0}
    {"kind": "local", "path": "/x/all.jsonl", "instruction_field": "question",
     "answer_field": "answer"}                      # one file -> split "train" ...
    {"kind": "local", "split_files": {"train": "/x/train.jsonl", "dev": "/x/dev.parquet",
     "test": "/x/test.json"}, ...fields}
    {"kind": "hf", "name": "gsm8k", "config": "main",
     "split": {"train": "train", "test": "test"}, ...fields}
    {"kind": "tfds", "name": "...", "split": {...}, "data_dir": "/x/tfds", ...fields}
    {"kind": "paper", "task": "gsm8k", "root": "/x/data"}  # the paper's released data/ folder
    {"kind": "hf", "task": "gsm8k"}                         # the paper task's public dataset

The paper's tasks ("task" = one of `sparta_jax.paper_tasks.TASK_NAMES`) come with their own
row mapping, prompts and evaluator: no field mapping is given for them. See
`sparta_jax.paper_tasks` for the files each task reads, its public dataset, and the keys
("public_splits", "name", "config", ...) that mix or redirect the two.

Field mapping (local, hf, tfds): "instruction_field" (default "instruction"), or an
"instruction_template" such as "{question}\\n{options}" formatted with the row's fields;
"answer_field" (optional: without it records carry no answer), "id_field" (optional: else
"<split>-<row>"), "evaluator" (optional, copied onto every record, e.g. "numeric").

Local files are read by extension (.jsonl / .json -> "json", .parquet -> "parquet") with
`datasets.load_dataset`; a JSON file whose rows sit under a key takes "json_field". A single
"path" becomes split "split" (default "train"); "dev" and "test" (counts) carve held-out
splits out of it deterministically (seeded by "seed", test first, then dev).

For "hf" and "tfds", "split" is either a mapping {our split: their split} or one split
name (stored under that name, "validation" as "dev"); without it, "hf" loads every split
of the dataset ("validation" -> "dev"), and "tfds" loads "train" and "test". An "hf"
"config" may be a list: the configs' rows are concatenated per split (MATH's subjects).

Held-out splits for "hf" and "paper": when the source has a "train" split but no "test" or
no "dev", "test" and "dev" (counts) carve them out of train, deterministically (seeded by
"seed", test first, then dev), never out of a test split. A generic "hf" source carves only
the counts it is given; a paper task carves `paper_tasks.default_holdout` unless told
(set "dev": 0 to carve none), and no test where its test set is the public one (MATH, MedQA,
TruthfulQA: see `paper_tasks`). Counts for a split the source already has are ignored.

`reference_problems(records)` lists the records whose reference answer is missing or cannot
be read by their evaluator: they stay in every split (never dropped), and count as wrong.

Every failure a user can cause (a missing file, an empty data set, a missing field, an
unknown kind, a data set that cannot be fetched) raises `DataError`, a ValueError whose
message names the problem.
"""
from __future__ import annotations

import glob
import json
import os
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from sparta_jax import tasks as tasks_lib
from sparta_jax.errors import DataError  # raised here; importers may take it from here

KINDS = ("bundled", "local", "hf", "tfds", "paper")
SAMPLING_MODES = ("faithful", "fixed")
_EXTENSIONS = {".jsonl": "json", ".json": "json", ".parquet": "parquet"}


# ---------------------------------------------------------------------------------------
# specs


def _as_dict(spec: Any) -> Dict[str, Any]:
    if hasattr(spec, "to_dict"):  # ml_collections.ConfigDict / FrozenConfigDict
        spec = spec.to_dict()
    if not isinstance(spec, Mapping):
        raise DataError(f"a data source spec must be a mapping, got {type(spec).__name__}")
    return dict(spec)


def _plain(value: Any) -> Any:
    if hasattr(value, "to_dict"):
        return value.to_dict()
    return value


def load_instructions(spec: Any) -> Dict[str, List[dict]]:
    """Records per split ({"train": [...], "dev": [...], "test": [...]} or a subset).

    Each record has "id" and "instruction", and "answer" (plus "evaluator", "task") where
    the source provides them.
    """
    spec = _as_dict(spec)
    kind = spec.get("kind")
    if kind == "bundled":
        return _load_bundled(spec)
    if kind == "local":
        return _load_local(spec)
    if kind == "hf":
        return _load_hf(spec)
    if kind == "tfds":
        return _load_tfds(spec)
    if kind == "paper":
        return _load_paper(spec)
    raise DataError(f"unknown data source kind {kind!r}; known kinds: {', '.join(KINDS)}")


def _load_bundled(spec: Mapping[str, Any]) -> Dict[str, List[dict]]:
    task = spec.get("task", "arithmetic")
    if task not in tasks_lib.TASK_NAMES:
        raise DataError(f"unknown bundled task {task!r}; known tasks: "
                        f"{', '.join(tasks_lib.TASK_NAMES)}")
    try:
        return tasks_lib.task_splits(task, train=int(spec.get("train", 1000)),
                                     dev=int(spec.get("dev", 100)),
                                     test=int(spec.get("test", 200)),
                                     seed=int(spec.get("seed", 0)))
    except ValueError as e:
        raise DataError(f"bundled task {task!r}: {e}") from e


# ---------------------------------------------------------------------------------------
# rows -> records


def _decode(value: Any) -> Any:
    """bytes -> str, numpy scalars and arrays -> Python values (TFDS gives these)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if isinstance(value, np.ndarray):
        return [_decode(v) for v in value.tolist()] if value.ndim else _decode(value.item())
    if isinstance(value, np.generic):
        return _decode(value.item())
    if isinstance(value, (list, tuple)):
        return [_decode(v) for v in value]
    if isinstance(value, Mapping):
        return {k: _decode(v) for k, v in value.items()}
    return value


def _format_template(template: str, row: Mapping[str, Any], where: str,
                     columns: Sequence[str]) -> str:
    try:
        return template.format(**row)
    except KeyError as e:
        raise DataError(f"instruction_template field {e.args[0]!r} not found in {where}; "
                        f"available fields: {sorted(columns)}") from None
    except (IndexError, ValueError) as e:
        raise DataError(f"bad instruction_template {template!r}: {e}") from None


def _records_from_rows(rows: Iterable[Mapping[str, Any]], spec: Mapping[str, Any],
                       split: str, where: str,
                       columns: Optional[Sequence[str]] = None) -> List[dict]:
    """Apply the field mapping of `spec` to `rows` (dicts), with errors naming `where`."""
    instruction_field = spec.get("instruction_field") or "instruction"
    template = spec.get("instruction_template")
    answer_field = spec.get("answer_field")
    id_field = spec.get("id_field")
    evaluator = spec.get("evaluator")

    def check(field: Optional[str], role: str, cols: Sequence[str]) -> None:
        if field is not None and field not in cols:
            raise DataError(f"{role} {field!r} not found in {where}; available fields: "
                            f"{sorted(cols)}")

    records: List[dict] = []
    checked = False
    for i, row in enumerate(rows):
        row = {str(k): _decode(v) for k, v in row.items()}
        cols = list(columns) if columns is not None else list(row)
        if not checked or columns is None:
            if template is None:
                check(instruction_field, "instruction_field", cols)
            check(answer_field, "answer_field", cols)
            check(id_field, "id_field", cols)
            checked = True
        if template is not None:
            instruction = _format_template(template, row, where, cols)
        else:
            instruction = row[instruction_field]
        if instruction is None or instruction == "":
            raise DataError(f"row {i} of {where} has an empty instruction "
                            f"({template or instruction_field!r})")
        if not isinstance(instruction, str):
            instruction = str(instruction)
        record = {"id": str(row[id_field]) if id_field else f"{split}-{i}",
                  "instruction": instruction}
        if answer_field is not None:
            answer = row[answer_field]
            record["answer"] = answer if isinstance(answer, str) else _stringify(answer)
        if evaluator is not None:
            record["evaluator"] = evaluator
        records.append(record)
    if not records:
        raise DataError(f"{where} is empty (no rows)")
    return records


def _stringify(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


# ---------------------------------------------------------------------------------------
# local files


def _read_local(path: str, spec: Mapping[str, Any], split: str) -> List[dict]:
    import datasets  # a module attribute lookup at call time, so tests can monkeypatch

    path = os.path.expanduser(str(path))
    has_glob = any(c in path for c in "*?[")
    files = sorted(glob.glob(path)) if has_glob else [path]
    if not files or not all(os.path.isfile(f) for f in files):
        missing = path if not files else next(f for f in files if not os.path.isfile(f))
        raise DataError(f"data file not found: {missing} (split {split!r})")
    ext = os.path.splitext(files[0].lower())[1]
    builder = spec.get("format") or _EXTENSIONS.get(ext)
    if builder is None:
        raise DataError(f"cannot tell the format of {files[0]!r} from its extension "
                        f"{ext!r}; use .jsonl, .json or .parquet, or set 'format' to "
                        "'json' or 'parquet'")
    if all(os.path.getsize(f) == 0 for f in files):
        raise DataError(f"data file {path} (split {split!r}) is empty (no rows)")
    kwargs: Dict[str, Any] = {}
    if builder == "json" and spec.get("json_field"):
        kwargs["field"] = spec["json_field"]
    if spec.get("cache_dir"):
        kwargs["cache_dir"] = spec["cache_dir"]
    try:
        ds = datasets.load_dataset(builder, data_files=files, split="train", **kwargs)
    except DataError:
        raise
    except Exception as e:  # datasets raises many kinds on malformed files
        if builder == "json" and all(_json_is_empty(f) for f in files):
            raise DataError(f"data file {path} (split {split!r}) is empty (no rows)") from e
        raise DataError(f"could not read {path} (split {split!r}) as {builder}: "
                        f"{_describe(e)}") from e
    where = f"{path} (split {split!r})"
    if len(ds) == 0:
        raise DataError(f"{where} is empty (no rows)")
    return _records_from_rows(ds, spec, split, where, columns=list(ds.column_names))


def _json_is_empty(path: str) -> bool:
    """Whether a JSON / JSONL file holds no rows: blank, `[]`, `{}` (small files only)."""
    try:
        if os.path.getsize(path) > 1 << 16:
            return False
        with open(path, encoding="utf-8") as f:
            text = f.read().strip()
        return not text or json.loads(text) in ([], {})
    except (OSError, ValueError):
        return False


def _load_local(spec: Mapping[str, Any]) -> Dict[str, List[dict]]:
    split_files = _plain(spec.get("split_files"))
    path = spec.get("path")
    if split_files and path:
        raise DataError("give either 'path' or 'split_files' for a local source, not both")
    if split_files:
        if not isinstance(split_files, Mapping):
            raise DataError("'split_files' must map split names to file paths")
        return {str(split): _read_local(p, spec, str(split))
                for split, p in split_files.items()}
    if not path:
        raise DataError("a local source needs 'path' or 'split_files'")
    split = str(spec.get("split") or "train")
    records = _read_local(path, spec, split)
    return _carve(records, spec, split)


def _carve(records: List[dict], spec: Mapping[str, Any], split: str) -> Dict[str, List[dict]]:
    """Hold out "test" then "dev" rows (counts) from one list, deterministically."""
    n_test, n_dev = int(spec.get("test") or 0), int(spec.get("dev") or 0)
    if n_test < 0 or n_dev < 0:
        raise DataError("'dev' and 'test' counts must be >= 0")
    if not (n_test or n_dev):
        return {split: records}
    if n_test + n_dev >= len(records):
        raise DataError(f"cannot hold out {n_test} test + {n_dev} dev rows from "
                        f"{len(records)} rows and keep any for {split!r}")
    order = np.random.default_rng(int(spec.get("seed", 0))).permutation(len(records))
    shuffled = [records[int(i)] for i in order]
    out = {split: shuffled[n_test + n_dev:]}
    if n_dev:
        out["dev"] = shuffled[n_test:n_test + n_dev]
    if n_test:
        out["test"] = shuffled[:n_test]
    return out


# ---------------------------------------------------------------------------------------
# Hugging Face and TFDS


def _short(e: BaseException, limit: int = 400) -> str:
    text = " ".join(str(e).split())
    return text if len(text) <= limit else text[:limit] + " ..."


def _describe(e: BaseException) -> str:
    """"Type: message", plus the root cause when the library wrapped it (datasets'
    DatasetGenerationError says only "An error occurred while generating the dataset")."""
    text = f"{type(e).__name__}: {_short(e)}"
    root, seen = e, {id(e)}
    while (root.__cause__ or root.__context__) is not None:
        nxt = root.__cause__ or root.__context__
        if id(nxt) in seen:
            break
        seen.add(id(nxt))
        root = nxt
    if root is not e:
        text += f" (caused by {type(root).__name__}: {_short(root)})"
    return text


def _our_name(split: str) -> str:
    return "dev" if split == "validation" else split


def _split_map(spec: Mapping[str, Any], default: Optional[Mapping[str, str]]
               ) -> Optional[Dict[str, str]]:
    split = _plain(spec.get("split"))
    if split is None:
        return dict(default) if default is not None else None
    if isinstance(split, str):
        return {_our_name(split): split}
    if isinstance(split, Mapping):
        return {str(k): str(v) for k, v in split.items()}
    raise DataError(f"'split' must be a split name or a mapping, got {split!r}")


def _hf_datasets(spec: Mapping[str, Any], name: str, configs: Sequence[Optional[str]],
                 mapping: Optional[Mapping[str, str]]) -> Dict[str, list]:
    """{our split: [(config, their split, dataset)]}, one entry per config, in order."""
    import datasets

    kwargs = {k: spec[k] for k in ("revision", "data_dir", "cache_dir") if spec.get(k)}

    def fetch(config, **extra):
        args = (name, config) if config else (name,)
        label = f"Hugging Face dataset {name!r}" + (f" (config {config!r})" if config else "")
        try:
            return datasets.load_dataset(*args, **kwargs, **extra)
        except Exception as e:
            raise DataError(f"could not load {label}: {_describe(e)}. "
                            "Loading by name needs network access or a local Hugging Face "
                            "cache; for files on disk use kind='local'.") from e

    out: Dict[str, list] = {}
    for config in configs:
        if mapping is None:
            dd = fetch(config)
            if not hasattr(dd, "items"):
                raise DataError(f"Hugging Face dataset {name!r} returned {type(dd).__name__}, "
                                "not a split mapping")
            for their, ds in dd.items():
                out.setdefault(_our_name(str(their)), []).append((config, str(their), ds))
        else:
            for ours, their in mapping.items():
                out.setdefault(ours, []).append((config, their, fetch(config, split=their)))
    return out


def _hf_configs(value: Any) -> List[Optional[str]]:
    value = _plain(value)
    if isinstance(value, (list, tuple)):
        return [str(c) for c in value] or [None]
    return [value or None]


def _hf_label(name: str, parts: list) -> str:
    configs = [c for c, _, _ in parts if c]
    their = sorted({t for _, t, _ in parts})
    return (f"Hugging Face dataset {name!r}" + (f" (config {', '.join(map(repr, configs))})" if configs else "")
            + f" split {', '.join(map(repr, their))}")


def _load_hf(spec: Mapping[str, Any]) -> Dict[str, List[dict]]:
    if spec.get("task") is not None:
        from sparta_jax import paper_tasks

        return _load_hf_task(spec, paper_tasks.get_task(spec["task"]))
    name = spec.get("name")
    if not name:
        raise DataError("an 'hf' source needs 'name' (a Hugging Face dataset id), or 'task' "
                        "(one of the paper's tasks)")
    out: Dict[str, List[dict]] = {}
    for ours, parts in _hf_datasets(spec, name, _hf_configs(spec.get("config")), _split_map(spec, None)).items():
        rows = [row for _, _, ds in parts for row in ds]
        out[ours] = _records_from_rows(rows, spec, ours, _hf_label(name, parts),
                                       columns=getattr(parts[0][2], "column_names", None))
    return _hold_out(out, spec, task=None)


def _load_hf_task(spec: Mapping[str, Any], task) -> Dict[str, List[dict]]:
    """A paper task's public dataset, mapped by the task's own rows (see paper_tasks)."""
    from sparta_jax import paper_tasks

    if task.public is None:
        raise DataError(f"task {task.name!r} has no public dataset; use kind='paper' with the "
                        "authors' released files")
    name = spec.get("name") or task.public.name
    is_default = name == task.public.name  # another dataset: its own config and splits
    configs = _hf_configs(spec["config"]) if spec.get("config") is not None else (
        list(task.public.configs) if is_default else [None])
    mapping = _split_map(spec, task.public.splits if is_default else None)
    out: Dict[str, List[dict]] = {}
    for ours, parts in _hf_datasets(spec, name, configs, mapping).items():
        several = len(parts) > 1
        rows = [(f"{config}-{ours}-{i}" if several else f"{ours}-{i}", _decode(dict(row)))
                for config, _, ds in parts for i, row in enumerate(ds)]
        where = _hf_label(name, parts)
        records = paper_tasks.build_records(task, ours, rows, public=True, where=where)
        if not records:
            raise DataError(f"{where} has no rows for task {task.name!r}")
        out[ours] = records
    return _hold_out(out, spec, task=task)


def _load_paper(spec: Mapping[str, Any]) -> Dict[str, List[dict]]:
    """A paper task from the authors' released files, optionally with some splits from the
    task's public dataset ("public_splits")."""
    from sparta_jax import paper_tasks

    task = paper_tasks.get_task(spec.get("task"))
    out = paper_tasks.released_splits(task, spec.get("root"))
    public = _plain(spec.get("public_splits")) or ()
    public = [public] if isinstance(public, str) else [str(s) for s in public]
    if public:
        if task.public is None:
            raise DataError(f"task {task.name!r} has no public dataset to take {public} from")
        unknown = [s for s in public if s not in task.public.splits]
        if unknown:
            raise DataError(f"task {task.name!r}: the public dataset has no split for {unknown}; "
                            f"it gives {sorted(task.public.splits)}")
        hf_spec = {k: spec[k] for k in ("name", "config", "revision", "cache_dir", "data_dir")
                   if spec.get(k) is not None}
        hf_spec.update(split={s: task.public.splits[s] for s in public}, dev=0, test=0)
        out.update(_load_hf_task(hf_spec, task))
    return _hold_out(out, spec, task=task)


def _hold_out(splits: Dict[str, List[dict]], spec: Mapping[str, Any], task) -> Dict[str, List[dict]]:
    """Carve the "test" and "dev" splits the source lacks out of its train split (module
    docstring); `task` (a paper task, or None) sets the default counts."""
    if task is not None and task.dev_from_test and "test" in splits and "dev" not in splits:
        # TruthfulQA: its only scored questions are the public test's, so its dev (the best member
        # is picked on it) is a seeded sample of them and its test the rest; its training prompts
        # carry no MC targets to score.
        asked = spec.get("dev")  # unasked: at most an eighth of the test (a tiny copy keeps its test)
        n = min(task.dev_from_test, len(splits["test"]) // 8) if asked is None else int(asked)
        if n:
            splits = {**splits, **_carve(splits["test"], {"dev": n, "seed": spec.get("seed", 0)}, "test")}
    train = splits.get("train")
    want_test = "test" not in splits and (task is None or task.carve_test)
    want_dev = "dev" not in splits
    if not train or not (want_test or want_dev):
        return splits
    if task is not None:
        from sparta_jax import paper_tasks

        default_test, default_dev = paper_tasks.default_holdout(len(train), want_test, want_dev)
    else:
        default_test = default_dev = 0
    counts = {"test": default_test if spec.get("test") is None else spec["test"],
              "dev": default_dev if spec.get("dev") is None else spec["dev"]}
    counts = {k: (int(v) if want else 0) for (k, v), want in zip(counts.items(), (want_test, want_dev))}
    carved = _carve(train, {**counts, "seed": spec.get("seed", 0)}, "train")
    return {**splits, **carved}


def _load_tfds(spec: Mapping[str, Any]) -> Dict[str, List[dict]]:
    import tensorflow_datasets as tfds

    name = spec.get("name")
    if not name:
        raise DataError("a 'tfds' source needs 'name' (a TFDS dataset name, e.g. 'gsm8k')")
    data_dir = spec.get("data_dir")
    download = bool(spec.get("download", False))
    label = f"TFDS dataset {name!r}" + (f" in {data_dir}" if data_dir else "")
    out: Dict[str, List[dict]] = {}
    for ours, their in _split_map(spec, {"train": "train", "test": "test"}).items():
        try:
            rows = _tfds_rows(tfds, name, their, data_dir, download)
        except DataError:
            raise
        except Exception as e:
            hint = ("" if download else " It is read from data_dir without downloading: "
                    "prepare it there first (e.g. `tfds build`), or set download=True.")
            raise DataError(f"could not load {label} split {their!r}: "
                            f"{_describe(e)}.{hint}") from e
        out[ours] = _records_from_rows(rows, spec, ours, f"{label} split {their!r}")
    return out


def _tfds_rows(tfds, name: str, split: str, data_dir, download: bool) -> list:
    """A TFDS split's rows. `tfds.data_source` reads array_record datasets with no TensorFlow
    (which this project does not install); `tfds.load` (TensorFlow) reads the rest."""
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=download)
        return [source[i] for i in range(len(source))]
    except Exception as first:
        try:
            ds = tfds.load(name, split=split, data_dir=data_dir, download=download)
        except Exception as second:
            raise second from first
        if hasattr(ds, "as_numpy_iterator") or type(ds).__module__.startswith("tensorflow"):
            ds = tfds.as_numpy(ds)
        return list(ds)


# ---------------------------------------------------------------------------------------
# per-iteration sampling


def describe_source(spec: Any) -> str:
    """The data source in a few words, for messages: "kind 'paper' 'gsm8k'"."""
    kind = spec.get("kind")
    what = spec.get("task") or spec.get("name") or spec.get("path") or ""
    return f"kind {kind!r}" + (f" {what!r}" if what else "")


def sample_instructions(records: Sequence[dict], n: int, *, iteration: int, seed: int,
                        mode: str = "faithful", allow_repeats: bool = False) -> List[dict]:
    """The `n` instructions of one iteration, drawn without replacement.

    `faithful` (the released code): one seeded draw, the same `n` records every iteration
    (`iteration` is ignored). `fixed`: a fresh draw per iteration, from a stream seeded by
    (seed, iteration), so iterations differ and any iteration can be reproduced alone.
    When `n` exceeds the number of records this raises DataError, unless
    `allow_repeats=True`: then whole shuffled passes over the records are concatenated
    (every record appears floor(n/len) or ceil(n/len) times) and cut at `n`.
    """
    if mode not in SAMPLING_MODES:
        raise DataError(f"unknown sampling mode {mode!r}; known: {', '.join(SAMPLING_MODES)}")
    if n < 0:
        raise DataError(f"cannot draw {n} instructions")
    total = len(records)
    if n == 0:
        return []
    if total == 0:
        raise DataError("cannot draw instructions from an empty split")
    if n > total and not allow_repeats:
        raise DataError(f"asked for {n} instructions but the split has only {total}; "
                        "lower the number per iteration or allow repeats")
    if mode == "faithful":
        rng = np.random.default_rng(np.random.SeedSequence([int(seed)]))
    else:
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), int(iteration)]))
    if n <= total:
        picked = rng.choice(total, size=n, replace=False)
    else:
        passes = -(-n // total)
        picked = np.concatenate([rng.permutation(total) for _ in range(passes)])[:n]
    return [records[int(i)] for i in picked]


def check_prompt_lengths(records: Sequence[dict], tokenizer_encode: Callable[[str], Any],
                         max_tokens: int, field: str = "instruction") -> List[dict]:
    """The records whose prompt (`record[field]`, encoded by `tokenizer_encode`, a
    str -> token ids callable, e.g. one that applies the chat template) has more than
    `max_tokens` tokens, in input order. Empty when all fit."""
    too_long = []
    for record in records:
        ids = tokenizer_encode(record[field])
        if hasattr(ids, "input_ids"):  # a tokenizers Encoding / BatchEncoding
            ids = ids.input_ids
        elif isinstance(ids, Mapping) and "input_ids" in ids:
            ids = ids["input_ids"]
        if len(ids) > max_tokens:
            too_long.append(record)
    return too_long


# ---------------------------------------------------------------------------------------
# reference answers


def reference_problems(records: Sequence[Mapping[str, Any]]) -> Dict[str, List[str]]:
    """{"missing": [ids], "unparseable": [ids]}: the records without a reference answer
    (or MC targets), and those whose reference their evaluator cannot read (or that name
    no evaluator). Open-ended ("judged") records need none. Such records are kept in their
    split; scoring counts them as wrong (`evaluation.evaluate(..., missing_reference=...)`)."""
    from sparta_jax import evaluation

    out: Dict[str, List[str]] = {"missing": [], "unparseable": []}
    for i, record in enumerate(records):
        status = evaluation.reference_status(record)
        if status != evaluation.REFERENCE_OK:
            out[status].append(str(record.get("id", i)))
    return out


def describe_reference_problems(split: str, records: Sequence[Mapping[str, Any]]) -> Optional[str]:
    """One line naming how many of a split's records lack a usable reference, or None."""
    problems = reference_problems(records)
    bad = problems["missing"] + problems["unparseable"]
    if not bad:
        return None
    example = ", ".join(bad[:3]) + (", ..." if len(bad) > 3 else "")
    return (f"split {split!r}: {len(problems['missing'])} of {len(records)} records have no reference answer "
            f"and {len(problems['unparseable'])} one that cannot be read (e.g. {example}); they count as wrong")
