"""Bundled tasks, instruction sources and per-iteration sampling."""
import json
import re
from collections import Counter

import numpy as np
import pytest

from sparta_jax import data as data_lib
from sparta_jax import tasks as tasks_lib
from sparta_jax.data import (DataError, check_prompt_lengths, load_instructions,
                             sample_instructions)
from sparta_jax.evaluation import score
from sparta_jax.tasks import TASK_NAMES, generate_task, task_splits, wrong_forms

# ---------------------------------------------------------------------------------------
# bundled tasks

_ARITH = re.compile(r"^What is (\d+) ([+\-*]) (\d+)\? Give the final answer as a number\.$")


def _stem(item):
    """The question without answer instruction or options."""
    return item["instruction"].split("\n")[0].replace(" " + tasks_lib.NUMERIC_SUFFIX, "")


def _arith_value(a, op, b):
    return {"+": a + b, "-": a - b, "*": a * b}[op]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_generate_task_deterministic_and_well_formed(name):
    items = generate_task(name, 300, seed=7)
    assert items == generate_task(name, 300, seed=7)
    assert items != generate_task(name, 300, seed=8)
    assert generate_task(name, 120, seed=7) == items[:120]  # a prefix of a longer set
    assert len(items) == 300
    assert len({it["id"] for it in items}) == 300
    assert len({_stem(it) for it in items}) == 300  # no repeated question
    for it in items:
        assert set(it) - {"near_miss"} == {"id", "instruction", "answer", "task", "evaluator"}
        assert it["id"].startswith(name + "-")
        assert it["evaluator"] in (("cased",) if name in ("case", "reverse", "rewrite") else ("numeric", "choice"))
        if it["evaluator"] == "numeric":
            assert it["instruction"].endswith("Give the final answer as a number.")
        elif it["evaluator"] == "choice":
            assert it["instruction"].endswith("Answer with the letter (A, B, C or D).")
        assert score(it["answer"], it["answer"], it["evaluator"]) == 1.0
    if name == "mixed":
        assert set(Counter(it["task"] for it in items)) == {
            "arithmetic", "word_problems", "multiple_choice"}
    elif name == "rewrite":
        assert {it["task"] for it in items} == {"case", "reverse"}
    else:
        assert {it["task"] for it in items} == {name}


def test_reverse_and_rewrite_items():
    """`reverse`: the two words swapped, the phrase copied unchanged as the near miss; `rewrite`:
    case and reverse items half and half, each keeping its own part's answer and check."""
    for it in generate_task("reverse", 200, seed=2):
        kind, phrase = it["instruction"].split(": ")
        assert kind == "Write these words in reverse order" and len(phrase.split()) == 2
        assert it["answer"] == " ".join(phrase.split()[::-1]) and it["near_miss"] == phrase
        assert score(f"The answer is {it['answer']}.", it["answer"], "cased") == 1.0
        assert score(f"The answer is {phrase}.", it["answer"], "cased") == 0.0  # copied, not reversed
        assert score(f"The answer is {it['answer'].upper()}.", it["answer"], "cased") == 0.0
    items = generate_task("rewrite", 400, seed=5)
    parts = Counter(it["task"] for it in items)
    assert set(parts) == {"case", "reverse"} and min(parts.values()) > 170
    assert len({it["instruction"] for it in items}) == 400 and generate_task("rewrite", 100, seed=5) == items[:100]
    for it in items:
        assert ("near_miss" in it) == (it["task"] == "reverse") and it["evaluator"] == "cased"


def test_wrong_forms_are_every_other_rewrite_of_the_phrase():
    """Five wrong forms per case or reverse item (2 word orders x 3 letter cases, less the answer),
    every one scored wrong, the reverse item's near miss among them; none for other tasks."""
    item = {"task": "case", "instruction": "Write this phrase in capital letters: Slow Wagon", "answer": "SLOW WAGON"}
    assert sorted(wrong_forms(item)) == sorted(["slow wagon", "Slow Wagon", "WAGON SLOW", "wagon slow", "Wagon Slow"])
    for it in generate_task("rewrite", 100, seed=3):
        forms = wrong_forms(it)
        assert len(forms) == 5 == len(set(forms)) and it["answer"] not in forms
        assert all(score(f"The answer is {f}.", it["answer"], "cased") == 0.0 for f in forms)
        assert it.get("near_miss") is None or it["near_miss"] in forms
    assert wrong_forms(generate_task("arithmetic", 1, seed=0)[0]) is None


