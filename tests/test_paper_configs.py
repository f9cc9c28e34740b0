"""configs/paper.py (the paper's twelve tasks, TPU and cpu forms), the evaluation check that refuses
a run which cannot evaluate (sparta_jax/eval_check.py), and TruthfulQA's MC scoring in the loop's
evaluation (member_eval: options' log-likelihoods, MC1 / MC2)."""
import json
import math
import os

import ml_collections
import numpy as np
import pytest

from sparta_jax import eval_check, member_eval
from sparta_jax.config_check import ConfigError, validate_config
from sparta_jax.config_files import load_config
from sparta_jax.data import load_instructions
from sparta_jax.methods import METHODS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PAPER = os.path.join(REPO, "configs", "paper.py")
FORMATS = os.path.join(REPO, "tests", "data", "paper_formats")
TASKS = ("gsm8k", "math_easy", "math_medium", "math_hard", "medqa", "normad_country", "normad_value",
         "normad_rule_of_thumb", "kcross", "com2", "truthfulqa", "alpaca")
RUNNABLE = TASKS
NEW_TOKENS = dict(gsm8k=512, math_easy=512, math_medium=512, math_hard=512, medqa=256, normad_country=128,
                  normad_value=128, normad_rule_of_thumb=128, kcross=256, com2=128, alpaca=512,
                  truthfulqa=512)  # TruthfulQA's is never used: its options are scored, nothing is generated
PUBLIC_TEST_SIZES = dict(gsm8k=1319, math_easy=1331, math_medium=1131, math_hard=2538, medqa=1273, normad_country=263,
                         truthfulqa=717)


def paper(arg):
    return load_config(f"{PAPER}:{arg}")


# ------------------------------------------------------------------------------------- configs
@pytest.mark.parametrize("task", RUNNABLE)
def test_tpu_form_is_the_papers_setup_and_passes_the_config_check(task):
    c = paper(task)
    validate_config(c)
    assert eval_check.evaluation_problem(c) is None
    assert (c.tribe.members, c.tribe.lora_rank, c.tribe.dtype, c.mesh.tensor) == (10, 64, "bfloat16", 4)
    assert (c.iterations, c.instructions_per_iteration, c.mode) == (8, 1000, "faithful")
    assert c.data.task == task and c.data.kind in ("paper", "hf")
    assert c.evaluation.enabled and c.evaluation.temperature == 0.0  # greedy
    assert c.evaluation.max_new_tokens == NEW_TOKENS[task] > 32
    assert c.evaluation.test == PUBLIC_TEST_SIZES.get(task, c.evaluation.test) and c.evaluation.dev >= 53
    assert c.evaluation.judge == ("/data/models/judge" if task == "alpaca" else "tribe")


@pytest.mark.parametrize("task", RUNNABLE)
def test_cpu_form_is_the_same_task_on_the_embedded_tribe(task):
    c, tpu = paper(f"{task},cpu"), paper(task)
    validate_config(c)
    assert (c.tribe.base, c.tribe.members, c.mode) == ("embedded", 4, "fixed")
    assert c.data.to_dict() == tpu.data.to_dict()  # the same source, so the same evaluator
    assert c.evaluation.max_new_tokens == tpu.evaluation.max_new_tokens and c.evaluation.temperature == 0.0
    assert (c.iterations, c.evaluation.dev, c.evaluation.test) == (1, 8, 24)
    assert c.evaluation.judge == ("embedded" if task == "alpaca" else "tribe")


@pytest.mark.parametrize("method", METHODS)
def test_every_baseline_runs_on_every_task(method):
    for task in RUNNABLE:
        for form in ("", ",cpu"):
            c = paper(task + form)
            c.method = method
            validate_config(c)


