"""`python -m sparta_jax.main`: outputs, kill-and-resume equality, clear errors."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import numpy as np
import pytest
from safetensors import safe_open

from loop_runs import (NO_REPORT, REPO, TINY_CONFIG, export_in_process, final_state, launch, overrides, run_once,
                       run_to_end, run_until)
from sparta_jax.sparta import duel_from_json
from tiny_models import save_tiny_chat_model


@pytest.fixture(scope="session")
def finished_run(tiny_base, compile_cache):
    """The tiny tribe's 2 iterations, run once per session (its tests may run in either worker) and
    read only: a test that runs more in it works on a copy."""
    return run_once("finished_run", overrides(tiny_base), compile_cache)


ABSL_LINE = re.compile(r"^[IWEF]\d{4} \d\d:\d\d:\d\d")  # absl's own prefix, e.g. "I1201 23:23:04.649756"
PROJECT_LINE = re.compile(  # every line shape the main loop itself prints
    r"^(  (iteration \d+ \w+: \d+/\d+ |checkpoint \d+: |before training: |after iteration \d+[: ]|best dev over the run"
    r"|paired on the |best dev so far: )|iteration \d+[ :]|mean member \(test"
    r"|evaluation after iteration |report: |== run finished: |best member \(by dev accuracy\)|pairs trained: "
    r"|judge signal: |minutes per phase: |metrics: |checkpoint: |export the best member: |TensorBoard: |resumed from |$)")


@pytest.mark.e2e
@pytest.mark.reference
def test_a_run_prints_its_own_lines_and_closes_with_a_summary(finished_run, tiny_base, compile_cache, tmp_path):
    """Orbax's absl INFO lines are off (absl's --verbosity brings them back); the run ends with the
    closing summary, and a finished run started again prints it again."""
    workdir, out = finished_run
    assert not [line for line in out.splitlines() if ABSL_LINE.match(line)], out[-3000:]
    foreign = [line for line in out.splitlines() if not PROJECT_LINE.match(line) and "warning" not in line.lower()]
    assert not foreign, foreign
    assert "CheckpointManagerOptions" not in out and "PyTorch was not found" not in out
    ev0, ev2 = (json.load(open(os.path.join(workdir, f"iteration_00{t}", "evaluation.json"))) for t in (0, 2))
    block = out[out.index("== run finished: 2 iteration(s)"):]
    for when, ev in (("before training", ev0), ("after iteration 2 (last: the gain claimed)", ev2)):
        best, test = ev["best_member"], ev["best_test"]
        assert (f"  {when}: {best} | " in block and f"| {test['accuracy']:.3f} [{test['ci95'][0]:.3f}, "
                f"{test['ci95'][1]:.3f}] ({test['n_correct']}/{test['n']})" in block), block
    pairs = [json.load(open(os.path.join(workdir, f"iteration_00{t}", "summary.json")))["pairs_trained"] for t in (1, 2)]
    assert f"pairs trained: {sum(pairs)} own ({pairs[0]} + {pairs[1]} per iteration)" in block
    assert os.path.join(workdir, "report", "report.html") in block and os.path.join(workdir, "checkpoints", "2") in block
    assert f"python -m sparta_jax.export --workdir={workdir} --member=best" in block and "tensorboard --logdir" in block

    import shutil

    copy = shutil.copytree(workdir, tmp_path / "run")  # the session's finished run is read only
    again = run_to_end(str(copy), overrides(tiny_base) + ["--verbosity=0"], compile_cache)
    assert "== run finished: 2 iteration(s)" in again and "iteration 1:" not in again  # nothing redone
    chatter = [line for line in again.splitlines() if ABSL_LINE.match(line)]  # --verbosity brings INFO back
    assert chatter and not any(PROJECT_LINE.match(line) for line in chatter)


@pytest.mark.e2e
def test_the_package_silences_the_no_pytorch_notice():
    script = ("import sys\nsys.modules['torch'] = None  # transformers then finds no PyTorch\n"
              "{}\nimport transformers\n")
    env = {k: v for k, v in os.environ.items() if k != "TRANSFORMERS_NO_ADVISORY_WARNINGS"}  # as a fresh shell has it
    bare = subprocess.run([sys.executable, "-c", script.format("")], env=env, capture_output=True, text=True,
                          timeout=120)
    ours = subprocess.run([sys.executable, "-c", script.format("import sparta_jax")], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=120)
    assert "PyTorch was not found" in bare.stderr  # the notice exists where torch is missing
    assert "PyTorch was not found" not in ours.stderr and ours.returncode == 0


@pytest.mark.e2e
@pytest.mark.reference
def test_two_iterations_write_every_output(finished_run, tiny_base, tmp_path):
    workdir, out = finished_run
    assert "iteration 2:" in out and "pairs from 4 duels" in out
    # configs/tiny.py: report_every = 0, so the report is written once, after the last iteration
    assert [line for line in out.splitlines() if line.startswith("report: /")] == [
        f"report: {os.path.join(workdir, 'report', 'report.html')}"]
    assert json.load(open(os.path.join(workdir, "config.json")))["tribe"]["base"] == tiny_base
    for t in (1, 2):
        folder = os.path.join(workdir, f"iteration_00{t}")
        answers = [json.loads(line) for line in open(os.path.join(folder, "answers.jsonl"))]
        assert len(answers) == 4 and all(len(a["responses"]) == 2 for a in answers)
        duels = [duel_from_json(json.loads(line)) for line in open(os.path.join(folder, "duels.jsonl"))]
        assert len(duels) == 4 and all(len(d.judges) == 1 for d in duels)  # 3 members: one judge
        rep = json.load(open(os.path.join(folder, "reputations.json")))
        assert len(rep["history"]) == 4 and set(rep["end"]) == {"member_0", "member_1", "member_2"}
        prefs = [json.loads(line) for line in open(os.path.join(folder, "preferences.jsonl"))]
        assert prefs and all(p["margin"] > 0 for p in prefs)
        summary = json.load(open(os.path.join(folder, "summary.json")))
        assert summary["pairs"] == len(prefs) and summary["train"]["pairs_trained"] == len(prefs)
        signal = json.load(open(os.path.join(folder, "judge_signal.json")))  # bundled task: verifiable
        assert signal["iteration"] == t and signal["duels_scored"] == 4
        assert signal["duels_one_right"] + signal["duels_both_right"] + signal["duels_both_wrong"] == 4
    metrics = [json.loads(line) for line in open(os.path.join(workdir, "metrics.jsonl"))]
    assert [m["iteration"] for m in metrics if m["kind"] == "iteration"] == [1, 2]
    for m in (m for m in metrics if m["kind"] == "iteration"):
        signal = json.load(open(os.path.join(workdir, f"iteration_00{m['iteration']}", "judge_signal.json")))
        assert m.get("judge_signal/pooled_auc") == signal["pooled_auc"]
        assert set(m["seconds/" + k] for k in ("answers", "judging", "rating", "dpo")) <= {
            v for v in json.load(open(os.path.join(workdir, f"iteration_00{m['iteration']}", "summary.json")))[
                "phase_seconds"].values()}
    assert [m["step"] for m in metrics if m["kind"] == "evaluation"] == [0, 1, 2]
    for t in (0, 1, 2):  # the initial tribe, then after each iteration
        ev = json.load(open(os.path.join(workdir, f"iteration_00{t}", "evaluation.json")))
        assert set(ev["dev"]) == {"member_0", "member_1", "member_2"} and ev["best_member"] in ev["dev"]
        assert ev["best_test"]["n"] == 4 and 0 <= ev["best_test"]["accuracy"] <= 1
    assert any(f.startswith("events.out.tfevents") for f in os.listdir(os.path.join(workdir, "tensorboard")))
    report = open(os.path.join(workdir, "report", "report.html")).read()
    assert "Reputation trajectories" in report and "Dev and test accuracy" in report
    # Reputations moved, and the replay CLI recomputes them from the duel logs alone.
    rep2 = json.load(open(os.path.join(workdir, "iteration_002", "reputations.json")))["end"]
    assert len({round(v["R"], 9) for v in rep2.values()}) > 1
    logs = tmp_path / "all_duels.jsonl"
    logs.write_text("".join(open(os.path.join(workdir, f"iteration_00{t}", "duels.jsonl")).read() for t in (1, 2)))
    replay = subprocess.run([sys.executable, "-m", "sparta_jax.rate", "--duels", str(logs), "--tribe",
                             "member_0,member_1,member_2", "--out", str(tmp_path / "replay.json")],
                            cwd=REPO, env={**os.environ, "PYTHONPATH": REPO}, capture_output=True, text=True)
    assert replay.returncode == 0, replay.stderr
    replayed = json.load(open(tmp_path / "replay.json"))["reputations"]
    for name, value in rep2.items():
        assert abs(replayed[name]["R"] - value["R"]) < 1e-9 and abs(replayed[name]["sigma"] - value["sigma"]) < 1e-9


@pytest.mark.e2e
@pytest.mark.reference
def test_killed_runs_resume_to_the_uninterrupted_result(finished_run, tiny_base, compile_cache, tmp_path):
    reference, _ = finished_run  # the same command, run through uninterrupted
    killed = str(tmp_path / "killed")
    # Killed with the answers on disk; with the judgments too, in DPO (rating is recomputed from the
    # judgments on every start, so a kill between judging and DPO leaves what this one does); with the
    # first checkpoint handed to its background save; in the second iteration's DPO.
    for marker in ("iteration 1 answers:", "iteration 1 DPO:", "iteration 1:", "iteration 2 DPO:"):
        run_until(killed, overrides(tiny_base) + [NO_REPORT], compile_cache, marker)
    out = run_to_end(killed, overrides(tiny_base) + [NO_REPORT], compile_cache)
    assert "resumed from the checkpoint after iteration" in out
    params_a, reps_a, prefs_a = final_state(reference)
    params_b, reps_b, prefs_b = final_state(killed)
    assert prefs_a == prefs_b
    assert reps_a == reps_b
    assert params_a.keys() == params_b.keys()
    for key in params_a:
        np.testing.assert_array_equal(params_a[key], params_b[key], err_msg=key)


BAD_INPUTS = [  # (config fields set, the error's words)
    ({"generation.temperature": -1.0}, "config.generation.temperature = -1"),
    ({"dpo.grad_accum": 3}, "config.dpo.grad_accum"),
    ({"tribe.base": "/nonexistent/model"}, "tribe.base: model folder '/nonexistent/model' does not exist"),
    ({"generation.max_prompt_tokens": 1024, "generation.max_new_tokens": 16},
     "generation.max_prompt_tokens + generation.max_new_tokens = 1040 exceeds the model's context of 1024"),
]


@pytest.mark.parametrize("fields, message", BAD_INPUTS)
@pytest.mark.reference
def test_bad_input_gives_a_clear_error_and_no_state(fields, message, tiny_base, tmp_path):
    """In process: the run stops with the project's error (main prints it as one line) before it
    writes a checkpoint."""
    from sparta_jax.config_files import load_config
    from sparta_jax.errors import SpartaError
    from sparta_jax.train import run

    config = load_config(TINY_CONFIG)
    config.tribe.base = tiny_base
    for key, value in fields.items():
        section, name = key.split(".")
        config[section][name] = value
    with pytest.raises((SpartaError, FileNotFoundError)) as caught:
        run(config, str(tmp_path / "run"))
    assert message in str(caught.value)
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.e2e
@pytest.mark.reference
def test_bad_input_exits_1_with_one_line_and_no_traceback(tiny_base, tmp_path, compile_cache):
    workdir = tmp_path / "run"
    proc = launch(str(workdir), overrides(tiny_base)[:1] + ["--config.generation.temperature=-1"], compile_cache)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    assert "error: config.generation.temperature = -1" in out
    assert "Traceback" not in out
    assert not (workdir / "checkpoints").exists()


@pytest.mark.e2e
@pytest.mark.reference
def test_empty_dataset_is_refused(tiny_base, tmp_path, compile_cache):
    """A user's own config file pointing at a local JSONL that has no rows."""
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    config = tmp_path / "mine.py"
    config.write_text(
        "import ml_collections\n"
        "from sparta_jax.config_files import load_config\n"
        "def get_config():\n"
        f"    c = load_config({TINY_CONFIG!r})\n"
        f"    c.data = ml_collections.ConfigDict(dict(kind='local', path={str(empty)!r}, instruction_field='q'))\n"
        "    return c\n")
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "sparta_jax.main", f"--config={config}",
                           f"--workdir={tmp_path / 'run'}", f"--config.tribe.base={tiny_base}"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "is empty" in proc.stderr and "Traceback" not in proc.stderr
    assert not (tmp_path / "run" / "checkpoints").exists()


