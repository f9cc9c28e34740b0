"""`python -m sparta_jax.score`: items dumped, answers made elsewhere, scored with the task's
evaluator. In process (`score.main`) except one subprocess test of the exit status.

The check the paper's tasks must pass (on the released format samples): the references written
as a chat model would write them score 1.0, and the same references shuffled across items score
no better than chance (an answer is credited only where the shuffled reference is the item's own)."""
import json
import os
import subprocess
import sys

import pytest

from sparta_jax import evaluation, score

FORMATS = os.path.join(os.path.dirname(__file__), "data", "paper_formats")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CONFIG = '''import ml_collections


def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.data = ml_collections.ConfigDict({data!r})
    if arg:
        c.data.task = arg
    return c
'''


def write_config(tmp_path, data, name="config.py"):
    path = tmp_path / name
    path.write_text(CONFIG.format(data=data))
    return str(path)


def write_lines(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


def dump(tmp_path, config, split, capsys=None):
    out = tmp_path / f"items-{split}.jsonl"
    assert score.main([f"--config={config}", f"--split={split}", f"--dump={out}"]) == 0
    return [json.loads(line) for line in out.read_text().splitlines()]


def run_score(tmp_path, config, split, answers, *extra):
    """(exit status, scores JSON or None)."""
    out = tmp_path / "scores.json"
    if out.exists():
        out.unlink()
    path = write_lines(tmp_path / "answers.jsonl", answers)
    status = score.main([f"--config={config}", f"--split={split}", f"--answers={path}", f"--out={out}", *extra])
    return status, (json.loads(out.read_text()) if out.exists() else None)


NORMAD_REPLIES = {"yes": "Yes, this is acceptable because it follows the etiquette described.",
                  "no": "No. It goes against the etiquette described above.",
                  "neutral": "Neutral: the background does not cover this situation."}


def chat_answer(evaluator, reference):
    """The reference the way a chat model writes a reply."""
    if evaluator == "numeric":
        return f"Step 1: work out each part.\nStep 2: put them together.\n\nThe answer is {reference}."
    if evaluator == "boxed":
        return f"We simplify in 2 steps.\n\nTherefore, the final answer is $\\boxed{{{reference}}}$."
    if evaluator == "choice":
        return f"Option A breaks the first constraint, so it is out.\n\nThe answer is ({reference})."
    if evaluator == "normad":
        return NORMAD_REPLIES[reference]
    if evaluator == "com2":
        return f"Given the context, I would say: {reference}"
    raise AssertionError(evaluator)


# (task, extra data keys, split): every verifiable task in the format samples, on the split
# that holds the most items with references.
VERIFIABLE = [
    ("gsm8k", {}, "test"),
    ("math_easy", {"dev": 0}, "train"),
    ("math_medium", {"dev": 0}, "train"),
    ("normad_country", {}, "train"),
    ("normad_country", {}, "test"),
    ("kcross", {"dev": 0, "test": 0}, "train"),
    ("com2", {"dev": 0, "test": 0}, "train"),
]


@pytest.mark.parametrize("task, extra, split", VERIFIABLE)
def test_references_score_one_and_shuffled_references_chance(tmp_path, task, extra, split):
    config = write_config(tmp_path, {"kind": "paper", "task": task, "root": FORMATS, **extra})
    items = dump(tmp_path, config, split)
    assert len(items) >= 2 and all(set(i) == {"id", "prompt", "reference"} for i in items)
    evaluator = paper_evaluator(task)
    right = [{"id": i["id"], "answer": chat_answer(evaluator, i["reference"])} for i in items]
    status, result = run_score(tmp_path, config, split, right)
    assert status == 0 and result["accuracy"] == 1.0 and result["n"] == len(items)
    assert result["n_unparsed"] == 0 and result["n_no_reference"] == 0
    # Each item answered with the next item's reference (a derangement).
    refs = [i["reference"] for i in items]
    shifted = refs[1:] + refs[:1]
    wrong = [{"id": i["id"], "answer": chat_answer(evaluator, r)} for i, r in zip(items, shifted)]
    status, result = run_score(tmp_path, config, split, wrong)
    same = [evaluation.reference_value(a, evaluator) == evaluation.reference_value(b, evaluator)
            for a, b in zip(refs, shifted)]
    assert status == 0 and result["accuracy"] <= sum(same) / len(same)
    assert [s for s, own in zip(result["scores"].values(), same) if not own] == [0] * same.count(False)


def paper_evaluator(task):
    from sparta_jax import paper_tasks

    return paper_tasks.get_task(task).evaluator


def test_normad_with_mixed_labels(tmp_path):
    """Normad in the released layout with all three labels, so shuffling changes the label."""
    labels = ["yes", "no", "neutral", "yes", "no", "neutral"]
    rows = {str(i): {"instruction": f"Story {i}. Is it acceptable?.\n Choose from:'Yes', 'No', 'Neutral'", "label": lab}
            for i, lab in enumerate(labels)}
    (tmp_path / "culture").mkdir()
    (tmp_path / "culture" / "country_dataset.json").write_text(json.dumps({"train": rows, "test": rows, "valid": rows}))
    config = write_config(tmp_path, {"kind": "paper", "task": "normad_country", "root": str(tmp_path)})
    items = dump(tmp_path, config, "test")
    right = [{"id": i["id"], "answer": NORMAD_REPLIES[i["reference"]]} for i in items]
    assert run_score(tmp_path, config, "test", right)[1]["accuracy"] == 1.0
    wrong = [{"id": i["id"], "answer": NORMAD_REPLIES[labels[(k + 1) % 6]]} for k, i in enumerate(items)]
    assert run_score(tmp_path, config, "test", wrong)[1]["accuracy"] == 0.0
    # The authors' rule on other wordings: only the keyword counts (no keyword: neutral).
    # labels:  yes                       no              neutral  yes     no          neutral
    replies = ["Absolutely, it's fine.", "I think not.", "Yes.", "Nope", "NEUTRAL", "Sure"]
    result = run_score(tmp_path, config, "test", [{"id": i["id"], "answer": a} for i, a in zip(items, replies)])[1]
    assert list(result["scores"].values()) == [0, 1, 0, 0, 0, 1]


def test_medqa_in_the_assumed_layout(tmp_path):
    """MedQA has no released sample: option dicts in medqa/test.jsonl, written here by hand."""
    rows = [{"question": f"Question {i}?", "options": {k: f"{k} text {i}" for k in "ABCD"}, "answer_idx": letter}
            for i, letter in enumerate("ABCD")]
    (tmp_path / "medqa").mkdir()
    for split in ("train", "test"):
        write_lines(tmp_path / "medqa" / f"{split}.jsonl", rows)
    config = write_config(tmp_path, {"kind": "paper", "task": "medqa", "root": str(tmp_path)})
    items = dump(tmp_path, config, "test")
    assert items[1]["prompt"].splitlines()[1] == "A) A text 1" and items[1]["reference"] == "B"
    right = [{"id": i["id"], "answer": chat_answer("choice", i["reference"])} for i in items]
    assert run_score(tmp_path, config, "test", right)[1]["accuracy"] == 1.0
    wrong = [{"id": i["id"], "answer": chat_answer("choice", "ABCD"[(k + 1) % 4])} for k, i in enumerate(items)]
    assert run_score(tmp_path, config, "test", wrong)[1]["accuracy"] == 0.0


def test_prints_accuracy_with_wilson_interval(tmp_path, capsys):
    config = write_config(tmp_path, {"kind": "paper", "task": "gsm8k", "root": FORMATS})
    items = dump(tmp_path, config, "test")
    capsys.readouterr()
    answers = [{"id": items[0]["id"], "answer": "The answer is 18."}, {"id": items[1]["id"], "answer": "#### 4"},
               {"id": items[2]["id"], "answer": "I don't know."}]
    status, result = run_score(tmp_path, config, "test", answers)
    lo, hi = evaluation.wilson_interval(1, 3)
    assert status == 0
    assert capsys.readouterr().out == (f"test: accuracy 0.3333 (1/3), 95% Wilson interval [{lo:.4f}, {hi:.4f}]; "
                                       "1 answers unreadable (wrong)\n")
    assert result["scores"] == {"test-0": 1, "test-1": 0, "test-2": 0}
    assert result["ci95"] == pytest.approx([lo, hi]) and result["evaluators"] == ["numeric"]
    assert result["split"] == "test" and result["by_task"]["gsm8k"]["n"] == 3


def test_items_without_references_are_counted_and_named(tmp_path, capsys):
    """GSM8K's released train questions have no answers: dev (held out of them) scores as wrong."""
    config = write_config(tmp_path, {"kind": "paper", "task": "gsm8k", "root": FORMATS})
    items = dump(tmp_path, config, "dev")
    assert [i["reference"] for i in items] == [None]
    capsys.readouterr()
    status, result = run_score(tmp_path, config, "dev", [{"id": items[0]["id"], "answer": "72"}])
    assert status == 0 and result["n"] == 1 and result["accuracy"] == 0.0 and result["n_no_reference"] == 1
    err = capsys.readouterr().err
    assert "warning: split 'dev': 1 of 1 records have no reference answer" in err


def test_config_arg_and_overrides(tmp_path):
    config = write_config(tmp_path, {"kind": "paper", "task": "gsm8k", "root": "/nowhere"})
    items_path = tmp_path / "items.jsonl"
    argv = [f"--config={config}:kcross", "--split=train", f"--dump={items_path}",
            f"--config.data.root={FORMATS}", "--config.data.dev=0", "--config.data.test=0"]
    assert score.main(argv) == 0
    assert [json.loads(line)["reference"] for line in items_path.read_text().splitlines()] == ["D", "A", "D"]


def test_log_likelihood_split(tmp_path, monkeypatch, capsys):
    datasets = pytest.importorskip("datasets")
    row = {"question": "Are all dogs dogs?",
           "mc1_targets": {"choices": ["Yes, all dogs are dogs.", "No."], "labels": [1, 0]},
           "mc2_targets": {"choices": ["Yes, all dogs are dogs.", "Yes.", "No."], "labels": [1, 1, 0]}}
    monkeypatch.setattr(datasets, "load_dataset", lambda *a, **kw: [row, row])
    config = write_config(tmp_path, {"kind": "hf", "task": "truthfulqa"})
    items = dump(tmp_path, config, "test")
    assert items[0]["prompt"] == "Q: Are all dogs dogs?\nA:"
    assert items[0]["reference"] == {"mc1_targets": row["mc1_targets"], "mc2_targets": row["mc2_targets"]}
    capsys.readouterr()
    answers = [{"id": "test-0", "logprobs": {"mc1": [-1.0, -4.0], "mc2": [-1.0, -1.0, -30.0]}},
               {"id": "test-1", "logprobs": {"mc1": [-4.0, -1.0], "mc2": [-30.0, -30.0, -1.0]}}]
    status, result = run_score(tmp_path, config, "test", answers)
    assert status == 0 and result["scores"] == {"test-0": 1, "test-1": 0} and result["accuracy"] == 0.5
    assert result["mc2_scores"]["test-0"] == pytest.approx(1.0) and result["mc2_scores"]["test-1"] < 1e-9
    assert capsys.readouterr().out.startswith("test: MC1 0.5000 (1/2), 95% Wilson interval")
    bad = [answers[0], {"id": "test-1", "logprobs": {"mc1": [-1.0], "mc2": [-1.0, -2.0, -3.0]}}]
    assert run_score(tmp_path, config, "test", bad)[0] == 2
    assert "1 log-probabilities for 2 options" in capsys.readouterr().err
    texts = [{"id": "test-0", "answer": "A"}, {"id": "test-1", "answer": "B"}]
    assert run_score(tmp_path, config, "test", texts)[0] == 2
    assert "needs \"logprobs\"" in capsys.readouterr().err


# ---------------------------------------------------------------------------------------
# errors a user can cause: one line on stderr, status 2


@pytest.fixture
def gsm8k_config(tmp_path):
    return write_config(tmp_path, {"kind": "paper", "task": "gsm8k", "root": FORMATS})


RIGHT = [{"id": f"test-{i}", "answer": a} for i, a in enumerate(("18", "3", "70000"))]


@pytest.mark.parametrize("lines, message", [
    (RIGHT[:2], "1 of the 3 items of split 'test' have no answer (ids 'test-2')"),
    (RIGHT + [{"id": "test-9", "answer": "1"}], "1 answer ids are not items of split 'test' (ids 'test-9')"),
    (RIGHT + [{"id": "test-0", "answer": "1"}], "line 4: id 'test-0' already answered on line 1"),
    (RIGHT[:2] + [{"id": "test-2", "answer": 70000}], "line 3: \"answer\" must be a string"),
    (RIGHT[:2] + [{"answer": "1"}], "line 3: expected an object with an \"id\""),
    (RIGHT[:2] + [{"id": ["x"], "answer": "1"}], "\"id\" must be a string or an integer"),
])
def test_answer_errors(tmp_path, capsys, gsm8k_config, lines, message):
    status, result = run_score(tmp_path, gsm8k_config, "test", lines)
    err = capsys.readouterr().err
    assert status == 2 and result is None
    assert err.startswith("python -m sparta_jax.score: error: --answers:") and message in err
    assert err.count("\n") == 1


def _fails(argv, capsys, message):
    assert score.main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_cli_errors(tmp_path, capsys, gsm8k_config):
    answers = write_lines(tmp_path / "a.jsonl", RIGHT)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(RIGHT[0]) + "\n{\"id\": \"test-1\", \"answer\": \n")
    _fails([f"--config={gsm8k_config}", f"--answers={bad_json}"], capsys, "line 2 is not valid JSON")
    _fails([f"--config={gsm8k_config}", f"--answers={tmp_path / 'none.jsonl'}"], capsys, "--answers: cannot read")
    _fails([f"--config={gsm8k_config}", "--split=valid", f"--answers={answers}"], capsys,
           "--split: the data source has no split 'valid' (it has dev, test, train)")
    _fails([f"--config={tmp_path / 'missing.py'}", f"--answers={answers}"], capsys, "missing.py not found")
    _fails([f"--config={gsm8k_config}"], capsys, "one of the arguments --answers --dump is required")
    _fails([f"--config={gsm8k_config}", f"--answers={answers}", f"--dump={answers}"], capsys, "not allowed with")
    _fails([f"--config={gsm8k_config}", f"--answers={answers}", "--config.data.nosuch.key=1"], capsys,
           "cannot set data.nosuch.key")
    _fails([f"--config={gsm8k_config}", f"--answers={answers}", "--config.data.root"], capsys,
           "write overrides as --config.KEY=VALUE")
    _fails([f"--config={gsm8k_config}", f"--answers={answers}", "--config.data.root=/nowhere"], capsys,
           "data root /nowhere is not a folder")
    broken = tmp_path / "broken.py"
    broken.write_text("def get_config(:\n")
    _fails([f"--config={broken}", f"--answers={answers}"], capsys, "cannot load")
    nodata = tmp_path / "nodata.py"
    nodata.write_text("import ml_collections\n\ndef get_config():\n    return ml_collections.ConfigDict()\n")
    _fails([f"--config={nodata}", f"--answers={answers}"], capsys, "has no 'data' section")
    _fails([f"--config={gsm8k_config}", f"--answers={answers}", f"--out={tmp_path / 'no' / 'dir.json'}"], capsys,
           "--out: cannot write")


