"""Mixed-base tribes (`tribe.groups`): a Llama group and a Gemma 3 group in one tribe.

Group configs and their errors; then a tiny tribe of two random architectures, each with its
real tokenizer and chat template (SmolLM2's, Gemma 3's), run for 2 iterations: killed in
iteration 2 and resumed, it ends bit-identical to the uninterrupted run; duels cross groups,
judges read answers in their own template, each group trains its own weights, and a member of
either group exports and reloads in transformers with the tribe's logits.
"""
from __future__ import annotations

import json
import os
import pathlib

import ml_collections
import numpy as np
import pytest

from sparta_jax.config_check import ConfigError, validate_config
from sparta_jax.config_files import load_config
from sparta_jax.tribe import group_configs
from loop_runs import TINY_CONFIG, export_in_process, final_state, run_once, run_to_end, run_until
from tiny_models import save_tiny_chat_model, save_tiny_gemma_chat_model


def tiny_with_groups(groups):
    c = load_config(TINY_CONFIG)
    c.tribe.groups = groups
    return c


def test_groups_take_the_shared_fields_and_name_their_members():
    c = tiny_with_groups((dict(name="a", base="/x/llama", members=2),
                          dict(name="b", base="/x/gemma", names=("g1", "g2", "g3"), lora_rank=16)))
    (na, a), (nb, b) = group_configs(c.tribe)
    assert (na, nb) == ("a", "b")
    assert a.base == "/x/llama" and a.names == ("a_0", "a_1") and a.lora_rank == c.tribe.lora_rank == 4
    assert b.names == ("g1", "g2", "g3") and b.lora_rank == 16 and b.dtype == c.tribe.dtype
    assert "groups" not in a and a.adapters == () and a.system_prompt == c.tribe.system_prompt
    validate_config(c)


@pytest.mark.parametrize("groups, message", [
    ((dict(name="a", members=2),), "needs a base"),
    ((dict(name="a", base="x", colour="red"),), "unknown keys ['colour']"),
    ((dict(name="a", base="x"), dict(name="a", base="y")), "group names must be unique"),
    ((dict(name="a", base="x", kind="half"),), "group 'a': config.tribe.kind = 'half'"),
    ((dict(name="a", base="x", kind="full", adapters=("p",)),), "group 'a': config.tribe.adapters"),
])
def test_bad_groups_are_config_errors_naming_the_group(groups, message):
    with pytest.raises(ConfigError) as e:
        validate_config(tiny_with_groups(groups))
    assert message in str(e.value)


def test_groups_and_whole_tribe_experts_do_not_mix():
    c = tiny_with_groups((dict(name="a", base="x"),))
    c.experts.enabled = True
    with pytest.raises(ConfigError, match="experts.enabled"):
        validate_config(c)


def test_a_baseline_on_a_mixed_tribe_trains_its_member_within_its_own_group():
    from sparta_jax.tribe import actor_config

    c = tiny_with_groups((dict(name="a", base="/x/llama", members=2),
                          dict(name="b", base="/x/gemma", adapters=("/p/g1", "/p/g2"), lora_rank=16)))
    cfg, adapters = actor_config(c.tribe, ("a_0", "a_1", "g1", "g2"), "g2")
    assert cfg.base == "/x/gemma" and cfg.names == ("g2",) and cfg.lora_rank == 16 and adapters == ("/p/g2",)
    assert "groups" not in cfg
    cfg, adapters = actor_config(c.tribe, ("a_0", "a_1", "g1", "g2"), "a_1")
    assert cfg.base == "/x/llama" and cfg.names == ("a_1",) and adapters == ()


# ----------------------------------------------------------------------------- a mixed run
def write_mixed_config(root, smollm2_dir, gemma_dir) -> str:
    """A config file in `root`: 2 tiny Llama LoRA members (SmolLM2's tokenizer), 2 tiny Gemma 3 LoRA
    members (Gemma 3 270M's tokenizer, 262k vocabulary) and 2 whole tiny Llamas (tribe.kind "full"), 2
    instructions per iteration (a duel each: Gemma's 262k-token logits make every pair dear on CPU)."""
    llama = save_tiny_chat_model(root / "llama", smollm2_dir)
    gemma = save_tiny_gemma_chat_model(root / "gemma", gemma_dir)
    full = [save_tiny_chat_model(root / f"full_{k}", smollm2_dir, seed=seed) for seed, k in ((1, "a"), (2, "b"))]
    path = root / "mixed_config.py"
    path.write_text(
        "from sparta_jax.config_files import load_config\n\n\n"
        "def get_config():\n"
        f"    c = load_config({TINY_CONFIG!r})\n"
        f"    c.tribe.groups = (dict(name='llama', base={llama!r}, members=2),\n"
        f"                      dict(name='gemma', base={gemma!r}, members=2),\n"
        f"                      dict(name='full', base={full[0]!r}, kind='full', member_folders={tuple(full)!r}))\n"
        "    c.instructions_per_iteration = 2\n"
        "    c.generation.max_new_tokens = 8\n"
        "    c.dpo.max_length, c.dpo.max_prompt_length = 96, 80\n"
        "    return c\n")
    return str(path)