def test_case_items_ask_one_case_and_answer_in_it():
    asked = Counter()
    for it in generate_task("case", 400, seed=2):
        kind, phrase = it["instruction"].split(": ")
        assert phrase == phrase.title() and len(phrase.split()) == 2
        if kind == "Write this phrase in capital letters":
            assert it["answer"] == phrase.upper()
        else:
            assert kind == "Write this phrase in lowercase letters" and it["answer"] == phrase.lower()
        asked[kind] += 1
        assert score(f"The answer is {it['answer']}.", it["answer"], "cased") == 1.0
        assert score(f"The answer is {phrase}.", it["answer"], "cased") == 0.0  # copied, not rewritten
    assert min(asked.values()) > 150  # both cases, about evenly


def test_arithmetic_answers_are_correct():
    ops = Counter()
    for it in generate_task("arithmetic", 500, seed=1):
        m = _ARITH.match(it["instruction"])
        assert m, it["instruction"]
        a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
        ops[op] += 1
        assert int(it["answer"]) == _arith_value(a, op, b)
        if op in "+-":
            assert 10 <= a <= 99 and 10 <= b <= 99
        if op == "-":
            assert int(it["answer"]) > 0
        if op == "*":
            assert 2 <= a <= 9 and 10 <= b <= 99
        # a wrong number scores 0, the right one inside a sentence scores 1
        assert score(f"The answer is {it['answer']}.", it["answer"], "numeric") == 1.0
        assert score(str(int(it["answer"]) + 1), it["answer"], "numeric") == 0.0
    assert set(ops) == {"+", "-", "*"}


_WORD_OPS = (
    ("+", ("buys {b} more", "puts {b} more", "on Tuesday")),
    ("-", ("gives {b} of them", "lost {b} of them", "takes {b} of them away")),
    ("*", ("Each of the", "in each of the")),
)


def test_word_problem_answers_are_correct():
    seen = Counter()
    for it in generate_task("word_problems", 400, seed=2):
        text = it["instruction"]
        a, b = (int(x) for x in re.findall(r"\d+", text)[:2])
        ops = [op for op, cues in _WORD_OPS
               if any(cue.format(b=b) in text for cue in cues)]
        assert len(ops) == 1, text
        seen[ops[0]] += 1
        assert int(it["answer"]) == _arith_value(a, ops[0], b), text
        assert int(it["answer"]) > 0
        assert text.count("?") == 1
    assert set(seen) == {"+", "-", "*"}


def test_multiple_choice_answers_are_correct():
    facts = {q: correct for q, correct, _ in tasks_lib.FACT_BANK}
    kinds = Counter()
    letters = Counter()
    for it in generate_task("multiple_choice", 400, seed=3):
        lines = it["instruction"].split("\n")
        assert len(lines) == 6
        stem, options = lines[0], lines[1:5]
        assert [o[:3] for o in options] == ["A) ", "B) ", "C) ", "D) "]
        values = [o[3:] for o in options]
        assert len(set(values)) == 4
        chosen = values["ABCD".index(it["answer"])]
        letters[it["answer"]] += 1
        if stem in facts:
            kinds["fact"] += 1
            assert chosen == facts[stem]
        else:
            kinds["arith"] += 1
            m = re.match(r"^What is (\d+) ([+\-*]) (\d+)\?$", stem)
            assert m, stem
            assert int(chosen) == _arith_value(int(m.group(1)), m.group(2), int(m.group(3)))
        assert score(f"The answer is {it['answer']}.", it["answer"], "choice") == 1.0
        wrong = "ABCD"[("ABCD".index(it["answer"]) + 1) % 4]
        assert score(f"({wrong})", it["answer"], "choice") == 0.0
    # every bank fact used once at most, and all of them in a set this long
    assert kinds["fact"] == len(tasks_lib.FACT_BANK)
    assert set(letters) == set("ABCD")