def test_open_ended_split_is_refused(tmp_path, capsys):
    (tmp_path / "alpaca").mkdir()
    (tmp_path / "alpaca" / "alpaca_data_processed.json").write_text(json.dumps(["Name a color.", "Say hi.", "Count."]))
    config = write_config(tmp_path, {"kind": "paper", "task": "alpaca", "root": str(tmp_path), "dev": 0, "test": 0})
    answers = [{"id": f"train-{i}", "answer": "ok"} for i in range(3)]
    assert run_score(tmp_path, config, "train", answers)[0] == 2
    assert "open-ended items (evaluator 'judged')" in capsys.readouterr().err


@pytest.mark.e2e
def test_exit_status_from_a_subprocess(tmp_path):
    config = write_config(tmp_path, {"kind": "paper", "task": "gsm8k", "root": FORMATS})
    answers = write_lines(tmp_path / "a.jsonl", RIGHT)
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    def score_cli(split):
        return subprocess.run([sys.executable, "-m", "sparta_jax.score", f"--config={config}", f"--split={split}",
                               f"--answers={answers}"], check=False, capture_output=True, text=True, cwd=REPO,
                              env=env, timeout=120)

    ok = score_cli("test")
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.startswith("test: accuracy 1.0000 (3/3), 95% Wilson interval [0.4385, 1.0000]")
    failed = score_cli("nope")
    assert failed.returncode == 2 and failed.stdout == ""
    assert failed.stderr == ("python -m sparta_jax.score: error: --split: the data source has no split 'nope' "
                             "(it has dev, test, train)\n")