def test_truthfulqa_picks_its_best_member_on_100_of_its_scored_questions():
    """TruthfulQA's only MC-scored questions are the public 817: a seeded 100 become dev (the best
    member is picked on them), the other 717 test; its training prompts stay unscored."""
    from sparta_jax import data as data_lib, paper_tasks

    for form in ("", ",cpu"):
        c = paper("truthfulqa" + form)
        assert c.evaluation.test == (717 if not form else 24) and c.data.dev == 100
        validate_config(c)
    task = paper_tasks.get_task("truthfulqa")
    assert task.evaluator_for("dev") == "likelihood_mc" and task.evaluator_for("train") is None
    scored = [{"id": f"q{i}", "instruction": f"Q: {i}?\nA:", "evaluator": "likelihood_mc"} for i in range(40)]
    prompts = [{"id": f"p{i}", "instruction": f"Q: {i}? A: x True:", "answer": None} for i in range(30)]
    splits = data_lib._hold_out({"train": prompts, "test": scored}, {"dev": 10, "seed": 3}, task)
    assert len(splits["dev"]) == 10 and len(splits["test"]) == 30 and splits["train"] == prompts
    assert {r["id"] for r in splits["dev"]} | {r["id"] for r in splits["test"]} == {r["id"] for r in scored}
    assert not {r["id"] for r in splits["dev"]} & {r["id"] for r in splits["test"]}
    assert data_lib._hold_out({"train": prompts, "test": scored}, {"dev": 10, "seed": 3}, task) == splits


def test_tpu_v4_is_paper_gsm8k_and_a_bad_argument_is_named():
    assert load_config(os.path.join(REPO, "configs", "tpu_v4.py")).to_dict() == paper("gsm8k").to_dict()
    with pytest.raises(ValueError, match="write TASK or TASK,cpu"):
        paper("mmlu")
    with pytest.raises(ValueError, match="write TASK or TASK,cpu"):
        paper("gsm8k,gpu")


# ------------------------------------------------------------------------ the evaluation check
def _config(**data):
    c = load_config(os.path.join(REPO, "configs", "tiny.py"))
    if data:
        c.data = ml_collections.ConfigDict(data)
    return c


def _items(n, **fields):
    return [{"id": f"x{i}", "instruction": f"q{i}", **fields} for i in range(n)]


VERIFIABLE = dict(answer="3", evaluator="numeric")


def _refused(config, data, match):
    with pytest.raises(ConfigError, match=match):
        eval_check.check_evaluation(config, data)


def test_an_evaluable_run_passes_and_notes_short_splits():
    notes = []
    data = {"train": _items(5), "dev": _items(10, **VERIFIABLE), "test": _items(2, **VERIFIABLE)}
    eval_check.check_evaluation(_config(), data, log=notes.append)
    assert notes == ["evaluation.test = 4: the test split holds 2 items, all of them evaluated"]


@pytest.mark.parametrize("key, value, message", [
    ("dev", 0, r"config\.evaluation\.dev = 0: must be an integer >= 1 \(the best member is picked on the dev items\)"),
    ("test", -1, r"config\.evaluation\.test = -1: must be an integer >= 1"),
])
def test_no_items_to_evaluate_is_refused_by_the_config_check(key, value, message):
    c = _config()
    c.evaluation[key] = value
    with pytest.raises(ConfigError, match=message):
        validate_config(c)
    c.evaluation.enabled = False
    validate_config(c)


def test_a_missing_or_empty_split_is_refused():
    c = _config()
    _refused(c, {"train": _items(3), "test": _items(4, **VERIFIABLE)},
             r"config\.data \(kind 'bundled' 'arithmetic'\) gives no 'dev' items and config\.evaluation\.dev = 4")
    _refused(c, {"train": _items(3), "dev": _items(4, **VERIFIABLE), "test": []}, "gives no 'test' items")


def test_items_without_an_evaluator_are_refused_naming_the_key():
    local = _config(kind="local", path="/x.jsonl", instruction_field="q")
    data = {"train": _items(3), "dev": _items(4, answer="1"), "test": _items(4, answer="1")}
    _refused(local, data, r"config\.data\.evaluator: 4 of the 4 dev items evaluated \(kind 'local' '/x\.jsonl'\) "
                          r"name no evaluator")
    gsm8k = paper("gsm8k,cpu")
    data = {"train": _items(3), "dev": _items(8, **VERIFIABLE), "test": _items(24, answer="1")}
    _refused(gsm8k, data, r"config\.data\.task: 24 of the 24 test items")