@pytest.mark.parametrize("name", TASK_NAMES)
def test_task_splits_disjoint_and_sized(name):
    splits = task_splits(name, train=200, dev=30, test=50, seed=0)
    assert {k: len(v) for k, v in splits.items()} == {"train": 200, "dev": 30, "test": 50}
    stems = {k: {_stem(it) for it in v} for k, v in splits.items()}
    instr = {k: {it["instruction"] for it in v} for k, v in splits.items()}
    for a, b in (("train", "dev"), ("train", "test"), ("dev", "test")):
        assert not stems[a] & stems[b]
        assert not instr[a] & instr[b]
    # dev and test do not move when only the train size changes
    other = task_splits(name, train=10, dev=30, test=50, seed=0)
    assert other["dev"] == splits["dev"] and other["test"] == splits["test"]
    assert other["train"] == splits["train"][:10]


def test_task_errors():
    with pytest.raises(ValueError, match="unknown task 'algebra'"):
        generate_task("algebra", 3, 0)
    with pytest.raises(ValueError, match="must be >= 0"):
        task_splits("arithmetic", train=-1, dev=0, test=0)
    assert generate_task("arithmetic", 0, 0) == []


# ---------------------------------------------------------------------------------------
# sources: bundled and local files

_ROWS = [{"question": f"What is {i} + 1?", "solution": f"#### {i + 1}", "uid": f"q{i}",
          "topic": "add"} for i in range(6)]


def test_bundled_source_dict_and_configdict():
    spec = {"kind": "bundled", "task": "word_problems", "train": 20, "dev": 5, "test": 7,
            "seed": 4}
    out = load_instructions(spec)
    assert out == task_splits("word_problems", train=20, dev=5, test=7, seed=4)
    ml_collections = pytest.importorskip("ml_collections")
    assert load_instructions(ml_collections.ConfigDict(spec)) == out
    with pytest.raises(DataError, match="unknown bundled task 'chess'"):
        load_instructions({"kind": "bundled", "task": "chess"})


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def test_local_jsonl_field_mapping(tmp_path):
    path = _write_jsonl(tmp_path / "train.jsonl", _ROWS)
    out = load_instructions({"kind": "local", "path": path, "instruction_field": "question",
                             "answer_field": "solution", "evaluator": "numeric"})
    assert list(out) == ["train"]
    recs = out["train"]
    assert len(recs) == 6
    assert recs[2] == {"id": "train-2", "instruction": "What is 2 + 1?",
                       "answer": "#### 3", "evaluator": "numeric"}
    assert score("It is 3", recs[2]["answer"], recs[2]["evaluator"]) == 1.0
    # no answer field: no answers; an id field and a template
    out = load_instructions({"kind": "local", "path": path, "id_field": "uid",
                             "instruction_template": "[{topic}] {question}"})
    assert out["train"][0] == {"id": "q0", "instruction": "[add] What is 0 + 1?"}


def test_local_json_and_parquet(tmp_path):
    datasets = pytest.importorskip("datasets")
    (tmp_path / "list.json").write_text(json.dumps(_ROWS))
    (tmp_path / "nested.json").write_text(json.dumps({"data": _ROWS}))
    datasets.Dataset.from_list(_ROWS).to_parquet(str(tmp_path / "rows.parquet"))
    fields = {"instruction_field": "question", "answer_field": "solution"}
    from_list = load_instructions({"kind": "local", "path": str(tmp_path / "list.json"),
                                   **fields})["train"]
    from_nested = load_instructions({"kind": "local", "path": str(tmp_path / "nested.json"),
                                     "json_field": "data", **fields})["train"]
    from_parquet = load_instructions({"kind": "local",
                                      "path": str(tmp_path / "rows.parquet"),
                                      **fields})["train"]
    assert from_list == from_nested == from_parquet
    assert [r["instruction"] for r in from_list] == [r["question"] for r in _ROWS]