@pytest.fixture(scope="session")
def mixed_run(smollm2_dir, gemma_dir, compile_cache):
    """(workdir, output): the mixed tribe's 2 iterations, run once per session whichever worker asks
    first (its tests may run in either) and read only; its config file lies beside the workdir."""
    return run_once("mixed_run", [], compile_cache,
                    lambda folder: write_mixed_config(pathlib.Path(folder), smollm2_dir, gemma_dir))


@pytest.fixture(scope="session")
def mixed_config(mixed_run):
    return os.path.join(os.path.dirname(mixed_run[0]), "mixed_config.py")


@pytest.fixture(scope="module")
def mixed_tribe(mixed_run):
    """The finished run's tribe with its trained members (sparta_jax.export's loader)."""
    from sparta_jax.export import load_run_tribe

    return load_run_tribe(mixed_run[0])


@pytest.mark.e2e
@pytest.mark.reference
def test_a_killed_mixed_run_resumes_to_the_uninterrupted_result(mixed_run, mixed_config, compile_cache, tmp_path):
    workdir, _ = mixed_run
    killed = str(tmp_path / "killed")
    # Killed once iteration 2 trains: checkpoint 1 (saved in the background) has long been written.
    run_until(killed, [], compile_cache, "iteration 2 DPO:", mixed_config)
    out = run_to_end(killed, [], compile_cache, mixed_config)
    assert "resumed from the checkpoint after iteration 1" in out
    params_a, reps_a, prefs_a = final_state(workdir)
    params_b, reps_b, prefs_b = final_state(killed)
    assert {k.split("/")[1] for k in params_a} == {"llama", "gemma", "full"}  # one trainable state per group
    assert params_a.keys() == params_b.keys()
    for k in params_a:
        np.testing.assert_array_equal(params_a[k], params_b[k], err_msg=k)
    assert reps_a == reps_b and prefs_a == prefs_b


@pytest.mark.e2e
@pytest.mark.reference
def test_duels_cross_groups_and_judges_read_answers_in_their_own_template(mixed_run, mixed_tribe):
    from sparta_jax import combat, inference
    from sparta_jax.sparta import Matchup

    workdir, out = mixed_run
    assert "pairs from 2 duels" in out
    groups = {"llama_0": "llama", "llama_1": "llama", "gemma_0": "gemma", "gemma_1": "gemma", "full_a": "full",
              "full_b": "full"}
    duels = [json.loads(line) for t in (1, 2) for line in open(os.path.join(workdir, f"iteration_00{t}", "duels.jsonl"))]
    assert any(len({groups[m] for m in d["models"]}) == 2 for d in duels)  # a Llama against a Gemma
    assert any({groups[j] for j in d["judges"]} == {"llama", "gemma", "full"} for d in duels)  # by every group
    assert all(set(d["judges"]) == set(groups) - set(d["models"]) for d in duels)

    tribe, step = mixed_tribe
    assert step == 2 and tribe.names == ("llama_0", "llama_1", "gemma_0", "gemma_1", "full_a", "full_b")
    assert tribe.group_names == ("llama", "gemma", "full")
    answer = "The answer is 42."
    jobs = combat.judge_jobs(tribe, [Matchup(0, "llama_0", "gemma_0")], ["What is 40 + 2?"], [(answer, "41")],
                             judge_cfg=ml_collections.ConfigDict(dict(max_prompt_tokens=512)), mode="fixed")
    assert [(judge, side) for _, judge, side, _, _ in jobs] == [
        ("llama_1", 0), ("llama_1", 1), ("gemma_1", 0), ("gemma_1", 1), ("full_a", 0), ("full_a", 1), ("full_b", 0),
        ("full_b", 1)]
    assert jobs[4][4] == jobs[0][4]  # the whole Llamas speak SmolLM2's template too
    llama_text = tribe.groups[0].tokenizer.decode(jobs[0][4])
    gemma_text = tribe.groups[1].tokenizer.decode(jobs[2][4])
    assert answer in llama_text and answer in gemma_text
    assert "<|im_start|>user" in llama_text and "<start_of_turn>" not in llama_text  # SmolLM2's template
    assert gemma_text.count("<start_of_turn>user") == 1 and "<|im_start|>" not in gemma_text  # Gemma's
    system = tribe.groups[1].system_prompt  # Gemma has no system role: its template folds it into the user turn
    assert system and gemma_text.index("<start_of_turn>user") < gemma_text.index(system) < gemma_text.index(answer)
    assert inference.chat_ids(tribe, "Hi", tribe.index("gemma_1")) == inference.chat_ids(tribe.groups[1], "Hi")