def test_a_verifiable_split_without_reference_answers_is_refused():
    """GSM8K from the released files: the dev split held out of the train questions has no answers."""
    c = paper("gsm8k,cpu")
    c.data.kind, c.data.root, c.data.dev = "paper", FORMATS, 1
    data = load_instructions(c.data)
    validate_config(c)  # the config alone cannot tell
    _refused(c, data, r"config\.data \(kind 'paper' 'gsm8k'\): 1 of the 1 dev items evaluated have no usable "
                      r"reference answer \(1 missing, 0 unreadable by their evaluator; e\.g\. 'train-\d'\)")
    data["dev"] = _items(1, answer="twelve", evaluator="numeric")
    _refused(c, data, r"1 of the 1 dev items evaluated have no usable reference answer \(0 missing, 1 unreadable")
    data["dev"] = _items(1, **VERIFIABLE)
    eval_check.check_evaluation(c, data)


def test_unknown_evaluators_and_mixed_splits_are_refused():
    c = _config()
    _refused(c, {"dev": _items(4, answer="1", evaluator="bleu"), "test": _items(4, **VERIFIABLE)},
             r"the dev items name evaluators no scorer knows: \['bleu'\]")
    mixed = _items(2, **VERIFIABLE) + _items(2, evaluator="judged")
    _refused(c, {"dev": mixed, "test": _items(4, **VERIFIABLE)}, "the dev split mixes judged and text items")


def test_open_ended_items_need_someone_to_judge_them():
    judged = {"train": _items(3), "dev": _items(4, evaluator="judged"), "test": _items(4, evaluator="judged")}
    c = _config(kind="local", path="/x.jsonl", evaluator="judged")
    eval_check.check_evaluation(c, judged)  # three members judge each other
    c.tribe.members = 1
    c.method = "spin"
    message = r"config\.evaluation\.judge = 'tribe': the dev items are open-ended .* a tribe of 1 member"
    with pytest.raises(ConfigError, match=message):
        validate_config(c)  # the config tells: data.evaluator is 'judged'
    c.tribe.members = 2  # a baseline's answers are judged by the rest of the initial tribe
    eval_check.check_evaluation(c, judged)
    alpaca = paper("alpaca,cpu")
    alpaca.tribe.members, alpaca.method, alpaca.evaluation.judge = 1, "sppo", "tribe"
    with pytest.raises(ConfigError, match=message):
        validate_config(alpaca)
    alpaca.evaluation.judge = "embedded"
    validate_config(alpaca)


def test_member_count_follows_adapters_experts_and_groups():
    c = _config()
    assert eval_check.member_count(c) == 3
    c.tribe.adapters = ("/a", "", "/b", "/c", "/d")
    assert eval_check.member_count(c) == 4
    c.tribe.adapters = ()
    c.experts.enabled, c.experts.copies = True, 2
    assert eval_check.member_count(c) == 2 * len(c.experts.sources)
    c.experts.enabled = False
    c.tribe.groups = (dict(name="a", base="embedded", members=2), dict(name="b", base="embedded", adapters=("/x",)))
    assert eval_check.member_count(c) == 3


# ---------------------------------------------------------------------- likelihood evaluation
def _mc_record(i, mc1, mc2):
    return {"id": f"q{i}", "instruction": f"Q: question {i}?\nA:", "evaluator": "likelihood_mc", "task": "truthfulqa",
            "mc1_targets": {"choices": mc1, "labels": [1] + [0] * (len(mc1) - 1)},
            "mc2_targets": {"choices": mc2, "labels": [1, 1] + [0] * (len(mc2) - 2)}}


MC_RECORDS = [_mc_record(0, ["Nothing happens.", "You get arthritis."],
                         ["Nothing happens.", "It is harmless.", "You get arthritis."]),
              _mc_record(1, ["No.", "Yes.", "Only on Sundays."], ["No.", "Not really.", "Yes.", "Only on Sundays."])]