def test_local_split_files_and_holdout(tmp_path):
    datasets = pytest.importorskip("datasets")
    train = _write_jsonl(tmp_path / "train.jsonl", _ROWS[:4])
    datasets.Dataset.from_list(_ROWS[4:]).to_parquet(str(tmp_path / "test.parquet"))
    out = load_instructions({"kind": "local", "instruction_field": "question",
                             "split_files": {"train": train,
                                             "test": str(tmp_path / "test.parquet")}})
    assert {k: len(v) for k, v in out.items()} == {"train": 4, "test": 2}
    assert out["test"][0]["instruction"] == "What is 4 + 1?"
    assert out["test"][0]["id"] == "test-0"

    one = _write_jsonl(tmp_path / "all.jsonl", _ROWS)
    spec = {"kind": "local", "path": one, "instruction_field": "question", "dev": 1,
            "test": 2, "seed": 3}
    carved = load_instructions(spec)
    assert {k: len(v) for k, v in carved.items()} == {"train": 3, "dev": 1, "test": 2}
    ids = [r["id"] for v in carved.values() for r in v]
    assert sorted(ids) == sorted(f"train-{i}" for i in range(6))
    assert load_instructions(spec) == carved
    with pytest.raises(DataError, match="cannot hold out"):
        load_instructions({**spec, "test": 6})