@pytest.mark.e2e
@pytest.mark.reference
def test_each_group_trains_and_the_report_names_each_members_base(mixed_run):
    workdir, _ = mixed_run
    tribe_json = json.load(open(os.path.join(workdir, "tribe.json")))
    bases = tribe_json["bases"]
    assert bases["llama_0"].endswith("llama") and bases["gemma_1"].endswith("gemma")
    assert bases["full_a"].endswith("full_a") and bases["full_b"].endswith("full_b")  # a whole model: its folder
    summary = json.load(open(os.path.join(workdir, "iteration_001", "summary.json")))
    train = summary["train"]
    assert set(train["groups"]) == {"llama", "gemma", "full"} and train["members"] == list(bases)
    assert len(train["dpo_per_member"]["loss"]) == 6 and all(np.isfinite(train["dpo_per_member"]["loss"]))
    for group in train["groups"].values():  # every member trains on every pair
        assert group["pairs_trained"] == summary["pairs"] > 0
    report = open(os.path.join(workdir, "report", "report.html")).read()
    assert "members and bases" in report
    assert f"llama_0, llama_1: <code>{bases['llama_0']}</code>" in report
    assert f"gemma_0, gemma_1: <code>{bases['gemma_0']}</code>" in report


@pytest.mark.parametrize("member", ["llama_1", "gemma_0", "full_b"])
@pytest.mark.e2e
@pytest.mark.reference
def test_a_member_of_either_group_exports_and_reloads_with_the_same_logits(mixed_run, mixed_tribe, member, tmp_path):
    import jax.numpy as jnp
    import torch
    import transformers


    workdir, _ = mixed_run
    status, _, err = export_in_process("--workdir", workdir, "--member", member, "--out", tmp_path / "out")
    assert status == 0, err[-3000:]
    tribe, _ = mixed_tribe
    group = tribe.group(tribe.index(member))
    ids = np.asarray([group.tokenizer.encode("What is 2 + 3? Give the final answer as a number.")])
    if member.startswith("full"):  # a whole model of its own
        ours = np.asarray(group.model.member(group.index(member))(jnp.asarray(ids)))
    else:
        ours = np.asarray(group.model(jnp.asarray(ids), adapter_ids=jnp.asarray([group.index(member)])))

    def hf_logits(folder):
        hf = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
        assert hf.config.model_type == ("gemma3_text" if member.startswith("gemma") else "llama")
        with torch.no_grad():
            return hf(input_ids=torch.tensor(ids)).logits.numpy()

    np.testing.assert_allclose(ours, hf_logits(str(tmp_path / "out")), atol=1e-4)
    started = tribe_json_bases(mixed_run[0])[member]  # the member's base, or a whole member's own folder
    assert np.abs(ours - hf_logits(started)).max() > 1e-6  # it trained


def tribe_json_bases(workdir):
    return json.load(open(os.path.join(workdir, "tribe.json")))["bases"]


@pytest.mark.e2e
@pytest.mark.reference
def test_the_audit_asks_each_judge_in_its_own_template(mixed_tribe):
    import jax

    from sparta_jax import inference
    from sparta_jax.audit import judge_items

    tribe, _ = mixed_tribe
    with pytest.raises(ValueError, match="pass member="):  # a mixed tribe's prompt needs its member
        inference.chat_ids(tribe, "Hi")
    items = [{"instruction": "What is 2 + 3?", "right": "The answer is 5.", "wrong": "The answer is 6."},
             {"instruction": "What is 7 - 4?", "right": "The answer is 3.", "wrong": "The answer is 4."}]
    judge_cfg = ml_collections.ConfigDict(dict(mode="logits", max_prompt_tokens=512, batch_size=8))
    right, wrong = judge_items(tribe, items, judge_cfg, "fixed", jax.random.key(0), lambda n: None)
    for m, name in enumerate(tribe.names):
        group = tribe.group(m)
        for i, item in enumerate(items):
            expected = [inference.logit_scores(group, [(group.index(name), inference.judge_prompt_ids(
                group, item["instruction"], item[side], judge_cfg=judge_cfg, mode="fixed"))], batch_size=8)[0]
                for side in ("right", "wrong")]
            np.testing.assert_allclose([right[m, i], wrong[m, i]], expected, rtol=1e-5, err_msg=name)