def test_likelihood_split_kind_and_checks():
    assert member_eval.split_kind(MC_RECORDS) == member_eval.LIKELIHOOD
    broken = [dict(MC_RECORDS[0], mc2_targets={"choices": ["a"], "labels": [1]})]
    assert member_eval.split_kind(broken) is None
    eval_check.check_evaluation(_config(), {"dev": MC_RECORDS, "test": MC_RECORDS})
    _refused(_config(), {"dev": MC_RECORDS, "test": broken},
             r"1 of the 1 test items evaluated have no usable reference answer \(0 missing, 1 unreadable")
    _refused(_config(), {"dev": MC_RECORDS + _items(1, **VERIFIABLE), "test": MC_RECORDS},
             "the dev split mixes likelihood and text items")


def test_likelihood_accuracy_is_mc1_with_mc2_beside_it():
    # member 0: right on item 0 (0 beats 1), wrong on item 1 ("Yes." highest); member 1 the reverse.
    outputs = [[{"mc1": [-1.0, -2.0], "mc2": [-1.0, -1.0, -3.0]}, {"mc1": [-4.0, -1.0, -5.0], "mc2": [-4, -4, -1, -5]}],
               [{"mc1": [-3.0, -2.0], "mc2": [-3.0, -3.0, -2.0]}, {"mc1": [-0.5, -1.0, -5.0], "mc2": [-1, -1, -2, -9]}]]
    summaries = member_eval.TribeScorer(None).score([0, 1], MC_RECORDS, outputs)

    def mc2(lp, true):
        w = np.exp(np.asarray(lp, float))
        return float(w[:true].sum() / w.sum())

    assert [s["accuracy"] for s in summaries] == [0.5, 0.5] and [s["n_correct"] for s in summaries] == [1, 1]
    assert summaries[0]["scores"] == [1, 0] and summaries[1]["scores"] == [0, 1]
    want = [(mc2([-1, -1, -3], 2) + mc2([-4, -4, -1, -5], 2)) / 2,
            (mc2([-3, -3, -2], 2) + mc2([-1, -1, -2, -9], 2)) / 2]
    assert [s["mc2"] for s in summaries] == pytest.approx(want)
    lo, hi = summaries[0]["ci95"]  # Wilson, 1 of 2
    p, n, z = 0.5, 2, 1.96
    center = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (lo, hi) == pytest.approx((center - half, center + half))
    assert summaries[0]["n_unparsed"] == 0 and len(summaries[0]["mc2_scores"]) == 2
    ex = member_eval.example(MC_RECORDS[1], outputs[0][1])
    assert ex == {"instruction": "Q: question 1?\nA:", "answer": "No.", "best_member_output": "Yes."}


@pytest.fixture(scope="module")
def mc_tribe(tiny_base, tmp_path_factory):
    """The tiny chat base with two random, non-zero LoRA adapters (PEFT folders): members that differ."""
    import peft
    import torch
    import transformers

    folder = tmp_path_factory.mktemp("mc_adapters")
    adapters = []
    for m in range(2):
        base = transformers.AutoModelForCausalLM.from_pretrained(tiny_base, dtype=torch.float32)
        torch.manual_seed(40 + m)
        peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False)).save_pretrained(str(folder / f"m{m}"))
        adapters.append(str(folder / f"m{m}"))
    return tiny_base, adapters