@pytest.mark.e2e
@pytest.mark.reference
def test_two_processes_equal_one(tiny_base, compile_cache, tmp_path):
    """jax.distributed with two local CPU processes (one device each) == one process with two devices,
    over one whole iteration (duels, judging, DPO, checkpoint, evaluation)."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    base_env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": compile_cache,
                "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    args = [sys.executable, "-m", "sparta_jax.main", f"--config={TINY_CONFIG}", *overrides(tiny_base),
            "--config.iterations=1", NO_REPORT]

    single = subprocess.run(args + [f"--workdir={tmp_path / 'one'}"], cwd=REPO, capture_output=True, text=True,
                            env={**base_env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"}, timeout=900)
    assert single.returncode == 0, single.stderr[-4000:]

    env = {k: v for k, v in base_env.items() if k != "XLA_FLAGS"}
    procs = [subprocess.Popen(args + [f"--workdir={tmp_path / 'two'}", "--config.distributed.initialize=True",
                                      f"--config.distributed.coordinator_address=localhost:{port}",
                                      "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=900)[0] for p in procs]
    for p, out in zip(procs, outs):
        assert p.returncode == 0, out[-4000:]
    assert "iteration 1:" in outs[0] and "iteration 1:" not in outs[1]  # only process 0 reports
    params_a, reps_a, prefs_a = final_state(str(tmp_path / "one"), iterations=1)
    params_b, reps_b, prefs_b = final_state(str(tmp_path / "two"), iterations=1)
    assert prefs_a == prefs_b and reps_a == reps_b and prefs_a[0]  # pairs were trained
    for key in params_a:
        np.testing.assert_array_equal(params_a[key], params_b[key], err_msg=key)


@pytest.mark.parametrize("kind", ["--merged", "--peft"])
@pytest.mark.e2e
@pytest.mark.reference
def test_export_best_member_reloads_with_the_same_logits(finished_run, tmp_path, kind):
    import jax.numpy as jnp
    import peft
    import torch
    import transformers

    from sparta_jax.export import load_run_tribe

    workdir, _ = finished_run
    status, stdout, err = export_in_process("--workdir", workdir, "--member", "best", "--out", tmp_path / "out", kind)
    assert status == 0, err[-3000:]
    best = json.load(open(os.path.join(workdir, "iteration_002", "evaluation.json")))["best_member"]
    assert stdout.startswith(f"{best} (after iteration 2)")
    tribe, _ = load_run_tribe(workdir)
    ids = np.asarray([tribe.tokenizer.encode("What is 2 + 3? Give the final answer as a number.")])
    ours = np.asarray(tribe.model(jnp.asarray(ids), adapter_ids=jnp.asarray([tribe.index(best)])))
    if kind == "--merged":
        hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float32)
    else:
        base = transformers.AutoModelForCausalLM.from_pretrained(tribe.base_path, dtype=torch.float32)
        hf = peft.PeftModel.from_pretrained(base, str(tmp_path / "out"))
    with torch.no_grad():
        theirs = hf(input_ids=torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(ours, theirs, atol=1e-4)
    base_only = np.asarray(tribe.model(jnp.asarray(ids)))
    assert np.abs(ours - base_only).max() > 1e-6  # the member was trained: the adapter matters


@pytest.mark.e2e
@pytest.mark.reference
def test_random_weights_base_and_the_iteration_benchmark(smollm2_dir, compile_cache, tmp_path):
    """`tribe.base = random:<shape>` (a full-size tribe without its checkpoint) and the per-phase
    table of benchmarks/iteration.py, on the tiny-chat shape."""
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu", "JAX_COMPILATION_CACHE_DIR": compile_cache}
    env.pop("XLA_FLAGS", None)
    workdir = tmp_path / "bench"
    proc = subprocess.run([sys.executable, os.path.join(REPO, "benchmarks", "iteration.py"), f"--config={TINY_CONFIG}",
                           f"--workdir={workdir}", "--config.tribe.base=random:tiny-chat", "--config.iterations=1",
                           f"--config.tribe.tokenizer={smollm2_dir}",
                           "--config.instructions_per_iteration=4", "--config.generation.max_new_tokens=8",
                           "--config.dpo.max_length=96", "--config.dpo.max_prompt_length=80",
                           "--bundled_task=word_problems"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.load(open(workdir / "iteration_001" / "summary.json"))
    assert set(summary["phase_seconds"]) == {"answers", "judging", "rating", "dpo"}
    assert all(v >= 0 for v in summary["phase_seconds"].values())
    assert sum(summary["phase_seconds"].values()) <= summary["seconds"]
    assert json.load(open(workdir / "tribe.json"))["base"] == "random:tiny-chat"
    ev = json.load(open(workdir / "iteration_001" / "evaluation.json"))
    assert ev["seconds"] > 0 and ev["dev"]["member_0"]["n"] == 4
    assert json.load(open(workdir / "config.json"))["data"]["task"] == "word_problems"
    row = [line for line in proc.stdout.splitlines() if line.startswith("| 1 |")]
    assert len(row) == 1, proc.stdout
    cells = [c.strip() for c in row[0].strip("|").split("|")]
    assert cells[1] == "4" and cells[2] == str(summary["pairs_trained"])
    assert cells[3:7] == [f"{summary['phase_seconds'][k]:.1f}" for k in ("answers", "judging", "rating", "dpo")]
    assert "base random:tiny-chat, 3 LoRA members, judge logits" in proc.stdout
    whole = [line for line in proc.stdout.splitlines() if line.startswith("Whole run")]
    assert len(whole) == 1 and f"loss {summary['dpo_loss_after']:.3f}, reward accuracy " in whole[0]
    assert summary["seconds"] <= float(whole[0].split("included): ")[1].split(" s")[0]) + 0.5
    for phase in ("answers", "judging", "rating", "dpo"):  # logged as each phase ends
        assert f"iteration 1 {phase}: {summary['phase_seconds'][phase]:.1f} s" in proc.stderr


@pytest.mark.e2e
def test_unknown_random_shape_is_a_clear_error(tmp_path, compile_cache):
    proc = launch(str(tmp_path / "run"), ["--config.tribe.base=random:qwen9-900b"], compile_cache)
    out, _ = proc.communicate(timeout=300)
    assert proc.returncode == 1, out[-3000:]
    assert "tribe.base 'random:qwen9-900b': unknown shape; known: qwen2.5-7b" in out


@pytest.mark.e2e
@pytest.mark.reference
def test_full_parameter_tribe_trains_whole_members_and_exports(tiny_base, smollm2_dir, compile_cache, tmp_path):
    """tribe.kind='full': three whole models (tribe.member_folders), every weight trained by DPO,
    and an exported member reloads in transformers with the logits of our member. A killed run of
    whole members resumes to the uninterrupted result: test_mixed_tribe.py's run, whose `full` group
    trains with the same programs and checkpoints the same state (under its group's name)."""
    import jax.numpy as jnp
    import torch
    import transformers

    from sparta_jax.export import load_run_tribe

    folders = [save_tiny_chat_model(tmp_path / f"m{i}", smollm2_dir, seed=i + 1) for i in range(3)]
    extra = overrides(tiny_base) + ["--config.tribe.kind=full", f"--config.tribe.member_folders={tuple(folders)}",
                                    NO_REPORT]
    reference = str(tmp_path / "reference")
    out = run_to_end(reference, extra, compile_cache)
    assert "iteration 2:" in out
    params_a, _, prefs_a = final_state(reference)
    assert all(prefs_a)  # pairs were trained in both iterations
    # Whole members: no adapters; every weight has a member axis and was trained.
    assert not any("lora" in k for k in params_a)
    q = next(v for k, v in params_a.items() if "q_proj" in k)
    with safe_open(os.path.join(folders[1], "model.safetensors"), "np") as f:
        start = f.get_tensor("model.layers.0.self_attn.q_proj.weight").T  # HF stores [out, in]
    assert q.shape == (3, 2, 64, 64) and 0 < np.abs(q[1, 0] - start).max() < 0.1

    status, _, err = export_in_process("--workdir", reference, "--member", "m1", "--out", tmp_path / "out")
    assert status == 0, err[-3000:]
    tribe, _ = load_run_tribe(reference)
    ids = np.asarray([tribe.tokenizer.encode("What is 2 + 3? Give the final answer as a number.")])
    ours = np.asarray(tribe.model.member(1)(jnp.asarray(ids)))
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out"), dtype=torch.float32)
    with torch.no_grad():
        np.testing.assert_allclose(ours, hf(input_ids=torch.tensor(ids)).logits.numpy(), atol=1e-4)
    refused = subprocess.run([sys.executable, "-m", "sparta_jax.export", "--workdir", reference, "--member", "m1",
                              "--out", str(tmp_path / "peft"), "--peft"], cwd=REPO, capture_output=True, text=True,
                             env={**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}, timeout=300)
    assert refused.returncode == 1 and "are whole models: export them without --peft" in refused.stderr


def test_replayed_pairs_are_the_earlier_iterations_trained_pairs(tmp_path):
    """dpo.replay_iterations = k: iteration t trains again on the pairs of t - k .. t - 1 as they were
    trained (Sparta's at or above dpo.min_margin); 0, the released setting, replays nothing."""
    import ml_collections

    from sparta_jax.train import replayed_pairs
    from sparta_jax.workdir import iteration_dir, write_jsonl

    for t, margins in ((1, (0.2, 1.5)), (2, (0.7, 0.4)), (3, (2.0,))):
        os.makedirs(iteration_dir(str(tmp_path), t))
        write_jsonl(os.path.join(iteration_dir(str(tmp_path), t), "preferences.jsonl"),
                    [{"instruction": f"i{t}-{k}", "chosen": "c", "rejected": "r", "margin": m}
                     for k, m in enumerate(margins)])
    config = ml_collections.ConfigDict({"method": "sparta", "dpo": {"replay_iterations": 0, "min_margin": 0.5}})
    names = lambda rows: [r["instruction"] for r in rows]  # noqa: E731
    assert replayed_pairs(config, str(tmp_path), 3) == []
    config.dpo.replay_iterations = 1
    assert names(replayed_pairs(config, str(tmp_path), 3)) == ["i2-0"]
    assert replayed_pairs(config, str(tmp_path), 1) == []  # nothing before the first iteration
    config.dpo.replay_iterations = 5
    assert names(replayed_pairs(config, str(tmp_path), 3)) == ["i1-1", "i2-0"]
    config.dpo.min_margin = 0.0
    assert names(replayed_pairs(config, str(tmp_path), 3)) == ["i1-0", "i1-1", "i2-0", "i2-1"]
    config.method, config.dpo.min_margin = "spin", 0.5  # a baseline trained every pair it made
    assert names(replayed_pairs(config, str(tmp_path), 3)) == ["i1-0", "i1-1", "i2-0", "i2-1"]
    # each carries its iteration, so the summary counts it apart from the iteration's own pairs
    assert [r["replayed_from"] for r in replayed_pairs(config, str(tmp_path), 3)] == [1, 1, 2, 2]


def test_the_best_member_by_dev_gets_its_own_learning_rate(tmp_path, capsys):
    """dpo.best_member_lr_scale: the best member by dev at the latest evaluation before the
    iteration gets that factor; 1 (the released setting) scales nothing."""
    import ml_collections

    from sparta_jax.train import member_lr_scales
    from sparta_jax.workdir import iteration_dir, write_json

    config = ml_collections.ConfigDict({"dpo": {"best_member_lr_scale": 1.0}})
    assert member_lr_scales(config, str(tmp_path), 1) is None
    config.dpo.best_member_lr_scale = 0.25
    assert member_lr_scales(config, str(tmp_path), 1) is None  # no evaluation yet: nobody is scaled
    assert "no evaluation before it" in capsys.readouterr().err
    for t, best in ((0, "b"), (1, "c")):
        os.makedirs(iteration_dir(str(tmp_path), t))
        write_json(os.path.join(iteration_dir(str(tmp_path), t), "evaluation.json"), {"iteration": t, "best_member": best})
    assert member_lr_scales(config, str(tmp_path), 1) == {"b": 0.25}  # the initial tribe's best
    assert member_lr_scales(config, str(tmp_path), 2) == {"c": 0.25}
    assert member_lr_scales(config, str(tmp_path), 5) == {"c": 0.25}  # the latest evaluation before it
    assert "c (best by dev after iteration 1) at 0.25x dpo.learning_rate" in capsys.readouterr().err


@pytest.mark.e2e
@pytest.mark.reference
def test_a_best_member_at_rate_zero_is_not_trained(tiny_base, compile_cache, tmp_path):
    """One iteration with dpo.best_member_lr_scale=0: the initial best member comes out of DPO
    untrained (its LoRA B matrices still the zeros they start as), the others trained, and the
    summary and the log name the factor."""
    workdir = str(tmp_path / "run")
    out = run_to_end(workdir, overrides(tiny_base) + ["--config.iterations=1", "--config.dpo.best_member_lr_scale=0",
                                                      NO_REPORT], compile_cache)
    best = json.load(open(os.path.join(workdir, "iteration_000", "evaluation.json")))["best_member"]
    summary = json.load(open(os.path.join(workdir, "iteration_001", "summary.json")))
    assert summary["lr_scales"] == {best: 0.0} and summary["train"]["pairs_trained"] > 0
    assert f"iteration 1 DPO: {best} (best by dev after iteration 0) at 0x dpo.learning_rate" in out
    params, _, _ = final_state(workdir, iterations=1)
    b = {k: v for k, v in params.items() if "_b/" in k}  # /lora/q_proj_b/value: [layers, members, rank, out]
    assert b
    m = ["member_0", "member_1", "member_2"].index(best)
    for key, value in b.items():
        assert not value[:, m].any(), key
        assert all(value[:, i].any() for i in range(3) if i != m), key