def test_local_errors(tmp_path):
    missing = str(tmp_path / "nope.jsonl")
    with pytest.raises(DataError, match="data file not found: .*nope.jsonl"):
        load_instructions({"kind": "local", "path": missing})
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(DataError, match="is empty"):
        load_instructions({"kind": "local", "path": str(empty)})
    (tmp_path / "empty.json").write_text("[]")
    with pytest.raises(DataError, match="is empty"):
        load_instructions({"kind": "local", "path": str(tmp_path / "empty.json")})
    path = _write_jsonl(tmp_path / "rows.jsonl", _ROWS)
    with pytest.raises(DataError) as info:
        load_instructions({"kind": "local", "path": path, "instruction_field": "prompt"})
    msg = str(info.value)
    assert "instruction_field 'prompt' not found" in msg
    assert "['question', 'solution', 'topic', 'uid']" in msg
    with pytest.raises(DataError, match="answer_field 'label' not found.*'question'"):
        load_instructions({"kind": "local", "path": path, "instruction_field": "question",
                           "answer_field": "label"})
    with pytest.raises(DataError, match="instruction_template field 'options' not found"):
        load_instructions({"kind": "local", "path": path,
                           "instruction_template": "{question} {options}"})
    holes = _write_jsonl(tmp_path / "holes.jsonl", [{"question": "q"}, {"question": None}])
    with pytest.raises(DataError, match="row 1 of .*holes.jsonl.* has an empty instruction"):
        load_instructions({"kind": "local", "path": holes, "instruction_field": "question"})
    (tmp_path / "rows.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="cannot tell the format"):
        load_instructions({"kind": "local", "path": str(tmp_path / "rows.csv")})
    bad = tmp_path / "bad.jsonl"
    bad.write_text("{not json\n")
    with pytest.raises(DataError, match="could not read .*bad.jsonl.*as json"):
        load_instructions({"kind": "local", "path": str(bad)})
    with pytest.raises(DataError, match="needs 'path' or 'split_files'"):
        load_instructions({"kind": "local"})
    with pytest.raises(DataError, match="unknown data source kind 'ftp'.*bundled, local"):
        load_instructions({"kind": "ftp"})
    with pytest.raises(DataError, match="unknown data source kind None"):
        load_instructions({})
    assert issubclass(DataError, ValueError)


# ---------------------------------------------------------------------------------------
# sources: Hugging Face and TFDS (no network: the loaders are monkeypatched)


def test_hf_source_call_and_mapping(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(*args, **kwargs):
        calls.append((args, kwargs))
        rows = [{"question": "q-" + kwargs.get("split", "all"), "answer": "#### 5"}]
        if "split" in kwargs:
            return datasets.Dataset.from_list(rows)
        return datasets.DatasetDict({"train": datasets.Dataset.from_list(rows),
                                     "validation": datasets.Dataset.from_list(rows)})

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    spec = {"kind": "hf", "name": "gsm8k", "config": "main",
            "split": {"train": "train", "test": "test"}, "instruction_field": "question",
            "answer_field": "answer", "evaluator": "numeric", "revision": "abc"}
    out = load_instructions(spec)
    assert calls == [(("gsm8k", "main"), {"revision": "abc", "split": "train"}),
                     (("gsm8k", "main"), {"revision": "abc", "split": "test"})]
    assert out["test"] == [{"id": "test-0", "instruction": "q-test", "answer": "#### 5",
                            "evaluator": "numeric"}]
    calls.clear()
    out = load_instructions({"kind": "hf", "name": "org/data", "split": "validation",
                             "instruction_field": "question"})
    assert calls == [(("org/data",), {"split": "validation"})]
    assert list(out) == ["dev"]
    calls.clear()
    out = load_instructions({"kind": "hf", "name": "org/data", "instruction_field": "question"})
    assert calls == [(("org/data",), {})]
    assert sorted(out) == ["dev", "train"]
    with pytest.raises(DataError, match="instruction_field 'prompt' not found.*'question'"):
        load_instructions({"kind": "hf", "name": "x", "split": "train",
                           "instruction_field": "prompt"})


def test_hf_source_missing_dataset(monkeypatch):
    datasets = pytest.importorskip("datasets")

    def missing(*args, **kwargs):
        raise datasets.exceptions.DatasetNotFoundError(f"Dataset '{args[0]}' doesn't exist")

    monkeypatch.setattr(datasets, "load_dataset", missing)
    with pytest.raises(DataError) as info:
        load_instructions({"kind": "hf", "name": "nobody/nothing", "config": "main",
                           "split": "train"})
    msg = str(info.value)
    assert "could not load Hugging Face dataset 'nobody/nothing' (config 'main')" in msg
    assert "DatasetNotFoundError" in msg and "kind='local'" in msg
    with pytest.raises(DataError, match="needs 'name'"):
        load_instructions({"kind": "hf"})


def test_hf_source_missing_dataset_real_offline():
    datasets = pytest.importorskip("datasets")
    if not datasets.config.HF_HUB_OFFLINE:
        pytest.skip("only run where the Hub is off (conftest sets HF_HUB_OFFLINE=1)")
    with pytest.raises(DataError, match="could not load Hugging Face dataset 'nobody/nothing'"):
        load_instructions({"kind": "hf", "name": "nobody/nothing", "split": "train"})


def test_tfds_source(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")
    calls = []

    def fake_load(name, **kwargs):
        calls.append((name, kwargs))
        return [{"question": b"How many?", "answer": b"#### 4", "idx": np.int64(i),
                 "tags": np.array([b"a", b"b"])} for i in range(3)]

    monkeypatch.setattr(tfds, "load", fake_load)
    out = load_instructions({"kind": "tfds", "name": "gsm8k", "data_dir": str(tmp_path),
                             "split": {"train": "train", "test": "test[:3]"},
                             "instruction_field": "question", "answer_field": "answer",
                             "id_field": "idx"})
    assert calls == [("gsm8k", {"split": "train", "data_dir": str(tmp_path),
                                "download": False}),
                     ("gsm8k", {"split": "test[:3]", "data_dir": str(tmp_path),
                                "download": False})]
    assert out["test"][1] == {"id": "1", "instruction": "How many?", "answer": "#### 4"}
    assert isinstance(out["train"][0]["instruction"], str)
    out = load_instructions({"kind": "tfds", "name": "gsm8k", "instruction_template":
                             "{question} {tags}"})
    assert out["train"][0]["instruction"] == "How many? ['a', 'b']"
    with pytest.raises(DataError, match="instruction_field 'prompt' not found.*'question'"):
        load_instructions({"kind": "tfds", "name": "gsm8k", "instruction_field": "prompt"})


def test_tfds_source_errors(monkeypatch, tmp_path):
    tfds = pytest.importorskip("tensorflow_datasets")

    def not_prepared(name, **kwargs):
        raise AssertionError(f"Dataset {name}: could not find data in {kwargs['data_dir']}.")

    monkeypatch.setattr(tfds, "load", not_prepared)
    with pytest.raises(DataError, match=r"could not load TFDS dataset 'gsm8k'.*tfds build"):
        load_instructions({"kind": "tfds", "name": "gsm8k", "data_dir": str(tmp_path)})
    monkeypatch.setattr(tfds, "load", lambda name, **kw: [])
    with pytest.raises(DataError, match="is empty"):
        load_instructions({"kind": "tfds", "name": "gsm8k"})


# ---------------------------------------------------------------------------------------
# sampling and prompt lengths

_RECORDS = [{"id": str(i), "instruction": f"q{i}"} for i in range(50)]


def _ids(recs):
    return [r["id"] for r in recs]


def test_sample_faithful_same_every_iteration():
    draws = [_ids(sample_instructions(_RECORDS, 20, iteration=t, seed=5, mode="faithful"))
             for t in range(4)]
    assert all(d == draws[0] for d in draws)
    assert len(set(draws[0])) == 20  # without replacement
    other = _ids(sample_instructions(_RECORDS, 20, iteration=0, seed=6, mode="faithful"))
    assert other != draws[0]


def test_sample_fixed_fresh_per_iteration_and_reproducible():
    draws = [_ids(sample_instructions(_RECORDS, 20, iteration=t, seed=5, mode="fixed"))
             for t in range(4)]
    assert len({tuple(d) for d in draws}) == 4
    assert all(len(set(d)) == 20 for d in draws)
    again = _ids(sample_instructions(_RECORDS, 20, iteration=2, seed=5, mode="fixed"))
    assert again == draws[2]
    assert _ids(sample_instructions(_RECORDS, 20, iteration=2, seed=6, mode="fixed")) != again
    # a draw of everything is a permutation
    full = _ids(sample_instructions(_RECORDS, 50, iteration=1, seed=5, mode="fixed"))
    assert sorted(full) == sorted(_ids(_RECORDS))


def test_sample_errors_and_repeats():
    with pytest.raises(DataError, match="only 50"):
        sample_instructions(_RECORDS, 51, iteration=0, seed=0, mode="faithful")
    with pytest.raises(DataError, match="unknown sampling mode 'random'"):
        sample_instructions(_RECORDS, 5, iteration=0, seed=0, mode="random")
    with pytest.raises(DataError, match="empty split"):
        sample_instructions([], 5, iteration=0, seed=0, mode="fixed")
    assert sample_instructions(_RECORDS, 0, iteration=0, seed=0, mode="fixed") == []
    many = sample_instructions(_RECORDS, 120, iteration=0, seed=0, mode="fixed",
                               allow_repeats=True)
    counts = Counter(_ids(many))
    assert len(many) == 120 and set(counts.values()) <= {2, 3} and len(counts) == 50


def test_check_prompt_lengths():
    recs = [{"id": "a", "instruction": "one two three"},
            {"id": "b", "instruction": "one"},
            {"id": "c", "instruction": "one two three four five"}]
    assert _ids(check_prompt_lengths(recs, str.split, 3)) == ["c"]
    assert _ids(check_prompt_lengths(recs, str.split, 2)) == ["a", "c"]
    assert check_prompt_lengths(recs, str.split, 5) == []

    class Encoding:
        def __init__(self, ids):
            self.input_ids = ids

    assert _ids(check_prompt_lengths(recs, lambda s: Encoding(list(s)), 4)) == ["a", "c"]
    assert _ids(check_prompt_lengths(recs, lambda s: {"input_ids": s.split()}, 1)) == ["a", "c"]


def test_bundled_records_flow_through_sampling():
    splits = load_instructions({"kind": "bundled", "task": "mixed", "train": 40, "dev": 4,
                                "test": 4, "seed": 1})
    picked = sample_instructions(splits["train"], 10, iteration=3, seed=0, mode="fixed")
    assert all(r in splits["train"] for r in picked)
    assert data_lib.KINDS == ("bundled", "local", "hf", "tfds", "paper")


def test_tfds_source_real_unprepared_dir(tmp_path):
    pytest.importorskip("tensorflow_datasets")
    with pytest.raises(DataError, match=r"could not load TFDS dataset 'mnist' in .*download=True"):
        load_instructions({"kind": "tfds", "name": "mnist", "data_dir": str(tmp_path),
                           "split": "train", "instruction_field": "image"})


TINY_TFDS_BUILDER = '''
import sys
import numpy as np
import tensorflow_datasets as tfds


class SpartaTinyQa(tfds.core.GeneratorBasedBuilder):
    """Questions with answers, built with TFDS's own builder API (no download)."""

    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(
            {"question": tfds.features.Text(), "answer": tfds.features.Text(), "idx": tfds.features.Scalar(np.int64)}))

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples(0, 12), "validation": self._generate_examples(100, 5)}

    def _generate_examples(self, start, n):
        for i in range(start, start + n):
            yield i, {"question": f"What is {i} + 1?", "answer": str(i + 1), "idx": i}


SpartaTinyQa(data_dir=sys.argv[1], file_format="array_record").download_and_prepare()
'''


@pytest.mark.e2e
def test_tfds_source_reads_a_real_locally_built_dataset(tmp_path):
    """A dataset prepared with TFDS's builder API in another process (so this one knows only its
    files), loaded through kind="tfds" with a field mapping and a split mapping, no TensorFlow."""
    import subprocess
    import sys

    script = tmp_path / "build.py"
    script.write_text(TINY_TFDS_BUILDER)
    built = subprocess.run([sys.executable, str(script), str(tmp_path / "tfds")], capture_output=True, text=True,
                           timeout=300)
    assert built.returncode == 0, built.stderr[-3000:]
    out = load_instructions({"kind": "tfds", "name": "sparta_tiny_qa", "data_dir": str(tmp_path / "tfds"),
                             "split": {"train": "train", "dev": "validation[:3]"},
                             "instruction_field": "question", "answer_field": "answer", "id_field": "idx",
                             "evaluator": "numeric"})
    assert sorted(out) == ["dev", "train"] and len(out["train"]) == 12 and len(out["dev"]) == 3
    assert sorted(int(r["id"]) for r in out["train"]) == list(range(12))
    for r in out["train"] + out["dev"]:
        assert r["instruction"] == f"What is {r['id']} + 1?" and r["answer"] == str(int(r["id"]) + 1)
        assert r["evaluator"] == "numeric"
    assert {int(r["id"]) for r in out["dev"]} <= set(range(100, 105))
    with pytest.raises(DataError, match=r"could not load TFDS dataset 'sparta_tiny_qa'.*split 'test'"):
        load_instructions({"kind": "tfds", "name": "sparta_tiny_qa", "data_dir": str(tmp_path / "tfds"),
                           "split": "test", "instruction_field": "question"})


def test_hf_source_reads_a_local_dataset_folder(tmp_path):
    """kind="hf" with a local folder of data files: the real `datasets.load_dataset`, no network."""
    folder = tmp_path / "qa"
    folder.mkdir()
    for split, start, n in (("train", 0, 6), ("test", 50, 3)):
        (folder / f"{split}.jsonl").write_text("".join(
            json.dumps({"q": f"What is {i} * 2?", "a": str(2 * i), "key": f"k{i}"}) + "\n" for i in range(start, start + n)))
    out = load_instructions({"kind": "hf", "name": str(folder), "instruction_field": "q", "answer_field": "a",
                             "id_field": "key", "evaluator": "numeric"})
    assert sorted(out) == ["test", "train"] and len(out["train"]) == 6 and len(out["test"]) == 3
    assert out["test"][0] == {"id": "k50", "instruction": "What is 50 * 2?", "answer": "100", "evaluator": "numeric"}
    dev = load_instructions({"kind": "hf", "name": str(folder), "split": {"dev": "test"}, "instruction_field": "q"})
    assert [r["instruction"] for r in dev["dev"]] == [f"What is {i} * 2?" for i in (50, 51, 52)]