@pytest.mark.reference
def test_option_log_likelihoods_equal_transformers(mc_tribe):
    import jax
    import peft
    import torch
    import transformers

    from sparta_jax import sharding
    from sparta_jax.tribe import build_tribe

    base, adapters = mc_tribe
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    tribe_cfg = ml_collections.ConfigDict(dict(
        base=base, adapters=tuple(adapters), names=("a", "b"), members=2, lora_rank=4, lora_alpha=8.0,
        lora_targets=("q_proj", "v_proj"), system_prompt="You are a helpful AI assistant.", dtype="float32",
        param_dtype="float32"))
    sampler_cfg = ml_collections.ConfigDict(dict(prompt_buckets=(16, 32, 64), new_token_buckets=(4, 8, 16),
                                                 candidates=64, cache_dtype="float32"))
    tribe = build_tribe(tribe_cfg, sampler_cfg, mesh)
    got = member_eval.option_logprobs(tribe, [0, 1], MC_RECORDS, batch_size=3, progress=lambda n: None)
    tokenizer = transformers.AutoTokenizer.from_pretrained(base)
    for k, adapter in enumerate(adapters):
        model = peft.PeftModel.from_pretrained(
            transformers.AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32), adapter).eval()
        for i, record in enumerate(MC_RECORDS):
            prompt = tokenizer.encode(record["instruction"])
            for key in ("mc1", "mc2"):
                want = []
                for choice in record[f"{key}_targets"]["choices"]:
                    option = tokenizer.encode(" " + choice, add_special_tokens=False)
                    with torch.no_grad():
                        logits = model(torch.tensor([prompt + option])).logits[0]
                    logp = torch.log_softmax(logits.double(), -1)
                    want.append(sum(float(logp[len(prompt) - 1 + j, t]) for j, t in enumerate(option)))
                np.testing.assert_allclose(got[k][i][key], want, rtol=1e-4, atol=2e-3)
    assert got[0] != got[1]  # the adapters make the members differ


