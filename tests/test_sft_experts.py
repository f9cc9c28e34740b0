"""Expert SFT (sparta_jax.sft) against PyTorch + PEFT, and the cached experts (sparta_jax.experts)."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import peft
import pytest
import torch
import transformers
from flax import nnx

from sparta_jax import dpo, experts, sft, sharding
from sparta_jax.models import weights as names
from sparta_jax.models.loading import from_pretrained
from loop_runs import export_in_process
from tiny_models import TINY, save_hf_model, save_tiny_chat_model

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY_CONFIG = os.path.join(REPO, "configs", "tiny.py")


@pytest.fixture(scope="module")
def mesh1():
    return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


def random_examples(n, seed):
    rng = np.random.default_rng(seed)
    return [(rng.integers(1, TINY["vocab_size"], int(rng.integers(2, 7))).tolist(),
             rng.integers(1, TINY["vocab_size"], int(rng.integers(1, 6))).tolist()) for _ in range(n)]


@pytest.mark.reference
def test_member_loss_and_gradients_match_peft(tmp_path, mesh1):
    """Per member: the HF causal-LM loss (labels -100 on prompt and padding) and its LoRA gradients."""
    save_hf_model("qwen2", tmp_path / "model")
    folders = []
    for m, targets in enumerate((["q_proj", "v_proj"], ["k_proj", "o_proj", "down_proj"])):
        base = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"), dtype=torch.float32)
        torch.manual_seed(10 + m)
        peft.get_peft_model(base, peft.LoraConfig(r=4, lora_alpha=8, target_modules=targets, init_lora_weights=False,
                                                  lora_dropout=0.0)).save_pretrained(str(tmp_path / f"a{m}"))
        folders.append(str(tmp_path / f"a{m}"))
    per_member = [random_examples(3, seed=1), random_examples(2, seed=2)]  # member 1 gets a filler row
    length = 12
    batch = sft.examples_to_batch(per_member, length, pad_id=0, rows=3)

    model, _ = from_pretrained(str(tmp_path / "model"), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False,
                               adapters=folders)
    graphdef, trainable, frozen = dpo.split_lora(model)
    cfg = sft.SFTConfig()

    def loss_fn(p):
        nll, tokens = sft.member_nll(nnx.merge(graphdef, p, frozen), batch, cfg)
        return jnp.sum(nll), (nll, tokens)

    (_, (nll, tokens)), grads = jax.value_and_grad(loss_fn, has_aux=True)(trainable)
    grads = {k: np.asarray(v) for k, v in nnx.merge(graphdef, grads, frozen).lora.arrays().items()}
    for m, folder in enumerate(folders):
        base = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "model"), dtype=torch.float32)
        base.config._attn_implementation = "eager"
        ref = peft.PeftModel.from_pretrained(base, folder, is_trainable=True)
        rows = per_member[m]
        ids = torch.zeros(len(rows), length, dtype=torch.long)
        att = torch.zeros(len(rows), length, dtype=torch.long)
        labels = torch.full((len(rows), length), -100)
        for i, (p, r) in enumerate(rows):
            ids[i, : len(p) + len(r)] = torch.tensor(p + r)
            att[i, : len(p) + len(r)] = 1
            labels[i, len(p): len(p) + len(r)] = torch.tensor(r)
        loss = ref(input_ids=ids, attention_mask=att, labels=labels).loss
        loss.backward()
        assert abs(float(nll[m]) - loss.item()) < 1e-5, m
        assert float(tokens[m]) == sum(len(r) for _, r in rows)
        checked = 0
        for name, p in ref.named_parameters():
            if "lora_" not in name:
                continue
            layer, target, which = names.parse_peft_name(name.replace(".default", ""))
            ours = grads[f"{target}_{which.lower()}"][layer, m]  # [in, r] / [r, out]
            want = p.grad.numpy().T
            rank = want.shape[1] if which == "A" else want.shape[0]
            ours = ours[:, :rank] if which == "A" else ours[:rank, :]
            np.testing.assert_allclose(ours, want, rtol=1e-4, atol=1e-6 * np.abs(want).max(), err_msg=name)
            checked += 1
        assert checked == 2 * len(ref.peft_config["default"].target_modules) * 2


def test_training_specialises_each_member(tmp_path, mesh1):
    """Two members trained on different data: each ends better at its own data than the other."""
    from sparta_jax.models.lora import AdapterSpec, LoraConfig

    save_hf_model("llama", tmp_path / "model")
    lora = LoraConfig(tuple(AdapterSpec(f"m{i}", 8, 16.0, targets=("q_proj", "v_proj", "o_proj")) for i in range(2)))
    model, _ = from_pretrained(str(tmp_path / "model"), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False, lora=lora)
    data = [random_examples(4, seed=5), random_examples(4, seed=6)]
    batch = sft.examples_to_batch(data, 12, pad_id=0)
    swapped = sft.examples_to_batch(data[::-1], 12, pad_id=0)
    cfg = sft.SFTConfig(learning_rate=2e-2, warmup_ratio=0.0, lr_schedule="constant")
    optimizer = sft.make_optimizer(cfg)
    graphdef, trainable, frozen = dpo.split_lora(model)
    step = sft.make_lora_sft_step(graphdef, cfg, optimizer)
    state = dpo.init_train_state(trainable, optimizer, cfg, 30)
    first = None
    for _ in range(30):
        state, metrics = step(state, frozen, batch)
        first = np.asarray(metrics["loss"]) if first is None else first
    trained = nnx.merge(graphdef, state.params, frozen)
    own, _ = sft.member_nll(trained, batch, cfg)
    other, _ = sft.member_nll(trained, swapped, cfg)
    own, other = np.asarray(own), np.asarray(other)
    assert np.all(own < 0.5 * first), (first, own)
    assert np.all(own < other - 1.0), (own, other)


def _sft_states(tmp_path, mesh1, batches, cfg):
    """(params, optimizer-state leaves, losses) at the start (no losses) and after each SFT step
    over `batches`, for a tribe of 3 LoRA members."""
    from sparta_jax.models.lora import AdapterSpec, LoraConfig

    if not (tmp_path / "model").exists():
        save_hf_model("llama", tmp_path / "model")
    lora = LoraConfig(tuple(AdapterSpec(f"m{i}", 4, 8.0, targets=("q_proj", "v_proj")) for i in range(3)))
    model, _ = from_pretrained(str(tmp_path / "model"), dtype=jnp.float32, mesh=mesh1, load_tokenizer=False, lora=lora)
    for name, value in model.lora.arrays().items():  # B = 0 at init: make every adapter act
        getattr(model.lora, name).set_value(value + 0.01 * jax.random.normal(jax.random.key(len(name)), value.shape))
    optimizer = sft.make_optimizer(cfg)
    graphdef, trainable, frozen = dpo.split_lora(model)
    step = sft.make_lora_sft_step(graphdef, cfg, optimizer)
    state = dpo.init_train_state(trainable, optimizer, cfg, len(batches))
    snapshot = lambda s, loss: ({k: np.asarray(v[...]) for k, v in nnx.to_flat_state(s.params)},  # noqa: E731
                                [np.asarray(x) for x in jax.tree.leaves(s.opt_state)], loss)
    out = [snapshot(state, None)]
    for batch in batches:
        state, metrics = step(state, frozen, batch)
        out.append(snapshot(state, np.asarray(metrics["loss"])))
    return out


def test_a_member_out_of_examples_is_left_out_and_frozen(tmp_path, mesh1):
    """Leaving a member without examples out of the batch gives the other members the same weights
    and losses as giving it rows of fillers; the member left out does not move at all (with filler
    rows, AdamW's weight decay moves it), and both active members learn."""
    data = [random_examples(3, seed=8), [], random_examples(2, seed=9)]
    subset = sft.examples_to_batch(data, 12, pad_id=0, rows=3)
    assert subset.ids.shape == (2, 3, 12) and subset.members.tolist() == [0, 2]
    filler = sft.SFTBatch(*(np.insert(x, 1, 0, axis=0) for x in subset[:3]), np.arange(3, dtype=np.int32))
    filler.mask[1, :, 0] = True  # a filler row: one pad token, nothing trained
    cfg = sft.SFTConfig(learning_rate=1e-2, warmup_ratio=0.0, lr_schedule="constant", weight_decay=0.01)
    (initial, _, _), *left_out = _sft_states(tmp_path, mesh1, [subset, subset], cfg)
    _, *fillers = _sft_states(tmp_path, mesh1, [filler, filler], cfg)
    p_left, p_fill = left_out[-1][0], fillers[-1][0]
    for k in p_left:
        np.testing.assert_allclose(p_left[k][:, [0, 2]], p_fill[k][:, [0, 2]], rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(p_left[k][:, 1], initial[k][:, 1], err_msg=k)  # never moved
    for (_, _, a), (_, _, b) in zip(left_out, fillers):
        np.testing.assert_allclose(a, b[[0, 2]], rtol=1e-5)
        assert b[1] == 0.0
    assert left_out[1][2][0] < left_out[0][2][0] and left_out[1][2][1] < left_out[0][2][1]  # both members learn
    moved = [k for k in p_fill if not np.array_equal(p_fill[k][:, 1], p_left[k][:, 1])]
    assert moved  # filler rows: weight decay and momentum move member 1


def test_an_idle_member_is_bit_identical_from_its_last_real_step(tmp_path, mesh1):
    """Member 1 trains in step 1 only; steps 2 and 3 leave its adapter and its Adam moments exactly as
    step 1 left them (AdamW's momentum alone would keep moving them), while the others go on."""
    data = [random_examples(3, seed=8), random_examples(3, seed=10), random_examples(2, seed=9)]
    full = sft.examples_to_batch(data, 12, pad_id=0, rows=3)
    without = sft.examples_to_batch([data[0], [], data[2]], 12, pad_id=0, rows=3)
    cfg = sft.SFTConfig(learning_rate=1e-2, warmup_ratio=0.0, lr_schedule="constant", weight_decay=0.01)
    _, (p1, o1, _), _, (p3, o3, _) = _sft_states(tmp_path, mesh1, [full, without, without], cfg)
    for k in p1:
        np.testing.assert_array_equal(p3[k][:, 1], p1[k][:, 1], err_msg=k)
        assert not np.array_equal(p3[k][:, 0], p1[k][:, 0]) and not np.array_equal(p3[k][:, 2], p1[k][:, 2])
    moments = [(a, b) for a, b in zip(o1, o3) if a.ndim >= 2 and a.shape[1] == 3]
    assert moments
    for a, b in moments:
        np.testing.assert_array_equal(b[:, 1], a[:, 1])


@pytest.mark.reference
def test_held_out_and_too_long_items_are_skipped(smollm2_dir):
    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    records = [{"instruction": "What is 2 + 2?", "answer": 4}, {"instruction": "What is 3 + 3?", "answer": 6},
               {"instruction": "x " * 200, "answer": 1}, {"instruction": "Name a colour.", "answer": None}]
    out, skipped = experts.sft_examples(tok, records, template="The answer is {answer}.", system_prompt="Be brief.",
                                        max_prompt_length=64, max_length=96, held_out={"What is 3 + 3?"})
    assert skipped == {"held_out": 1, "no_answer": 1, "too_long": 1}
    (prompt, response), = out
    assert tok.decode(response) == "The answer is 4.<|im_end|>"
    assert tok.decode(prompt).endswith("<|im_start|>user\nWhat is 2 + 2?<|im_end|>\n<|im_start|>assistant\n")
    assert "Be brief." in tok.decode(prompt)


def test_expert_names_are_unique():
    import ml_collections

    cfg = ml_collections.ConfigDict(dict(names=(), sources=(
        dict(kind="bundled", task="mixed"), dict(kind="bundled", task="arithmetic"), dict(kind="bundled", task="mixed"),
        dict(kind="local", path="x.jsonl", name="notes"))))
    assert [n for n, _ in experts.expert_sources(cfg)] == ["mixed_0", "arithmetic", "mixed_1", "notes"]
    cfg.sources = ()
    with pytest.raises(experts.ConfigError, match="sources is empty"):
        experts.expert_sources(cfg)


@pytest.fixture(scope="module")
def tiny_chat_base(tmp_path_factory, smollm2_dir):
    folder = tmp_path_factory.mktemp("tiny_chat_base")
    save_tiny_chat_model(folder, smollm2_dir)
    return str(folder)


def cli_args(base, cache):
    return [f"--config={TINY_CONFIG}", f"--config.tribe.base={base}", f"--config.experts.dir={cache}",
            "--config.experts.examples=12", "--config.experts.rows_per_member=4", "--config.experts.learning_rate=0.01"]


@pytest.mark.e2e
@pytest.mark.reference
def test_cli_builds_caches_and_the_loop_starts_from_the_experts(tmp_path, tiny_chat_base):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    cache = tmp_path / "experts"
    built = subprocess.run([sys.executable, "-m", "sparta_jax.experts", *cli_args(tiny_chat_base, cache)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=600)
    assert built.returncode == 0, built.stderr[-3000:]
    folders = built.stdout.split()
    assert [os.path.basename(f) for f in folders] == ["arithmetic", "word_problems", "multiple_choice", "mixed"]
    root = os.path.dirname(folders[0])
    manifest = json.load(open(os.path.join(root, experts.MANIFEST)))
    assert manifest["steps"] == 3 and set(manifest["members"]) == {os.path.basename(f) for f in folders}
    for name, info in manifest["members"].items():
        assert info["examples"] == 12 - info["skipped"]["held_out"] - info["skipped"]["too_long"] > 0
        assert info["loss_last_step"] < info["loss_first_step"], name
    # The adapters are real PEFT folders, trained away from B = 0 and different from each other.
    loaded = [peft.PeftConfig.from_pretrained(f) for f in folders]
    assert all(c.r == 4 and c.lora_alpha == 8.0 for c in loaded)
    from safetensors.numpy import load_file

    bs = [np.concatenate([v.ravel() for k, v in sorted(load_file(os.path.join(f, "adapter_model.safetensors")).items())
                          if "lora_B" in k]) for f in folders]
    assert all(np.abs(b).max() > 0 for b in bs) and not np.allclose(bs[0], bs[1])

    # The same config again: the cached set, no training.
    again = subprocess.run([sys.executable, "-m", "sparta_jax.experts", *cli_args(tiny_chat_base, cache)], cwd=REPO,
                           env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and again.stdout.split() == folders
    assert "experts: cached in" in again.stderr and "expert SFT" not in again.stderr

    # The main loop with experts.enabled starts from exactly these adapters.
    workdir = tmp_path / "run"
    run = subprocess.run([sys.executable, "-m", "sparta_jax.main", *cli_args(tiny_chat_base, cache),
                          "--config.experts.enabled=True", f"--workdir={workdir}", "--config.iterations=1",
                          "--config.instructions_per_iteration=4", "--config.generation.max_new_tokens=8",
                          "--config.dpo.max_length=96", "--config.dpo.max_prompt_length=80"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "experts: cached in" in run.stderr
    ev = json.load(open(workdir / "iteration_000" / "evaluation.json"))
    assert set(ev["dev"]) == {"arithmetic", "word_problems", "multiple_choice", "mixed"}
    rep = json.load(open(workdir / "iteration_001" / "reputations.json"))
    assert set(rep["end"]) == set(ev["dev"])
    assert json.load(open(workdir / "tribe.json"))["adapters"] == folders
    # Four members and a verifiable task: every panel of the report is drawn from this real run.
    plotted = {"reputation", "win_matrix", "judge_agreement", "judge_signal", "margins", "unparseable",
               "evaluation", "reputation_accuracy", "dpo"}
    assert set(os.listdir(workdir / "report")) == {f"{p}.png" for p in plotted} | {"report.html"}
    html = (workdir / "report" / "report.html").read_text()
    assert "panel-error" not in html.replace(".panel-error", "") and html.count("data:image/png;base64,") == 9
    # Export rebuilds the tribe from those folders and the trained checkpoint.
    status, _, err = export_in_process("--workdir", workdir, "--member", "word_problems", "--out",
                                       tmp_path / "exported", "--peft")
    assert status == 0, err[-3000:]
    assert peft.PeftConfig.from_pretrained(str(tmp_path / "exported")).r == 4

    # experts.copies (configs/sweeps/diversity.py): each cached expert in two members, equal weights.
    from sparta_jax import sharding
    from sparta_jax.config_files import load_config
    from sparta_jax.tribe import build_tribe

    config = load_config(TINY_CONFIG)
    config.tribe.base, config.experts.dir, config.experts.enabled = tiny_chat_base, str(cache), True
    config.experts.examples, config.experts.rows_per_member, config.experts.learning_rate = 12, 4, 0.01
    config.experts.copies = 2
    tribe_cfg, adapters = experts.tribe_source(config, sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}))
    assert adapters == tuple(f for f in folders for _ in range(2))
    assert tuple(tribe_cfg.names) == ("arithmetic_0", "arithmetic_1", "word_problems_0", "word_problems_1",
                                      "multiple_choice_0", "multiple_choice_1", "mixed_0", "mixed_1")
    tribe = build_tribe(tribe_cfg, config.sampler, sharding.make_mesh({"data": 1, "fsdp": -1, "tensor": 1}),
                        adapters=adapters)
    assert tribe.names == tuple(tribe_cfg.names)
    import jax
    from sparta_jax import dpo

    leaves = [np.asarray(x) for x in jax.tree.leaves(dpo.split_lora(tribe.model)[1])]  # [layers, members, ...]
    assert all(np.array_equal(x[:, 2 * k], x[:, 2 * k + 1]) for x in leaves for k in range(4))
    assert any(not np.array_equal(x[:, 0], x[:, 2]) for x in leaves)  # distinct experts differ


def test_a_killed_build_is_not_taken_for_a_finished_one(tmp_path):
    (tmp_path / "arithmetic").mkdir()
    (tmp_path / "arithmetic" / "adapter_config.json").write_text("{}")
    assert experts.read_manifest(str(tmp_path)) is None  # adapters but no manifest
    (tmp_path / experts.MANIFEST).write_text(json.dumps({"names": ["arithmetic", "mixed"]}))
    assert experts.read_manifest(str(tmp_path)) is None  # a named adapter is missing
    (tmp_path / "mixed").mkdir()
    (tmp_path / "mixed" / "adapter_config.json").write_text("{}")
    assert experts.read_manifest(str(tmp_path))["names"] == ["arithmetic", "mixed"]


def _tiny_config(base, cache, every, judge=False):
    from sparta_jax.config_files import load_config

    c = load_config(TINY_CONFIG)
    c.tribe.base = base
    c.experts.dir, c.experts.examples, c.experts.rows_per_member = str(cache), 12, 4
    c.experts.learning_rate, c.experts.checkpoint_every = 0.01, every
    if judge:  # the first expert answers the `case` task and judges it (a quarter of its data)
        sources = [dict(s) for s in c.experts.sources]
        sources[0] = dict(kind="bundled", task="case", train=24, dev=0, test=0, seed=5, judge={"share": 0.25})
        c.experts.sources = tuple(sources)
        c.experts.max_length, c.experts.max_prompt_length = 160, 150
    return c


@pytest.mark.e2e
@pytest.mark.reference
def test_a_killed_expert_build_resumes_to_the_uninterrupted_result(tmp_path, tiny_chat_base, monkeypatch):
    from safetensors.numpy import load_file

    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    whole = experts.ensure_experts(_tiny_config(tiny_chat_base, tmp_path / "whole", 1, judge=True), mesh)

    real_step = sft.make_lora_sft_step

    def dies_on_the_third_call(*args, **kwargs):
        step, calls = real_step(*args, **kwargs), []

        def wrapped(*a):
            calls.append(1)
            if len(calls) == 3:
                raise KeyboardInterrupt("killed")
            return step(*a)
        return wrapped

    config = _tiny_config(tiny_chat_base, tmp_path / "killed", 1, judge=True)
    monkeypatch.setattr(sft, "make_lora_sft_step", dies_on_the_third_call)
    with pytest.raises(KeyboardInterrupt):
        experts.ensure_experts(config, mesh)
    monkeypatch.setattr(sft, "make_lora_sft_step", real_step)
    partial = [p for p in os.listdir(tmp_path / "killed") if p.endswith(".partial")]
    assert len(partial) == 1 and not [p for p in os.listdir(tmp_path / "killed") if len(p) == 16]
    messages = []
    resumed = experts.ensure_experts(config, mesh, log=messages.append)
    assert "expert SFT: resumed after step 2/4" in messages  # 12 answers + 4 judge examples, 4 rows a step
    assert os.listdir(tmp_path / "killed") == [os.path.basename(os.path.dirname(resumed[0]))]  # partial removed
    for a, b in zip(whole, resumed):
        ta, tb = (load_file(os.path.join(f, "adapter_model.safetensors")) for f in (a, b))
        assert ta.keys() == tb.keys()
        for k in ta:
            np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)
    hist = [json.load(open(os.path.join(os.path.dirname(f[0]), experts.MANIFEST)))["loss_history"]
            for f in (whole, resumed)]
    assert hist[0] == hist[1] and len(hist[0]) == 4
    report = json.load(open(os.path.join(os.path.dirname(resumed[0]), experts.MANIFEST)))["members"]
    first = report[next(iter(report))]
    assert (first["examples"], first["judge_examples"]) == (12, 4)


@pytest.mark.e2e
@pytest.mark.reference
def test_two_processes_build_the_same_experts_as_one(tmp_path, tiny_chat_base):
    """jax.distributed with two CPU processes (one device each): every process gathers the adapters,
    process 0 writes them, both return the folders; equal to one process with two devices."""
    import socket

    from safetensors.numpy import load_file

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    env.pop("XLA_FLAGS", None)
    one = subprocess.run([sys.executable, "-m", "sparta_jax.experts", *cli_args(tiny_chat_base, tmp_path / "one")],
                         cwd=REPO, env={**env, "XLA_FLAGS": "--xla_force_host_platform_device_count=2"},
                         capture_output=True, text=True, timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    procs = [subprocess.Popen([sys.executable, "-m", "sparta_jax.experts", *cli_args(tiny_chat_base, tmp_path / "two"),
                               "--config.distributed.initialize=True",
                               f"--config.distributed.coordinator_address=localhost:{port}",
                               "--config.distributed.num_processes=2", f"--config.distributed.process_id={i}"],
                              cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for i in range(2)]
    outs = [p.communicate(timeout=600) for p in procs]
    for p, (_, err) in zip(procs, outs):
        assert p.returncode == 0, err[-3000:]
    printed = [[line for line in out.splitlines() if line.startswith(str(tmp_path))] for out, _ in outs]
    assert printed[1] == []  # only process 0 prints the folders (Gloo writes its own lines)
    folders_one, folders_two = one.stdout.split(), printed[0]
    assert [os.path.basename(f) for f in folders_two] == [os.path.basename(f) for f in folders_one]
    for a, b in zip(folders_one, folders_two):
        ta, tb = (load_file(os.path.join(f, "adapter_model.safetensors")) for f in (a, b))
        for k in ta:
            np.testing.assert_array_equal(ta[k], tb[k], err_msg=k)


@pytest.mark.reference
def test_judge_examples_are_the_judges_own_prompt_with_a_score_target(smollm2_dir):
    """Experts may learn to judge: the exact chat prompt the tribe's judges read, over a right or a
    near-miss wrong answer to a training instruction, with `{"score": N}` as the target."""
    from sparta_jax import evaluation, inference
    from sparta_jax.tasks import generate_task

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    records = generate_task("arithmetic", 8, seed=4)
    held_out = {records[1]["instruction"]}
    judge = experts.judge_settings({"judge": {"share": 0.5, "right_score": 9, "wrong_score": 2}})
    out, skipped = experts.judge_examples(tok, records, judge, 6, template="The answer is {answer}.",
                                          system_prompt="Be brief.", max_prompt_length=400, max_length=420,
                                          held_out=held_out, seed=0)
    assert len(out) == 6 and skipped == {"no_near_miss": 0, "too_long": 0}
    usable = [r for r in records if r["instruction"] not in held_out]
    for i, (prompt, response) in enumerate(out):
        record, right = usable[i // 2], i % 2 == 0
        assert tok.decode(response) == ('{"score": 9}' if right else '{"score": 2}') + "<|im_end|>"
        text = tok.decode(prompt)
        answer = text.split("Response to be evaluated: ")[1].split("\n")[0]
        assert evaluation.score(answer, record["answer"], "numeric") == (1.0 if right else 0.0)
        assert prompt == inference.judge_chat_ids(tok, "Be brief.", record["instruction"], answer, max_tokens=512,
                                               mode="fixed")
    # Noise moves scores around their targets, seeded, within 1..10; too-long prompts are skipped.
    noisy = experts.judge_settings({"judge": {"noise": 3.0, "right_score": 10, "wrong_score": 1}})
    scores = [int(tok.decode(r).split(": ")[1].split("}")[0]) for _, r in experts.judge_examples(
        tok, records, noisy, 40, template="{answer}", system_prompt=None, max_prompt_length=400, max_length=420,
        held_out=set(), seed=1)[0]]
    assert all(1 <= s <= 10 for s in scores) and len(set(scores)) > 3
    assert np.mean(scores[0::2]) > np.mean(scores[1::2]) + 3
    _, skipped = experts.judge_examples(tok, records, judge, 4, template="{answer}", system_prompt=None,
                                        max_prompt_length=64, max_length=96, held_out=set(), seed=0)
    assert skipped["too_long"] == 4
    assert experts.judge_settings({"kind": "bundled"}) is None
    for bad, message in (({"share": 1.0}, "share"), ({"right_score": 11}, "right_score"), ({"shares": 0.5}, "unknown")):
        with pytest.raises(experts.ConfigError, match=message):
            experts.judge_settings({"judge": bad})


@pytest.mark.reference
def test_judge_examples_can_use_every_wrong_form_and_abstain_on_other_parts(smollm2_dir):
    """wrong_answers="wrong_forms" draws the wrong answers from every wrong rewrite of the phrase (the
    mistakes the other part's experts make); abstain_share of the examples are over other parts'
    instructions, scored abstain_score for right and wrong answers alike."""
    from sparta_jax import evaluation
    from sparta_jax.tasks import generate_task, wrong_forms

    tok = transformers.AutoTokenizer.from_pretrained(smollm2_dir)
    case, reverse = generate_task("case", 6, seed=1), generate_task("reverse", 6, seed=2)
    judge = experts.judge_settings({"judge": {"wrong_answers": "wrong_forms", "abstain_share": 0.25,
                                              "abstain_score": 5}})
    out, skipped = experts.judge_examples(tok, case, judge, 40, template="The answer is {answer}.",
                                          system_prompt=None, max_prompt_length=400, max_length=420,
                                          held_out=set(), seed=0, abstain_records=reverse)
    assert len(out) == 40 and skipped == {"no_near_miss": 0, "too_long": 0}
    by_instruction = {r["instruction"]: r for r in case + reverse}
    seen_wrong, abstained = set(), []
    for prompt, response in out:
        text = tok.decode(prompt)
        record = by_instruction[text.split("Question: ")[1].split("\n")[0]]
        answer = text.split("Response to be evaluated: The answer is ")[1].split(".\n")[0]
        score = int(tok.decode(response).split(": ")[1].split("}")[0])
        right = evaluation.score(answer, record["answer"], "cased") == 1.0
        if record["task"] == "reverse":  # the other part: abstained on whatever the answer
            abstained.append((right, score))
            assert score == 5
            continue
        assert score == (9 if right else 2), (answer, record)
        if not right:
            assert answer in wrong_forms(record)
            seen_wrong.add((record["instruction"], answer))
    assert len(abstained) == 10 and {r for r, _ in abstained} == {True, False}
    assert len({a for _, a in seen_wrong}) > 6  # more than one wrong form per phrase (near_miss gives one)
    # Defaults are today's examples: no abstaining, the evaluator's near miss; bad settings are refused.
    plain = experts.judge_settings({"judge": {"share": 0.5}})
    assert plain["wrong_answers"] == "near_miss" and plain["abstain_share"] == 0.0
    same = experts.judge_examples(tok, case, plain, 12, template="{answer}", system_prompt=None, max_prompt_length=400,
                                  max_length=420, held_out=set(), seed=0, abstain_records=reverse)[0]
    assert same == experts.judge_examples(tok, case, plain, 12, template="{answer}", system_prompt=None,
                                          max_prompt_length=400, max_length=420, held_out=set(), seed=0)[0]
    for bad, message in (({"wrong_answers": "any"}, "wrong_answers"), ({"abstain_share": 1.0}, "abstain_share"),
                         ({"abstain_score": 0}, "abstain_score")):
        with pytest.raises(experts.ConfigError, match=message):
            experts.judge_settings({"judge": bad})


@pytest.mark.reference
def test_experts_mix_in_judge_examples_at_their_share(tmp_path, tiny_chat_base, mesh1):
    from sparta_jax.config_files import load_config

    config = load_config(TINY_CONFIG)
    config.tribe.base = tiny_chat_base
    config.experts.examples, config.experts.rows_per_member = 8, 4
    config.experts.max_length, config.experts.max_prompt_length = 200, 190
    sources = [dict(s) for s in config.experts.sources[:3]]
    sources[0]["judge"] = {"share": 0.25}
    config.experts.sources = tuple(sources)
    _, _, names, report = experts.train_experts(config, mesh1)
    first, second = report["members"][names[0]], report["members"][names[1]]
    assert first["judge_examples"] == round(first["examples"] / 3) > 0  # a quarter of the mix
    assert "judge_examples" not in second
    assert first["loss_last_step"] < first["loss_first_step"]


# ------------------------------------------------------------------- the set shipped with the package
def test_packaged_specialists_match_their_manifest_and_config(tmp_path):
    """sparta_jax/assets/specialists: every file's size and sha256 as its manifest says, 20 MB at most,
    built by the command it names, with the settings configs/specialists.py gives today (so that
    command rebuilds this set); a changed byte is caught."""
    import shutil

    from sparta_jax.config_files import load_config
    from sparta_jax.errors import ConfigError

    folder = os.path.join(experts.PACKAGED_ROOT, "specialists")
    manifest = experts.verify_packaged(folder)
    config = load_config(os.path.join(REPO, "configs", "specialists.py"))
    assert manifest["names"] == list(config.experts.names) == ["case_1", "case_2", "reverse_1", "reverse_2"]
    assert manifest["settings"] == experts.expert_settings(config)
    assert manifest["base"] == config.tribe.base == "embedded"
    assert manifest["command"] == "python -m sparta_jax.experts --config=configs/specialists.py"
    assert sum(f["bytes"] for f in manifest["files"].values()) <= 20e6
    assert experts.packaged_experts("specialists") == tuple(os.path.join(folder, n) for n in manifest["names"])
    for name in manifest["names"]:
        spec = json.load(open(os.path.join(folder, name, "adapter_config.json")))
        assert [spec["r"], spec["lora_alpha"], spec["target_modules"]] == manifest["settings"]["lora"]
        assert spec["base_model_name_or_path"] == experts.EMBEDDED_HF_ID
    assert manifest["build"]["steps"] > 0 and all(manifest["build"]["members"][n]["examples"] > 0
                                                  for n in manifest["names"])

    copy = tmp_path / "specialists"
    shutil.copytree(folder, copy)
    weights = copy / "reverse_1" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(ConfigError, match="reverse_1/adapter_model.safetensors does not match its manifest"):
        experts.verify_packaged(str(copy))
    with pytest.raises(ConfigError, match="no packaged expert set 'nothing'"):
        experts.packaged_experts("nothing")


@pytest.mark.reference
def test_packaged_specialists_load_in_peft_and_here_with_the_same_logits(smollm2_dir):
    """Each shipped adapter over the embedded base: PEFT's logits (the reference) equal ours."""
    folders = experts.packaged_experts("specialists")
    model, tokenizer = from_pretrained(smollm2_dir, dtype=jnp.float32, adapters=list(folders))
    ids = tokenizer.encode("Rewrite in Title Case: apple green", add_special_tokens=False)
    base = transformers.AutoModelForCausalLM.from_pretrained(smollm2_dir, dtype=torch.float32)
    plain = base(torch.tensor([ids])).logits[0].detach().numpy()
    for m, folder in enumerate(folders):
        ours = np.asarray(model(jnp.asarray([ids]), adapter_ids=jnp.asarray([m]))[0])
        ref = peft.PeftModel.from_pretrained(base, folder).eval()
        theirs = ref(torch.tensor([ids])).logits[0].detach().numpy()
        base = ref.unload()  # the bare base again for the next adapter
        np.testing.assert_allclose(ours, theirs, atol=2e-4, rtol=0)
        assert np.abs(theirs - plain).max() > 0.1, folder  # the adapter changes the function