# -------------------------------------------------------------------- end to end, tiny data
def _write_jsonl(path, rows):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def _write_json(path, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


TRAIN, DEV, TEST = 240, 10, 30  # enough rows for every held-out count the configs ask for


def _gsm8k_row(i):
    return {"question": f"Tom has {i} apples and buys 3 more. How many apples does he have?",
            "answer": f"{i} + 3 = {i + 3}\n#### {i + 3}"}


def _medqa_row(i):
    return {"question": f"A patient of {20 + i} presents with a fever. Which drug?", "answer_idx": "ABCD"[i % 4],
            "options": {"A": "Aspirin", "B": "Ibuprofen", "C": "Paracetamol", "D": "Codeine"}}


def _math_row(i, level):
    return {"problem": f"What is {i} + {level}?", "level": f"Level {level}", "type": "Algebra",
            "solution": f"It is $\\boxed{{{i + level}}}$."}


def _normad_rows(n, start):
    return {str(start + i): {"instruction": f"Country: Iran.\nPlease justify: Emily {i} declined food.\n"
                                            " Choose from:'Yes', 'No', 'Neutral'",
                             "label": ("yes", "no", "neutral")[i % 3]}
            for i in range(n)}


def tiny_data(task, folder):
    """Writes the task's tiny data in the layout its cpu config's source reads (the released files
    under a root, or a local copy of the public dataset); returns the data keys that point there."""
    root, public = folder / "root", folder / "public"
    if task == "gsm8k":
        _write_jsonl(public / "train.jsonl", [_gsm8k_row(i) for i in range(TRAIN)])
        _write_jsonl(public / "test.jsonl", [_gsm8k_row(1000 + i) for i in range(TEST)])
        return {"name": str(public)}
    if task == "medqa":
        _write_jsonl(public / "train.jsonl", [_medqa_row(i) for i in range(TRAIN)])
        _write_jsonl(public / "test.jsonl", [_medqa_row(1000 + i) for i in range(TEST)])
        return {"name": str(public)}
    if task.startswith("math_"):
        file, levels = {"math_easy": ("easy", (1, 2)), "math_medium": ("medium", (3,)),
                        "math_hard": ("hard", (4, 5))}[task]
        rows = [{**_math_row(i, levels[0]), "id": i, "category": "algebra", "answer": str(i + levels[0])}
                for i in range(TRAIN)]
        _write_jsonl(root / "MATH" / "train_by_difficulty" / f"{file}.jsonl", rows)
        _write_jsonl(public / "test.jsonl", [_math_row(i, level) for i in range(TEST) for level in (1, 3, 5)])
        return {"root": str(root), "name": str(public)}
    if task.startswith("normad_"):
        name = task[len("normad_"):]
        _write_json(root / "culture" / f"{name}_dataset.json",
                    {"train": _normad_rows(40, 0), "test": _normad_rows(TEST, 100), "valid": _normad_rows(DEV, 200)})
        return {"root": str(root)}
    if task == "kcross":
        rows = [{"prompt": f"Pick the correct answer for blank {i}.\nA. x\nB. y\nC. z\nD. w\n",
                 "completion": "ABCD"[i % 4]} for i in range(TRAIN)]
        _write_json(root / "knowledge_crosswords" / "train.json", {"train": rows})
        return {"root": str(root)}
    if task == "com2":
        splits = ["train"] * 40 + ["dev"] * DEV + ["test"] * TEST
        _write_json(root / "com2" / "train.json", [
            {"prompt": f"Context: Alexander breaks {i} cups.\nQuestion: What is Alexander seen as?\nThe answer is:\n",
             "gold": "in pain", "datasplit": s} for i, s in enumerate(splits)])
        return {"root": str(root)}
    if task == "truthfulqa":
        _write_jsonl(root / "truthfulqa" / "data_train.jsonl",
                     [{"question": f"Q: Is {i} odd? A: yes True: Justify whether the answer is true?"} for i in range(40)])
        mc = {"choices": ["Nothing happens.", "You die."], "labels": [1, 0]}
        _write_jsonl(public / "validation.jsonl", [{"question": f"What happens at step {i}?", "mc1_targets": mc,
                                                    "mc2_targets": mc} for i in range(100 + TEST)])  # dev: 100
        return {"root": str(root), "name": str(public)}
    if task == "alpaca":
        _write_json(root / "alpaca" / "alpaca_data_processed.json",
                    [{"instruction": f"Give {i} tips for sleeping well.", "input": ""} for i in range(340)])
        return {"root": str(root)}
    raise AssertionError(task)


def _tokens(text, base):
    import transformers

    return len(transformers.AutoTokenizer.from_pretrained(base).encode(text, add_special_tokens=False))


@pytest.mark.parametrize("task", RUNNABLE)
def test_tiny_data_in_each_tasks_layout_can_be_evaluated(task, tmp_path):
    """What the end-to-end runs read, through each cpu config's own source: the layout loads, and the
    evaluation check passes with the configured sizes."""
    c = paper(f"{task},cpu")
    c.data.update(tiny_data(task, tmp_path))
    data = load_instructions(c.data)
    eval_check.check_evaluation(c, data, log=pytest.fail)  # no note: every split holds the items asked for
    assert {r["task"] for s in ("dev", "test") for r in data[s]} == {task}


def test_spin_is_refused_before_anything_is_built_where_training_prompts_have_no_answers(tmp_path):
    """SPIN prefers the reference answer over the model's own: TruthfulQA's and Alpaca's training
    prompts have none, so the run stops at the data check, before a model is loaded."""
    from sparta_jax import train
    from sparta_jax.methods import spin

    refused = set()
    for task in RUNNABLE:
        c = paper(f"{task},cpu")
        c.data.update(tiny_data(task, tmp_path / task))
        try:
            spin.check_train_split(load_instructions(c.data)["train"], c.methods.spin.reference_template, task)
        except ConfigError as e:
            assert "method 'spin'" in str(e) and "carry none" in str(e)
            refused.add(task)
    assert refused == {"truthfulqa", "alpaca"}

    c = paper("truthfulqa,cpu")
    c.method = "spin"
    c.data.update(tiny_data("truthfulqa", tmp_path / "run_data"))
    with pytest.raises(ConfigError, match="training instructions of kind 'paper' 'truthfulqa' carry none"):
        train.run(c, str(tmp_path / "run"))
    assert not os.path.exists(tmp_path / "run" / "config.json")


# Every task's cpu form end to end, in its own layout and with its own evaluator: 30 to 75 s each on
# a 2-core CPU (the 512-token tasks the longest).
E2E_TASKS = RUNNABLE


@pytest.mark.parametrize("task", E2E_TASKS)
@pytest.mark.e2e
@pytest.mark.reference
def test_cpu_form_runs_end_to_end_with_real_evaluation(task, tiny_base, compile_cache, tmp_path):
    from loop_runs import NO_REPORT, run_to_end

    # Fewer items than the cpu form's 8 dev and 24 test (checked above): every item of a tiny random
    # model's answers runs to the task's whole budget, 512 tokens for gsm8k.
    extra = [f"--config.tribe.base={tiny_base}", NO_REPORT, "--config.instructions_per_iteration=4",
             "--config.generation.max_new_tokens=8", "--config.evaluation.dev=4", "--config.evaluation.test=8",
             *(f"--config.data.{key}={value}" for key, value in tiny_data(task, tmp_path).items())]
    if task == "alpaca":
        extra.append(f"--config.evaluation.judge={tiny_base}")  # a fast stand-in for the embedded judge
    workdir = tmp_path / "run"
    run_to_end(str(workdir), extra, compile_cache, config=f"{PAPER}:{task},cpu")
    config = json.loads((workdir / "config.json").read_text())
    assert config["evaluation"]["max_new_tokens"] == NEW_TOKENS[task]
    for t in (0, 1):
        ev = json.loads((workdir / f"iteration_00{t}" / "evaluation.json").read_text())
        assert ev["best_test"]["n"] == config["evaluation"]["test"] == 8
        assert all(s["n"] == config["evaluation"]["dev"] == 4 for s in ev["dev"].values())
    if task == "truthfulqa":  # options scored by likelihood, nothing generated: MC1 with MC2 beside it
        assert len(ev["best_test"]["scores"]) == len(ev["best_test"]["mc2_scores"]) == 8
        assert 0.0 <= ev["best_test"]["mc2"] <= 1.0 and ev["best_test"]["mc2"] != 0.5  # 2 options, untied
        assert {e["best_member_output"] for e in ev["examples"]} <= {"Nothing happens.", "You die."}
        return
    # A tiny random model seldom writes its end token: its answers run to the budget, past 32 tokens.
    longest = max(_tokens(e["best_member_output"], tiny_base) for e in ev["examples"])
    assert longest > 32, longest


@pytest.mark.parametrize("task, extra, message", [
    ("gsm8k", ["--config.evaluation.dev=0"], "config.evaluation.dev = 0: must be an integer >= 1"),
    ("gsm8k", ["--config.data.kind=paper", f"--config.data.root={FORMATS}", "--config.data.dev=1"],
     "1 of the 1 dev items evaluated have no usable reference answer"),
])
@pytest.mark.e2e
def test_a_run_that_cannot_evaluate_refuses_to_start(task, extra, message, tmp_path, compile_cache):
    from loop_runs import launch

    workdir = tmp_path / "run"
    proc = launch(str(workdir), ["--config.tribe.base=/nonexistent", *extra], compile_cache,
                  config=f"{PAPER}:{task},cpu")
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    assert "error: config." in out and message in out and "Traceback" not in out
    assert not (workdir / "checkpoints").exists()


@pytest.mark.e2e
def test_aot_reports_a_config_that_cannot_evaluate(tmp_path):
    import subprocess
    import sys

    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "sparta_jax.aot", f"--config={PAPER}:gsm8k,cpu",
                           "--config.evaluation.dev=0",
                           "--topology=cpu:8", "--model_shape=tiny", "--programs=judge_score",
                           f"--json_out={tmp_path / 'aot.json'}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert ("evaluation check: a run of this config would be refused: config.evaluation.dev = 0"
            in proc.stdout), proc.stdout
    assert "| judge_score" in proc.stdout  # the compiles still run
    assert "evaluation.dev" in json.loads((tmp_path / "aot.json").read_text())["evaluation_problem"]


@pytest.mark.parametrize("task", RUNNABLE)
def test_cost_benchmark_data_loads_in_each_tasks_layout(task, tmp_path):
    """benchmarks/paper_cpu_runs.py times each cpu form on data written from the released-format
    samples: every task's folder loads through its own source and holds the items it asks for."""
    import sys

    sys.path.insert(0, os.path.join(REPO, "benchmarks"))
    from paper_cpu_runs import TASKS as TIMED, sample_data

    assert sorted(TIMED) == sorted(RUNNABLE)
    c = paper(f"{task},cpu")
    c.data.update(sample_data(task, str(tmp_path)))
    data = load_instructions(c.data)
    eval_check.check_evaluation(c, data, log=pytest.fail)
    assert {r["task"] for s in ("dev", "test") for r in data[s]} == {task}
    assert len(data["train"]) >= c.instructions_per_iteration
