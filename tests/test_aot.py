"""Ahead-of-time compilation of a config's programs, on a 2 x 4 mesh of fake CPU devices."""
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from flax import nnx

from sparta_jax import aot, dpo
from sparta_jax.config_files import load_config
from sparta_jax.sharding import path_name

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOPOLOGY = "cpu:8"
MESH = dict(data=1, fsdp=2, tensor=4)


def tiny_config():
    c = load_config(os.path.join(REPO, "configs", "tiny.py"))
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = MESH["data"], -1, MESH["tensor"]
    c.generation.max_prompt_tokens = 64
    c.judge.max_prompt_tokens = 64
    c.judge.mode = "sampled"  # all four programs
    return c


def _bytes(leaf):
    return int(np.prod(leaf.shape)) * np.dtype(leaf.dtype).itemsize


def _per_device_bytes(tree, mesh):
    """Bytes one device holds of a tree of ShapeDtypeStructs, from each leaf's spec and the mesh."""
    total = 0
    for leaf in jax.tree.leaves(tree):
        ways = 1
        for axis in leaf.sharding.spec:
            if axis is not None:
                ways *= mesh.shape[axis]
        total += _bytes(leaf) // ways
    return total


@pytest.fixture(scope="module")
def setup():
    config = tiny_config()
    topology = aot.get_topology(TOPOLOGY)
    mesh = aot.topology_mesh(topology, config.mesh)
    rows = aot.compile_config(config, mesh, "tiny", hbm_gib=1.0)
    return config, mesh, {r["program"]: r for r in rows}


@pytest.mark.e2e
def test_mesh_from_config(setup):
    _, mesh, _ = setup
    assert dict(mesh.shape) == MESH
    assert mesh.devices.size == 8


@pytest.mark.e2e
def test_all_programs_compile_with_positive_memory(setup):
    _, _, rows = setup
    assert set(rows) == {"generate", "judge_score", "judge_generate", "dpo_step"}
    for name, r in rows.items():
        assert r["error"] is None, name
        assert r["argument_bytes"] > 0 and r["output_bytes"] > 0 and r["temp_bytes"] > 0, (name, r)
        assert r["total_bytes"] >= r["argument_bytes"] + r["temp_bytes"], name
        assert r["fits"] is True, name
    assert rows["generate"]["shape"] == "8 x (64 prompt + 16 new)"
    assert rows["judge_score"]["shape"] == "8 x (64 prompt + 16 scored)"
    assert rows["dpo_step"]["shape"] == "3 members x 2 pairs x 2 x 128"


@pytest.mark.e2e
def test_arguments_are_the_parameter_shards(setup):
    """Each device receives its shard of the weights, not the whole model."""
    config, mesh, rows = setup
    model, _ = aot.abstract_model(aot.resolve_model_shape("tiny"), config)
    _, state = nnx.split(model)
    sharded = aot.shard_abstract(state, mesh)
    full = sum(_bytes(leaf) for leaf in jax.tree.leaves(sharded))
    shard = _per_device_bytes(sharded, mesh)
    assert shard < full / 6  # the big weights split 8 ways (fsdp 2 x tensor 4)

    gen = rows["generate"]["argument_bytes"]
    # The weights' shards plus one row of the per-row inputs (8 rows over the 2 batch shards:
    # 4 rows per device of 64 prompt ids and mask, settings and stop ids): a few KiB.
    assert shard <= gen <= shard + 4096, (gen, shard, full)
    score = rows["judge_score"]["argument_bytes"]
    assert shard <= score <= shard + 4096, (score, shard)


@pytest.mark.e2e
def test_generate_slicing_layers_per_step_holds_no_second_copy_of_them():
    """sampler.slice_layers: "per_call" slices every layer's weights (and LoRA factors) out of the
    stacks for the call, so generate's temporaries hold a copy of them; "per_step" does not. (Both
    under XLA's partitioning: the hand-partitioned step reads a per-call copy laid out its way.)"""
    temps = {}
    for how in ("per_call", "per_step"):
        config = tiny_config()
        config.sampler.slice_layers = how
        config.sampler.partition_decode = False
        mesh = aot.topology_mesh(aot.get_topology(TOPOLOGY), config.mesh)
        (row,) = aot.compile_config(config, mesh, "tiny", hbm_gib=1.0, programs=("generate",))
        temps[how] = row["temp_bytes"]
    model, _ = aot.abstract_model(aot.resolve_model_shape("tiny"), config)
    _, state = nnx.split(model)
    sharded = aot.shard_abstract(state, mesh)
    copy = _per_device_bytes(sharded["layers"], mesh) + _per_device_bytes(sharded["lora"], mesh)
    assert 0.9 * copy <= temps["per_call"] - temps["per_step"] <= 1.1 * copy, (temps, copy)


@pytest.mark.e2e
def test_dpo_step_holds_lora_moments_and_donates_the_train_state(setup):
    config, mesh, rows = setup
    model, _ = aot.abstract_model(aot.resolve_model_shape("tiny"), config)
    _, trainable, frozen = dpo.split_lora(model)
    lora = _per_device_bytes(aot.shard_abstract(trainable, mesh), mesh)
    base = _per_device_bytes(aot.shard_abstract(frozen, mesh), mesh)
    r = rows["dpo_step"]
    # Adapters + Adam's two moments + the frozen base, plus the pair batch (2 pairs x 2 x 128,
    # ids and two masks, split over the 2 batch shards) and the reference log-probs.
    batch = 2 * 2 * 128 * (4 + 1 + 1) // 2
    assert 3 * lora + base <= r["argument_bytes"] <= 3 * lora + base + batch + 1024, (r, lora, base)
    # The train state (adapters and moments) is donated: its outputs alias its inputs.
    assert 3 * lora <= r["alias_bytes"] <= 3 * lora + 64, (r, lora)


@pytest.mark.e2e
def test_optimizer_moments_shard_like_their_parameters(setup):
    config, mesh, _ = setup
    model, _ = aot.abstract_model(aot.resolve_model_shape("tiny"), config)
    _, trainable, _ = dpo.split_lora(model)
    params = {path_name(p): leaf.sharding.spec for p, leaf in
              jax.tree_util.tree_flatten_with_path(aot.shard_abstract(trainable, mesh))[0]}
    optimizer = dpo.make_optimizer(dpo.dpo_config(config), dpo.lora_member_axis)
    opt = aot.shard_abstract(jax.eval_shape(optimizer.init, trainable), mesh, aot.optimizer_rules())
    moments = 0
    for path, leaf in jax.tree_util.tree_flatten_with_path(opt)[0]:
        name = path_name(path)
        if leaf.shape == ():
            continue
        param = name[name.index("lora/"):]
        assert leaf.sharding.spec == params[param], name
        moments += 1
    assert moments == 2 * len(params)


def test_out_of_memory_message_parsed():
    message = ("RESOURCE_EXHAUSTED: XLA:TPU compile permanent error. Ran out of memory in memory space hbm. "
               "Used 48.62G of 30.75G hbm. Exceeded hbm capacity by 17.87G.\n\nTotal hbm usage >= 49.12G:\n"
               "    reserved        530.00M \n    program          46.00G \n    arguments         2.62G \n")
    row = aot.oom_row(message)
    assert row["oom"] and row["total_bytes"] == int(49.12 * 1024**3)
    assert row["temp_bytes"] == int(46.0 * 1024**3) and row["argument_bytes"] == int(2.62 * 1024**3)
    # The wording libtpu 0.0.42 uses for Qwen2.5-7B programs that do not fit a v4 chip.
    row = aot.oom_row("RESOURCE_EXHAUSTED: Ran out of memory on HBM, the total memory required for HLO "
                      "temporaries (42.71G) exceeds available HBM (30.75G). ")
    assert row["oom"] and row["temp_bytes"] == int(42.71 * 1024**3)
    assert row["compiler_hbm_bytes"] == int(30.75 * 1024**3)
    assert aot.oom_row("INVALID_ARGUMENT: something else") is None


def test_topology_parsing_and_model_shapes():
    assert aot.parse_topology("v4:2x2x2") == ("tpu", "v4", None)
    assert aot.parse_topology("cpu:8") == ("cpu", "cpu", 8)
    with pytest.raises(aot.AotError):
        aot.parse_topology("v4-32")
    assert aot.host_bounds("v4:2x2x4", (2, 2, 1)) == (2, 2, 1)
    assert aot.host_bounds("v5p:1x1x1", (2, 2, 1)) == (1, 1, 1)  # one chip: libtpu refuses 2x2x1 bounds
    assert aot.host_bounds("v5e:2x1", (2, 2, 1)) == (2, 1, 1)
    qwen = aot.resolve_model_shape("qwen2.5-7b")
    assert (qwen.hidden_size, qwen.num_layers, qwen.num_kv_heads, qwen.qkv_bias) == (3584, 28, 4, True)
    assert aot.resolve_model_shape(None, "embedded").num_layers == 30
    with pytest.raises(aot.AotError, match="--model_shape"):
        aot.resolve_model_shape(None, "/no/such/my-model")
    # A base that is no folder here but names a known shape (the pod's path) gives that shape.
    assert aot.resolve_model_shape(None, "/no/such/Qwen2.5-7B-Instruct") == qwen


def _cli(*extra):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=8"
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, "-m", "sparta_jax.aot", f"--config={REPO}/configs/tiny.py", f"--topology={TOPOLOGY}",
         "--model_shape=tiny", "--config.mesh.tensor=4", "--config.generation.max_prompt_tokens=64",
         "--config.judge.max_prompt_tokens=64", *extra],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.e2e
def test_cli_prints_the_table_and_fails_when_a_program_does_not_fit():
    out = _cli("--hbm_gib=4")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "mesh {'data': 1, 'fsdp': 2, 'tensor': 4}" in out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert lines[0].split("|")[1].strip() == "program" and "temporaries GiB" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[1:]] == ["generate", "judge_score", "dpo_step"]
    assert all(line.split("|")[-2].strip() == "yes" for line in lines[1:])

    tight = _cli("--hbm_gib=0.0001", "--programs=judge_score")
    assert tight.returncode == 1, tight.stderr[-2000:]
    assert "| NO " in tight.stdout


@pytest.mark.e2e
def test_input_shard_bytes_match_the_compiled_arguments(setup):
    """What an out-of-memory row reports as arguments (computed, not compiled) is what XLA counts."""
    from sparta_jax.sampling import Sampler, SamplerConfig

    config, mesh, rows = setup
    model, _ = aot.abstract_model(aot.resolve_model_shape("tiny"), config)
    sampler = Sampler(model, None, config=SamplerConfig.from_config(config.sampler), mesh=mesh, pad_id=0)
    state = aot.shard_abstract(nnx.split(model)[1], mesh)
    gen = config.generation
    args, _, _ = aot._generation_args(sampler, mesh, state, gen.batch_size, gen.max_prompt_tokens, gen.max_new_tokens)
    assert aot.shard_bytes(args) == rows["generate"]["argument_bytes"]
    args, _ = aot._score_args(sampler, mesh, state, config.judge.batch_size, config.judge.max_prompt_tokens)
    assert aot.shard_bytes(args) == rows["judge_score"]["argument_bytes"]


def test_full_parameter_tribes_are_refused_with_a_reason():
    config = load_config(f"{REPO}/configs/tiny.py")
    config.tribe.kind = "full"
    with pytest.raises(aot.AotError, match="covers LoRA tribes only"):
        aot.compile_config(config, None)


@pytest.mark.e2e
def test_cli_roofline_table_on_fake_devices(tmp_path):
    """--roofline on the 2 x 4 CPU mesh: a decode-step and a DPO-step row whose figures follow
    from one another at the given peaks; a CPU topology without peaks is refused."""
    import json

    out = _cli("--programs=judge_score", "--roofline", "--iteration", "--peak_tflops=1", "--hbm_gbps=100",
               f"--json_out={tmp_path / 'aot.json'}")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Roofline (per chip):" in out.stdout
    # --iteration: every program of an iteration costed once, the phases priced from them
    iteration = json.loads((tmp_path / "aot.json").read_text())["iteration"]
    programs = {r["program"]: r for r in iteration["programs"]}
    assert sorted(p.split(" (")[0] for p in programs) == ["decode step", "decode step", "dpo_step", "judge scoring",
                                                           "prefill", "prefill", "reference pass"]
    assert list(iteration["totals"]) == ["answers", "judging", "reference log-probs", "DPO", "evaluation"]
    for phase in iteration["phases"]:
        assert phase["seconds"] == pytest.approx(phase["calls"] * phase["seconds_per_call"]) and phase["seconds"] > 0
    decode = next(r for r in iteration["phases"] if r["phase"] == "answers" and r["program"].startswith("decode"))
    assert decode["seconds_per_call"] == programs["decode step (8 rows, cache 80)"]["seconds"]
    assert decode["calls"] == 2 * 12  # 12 answers in batches of 8, each to tiny.py's 12 new tokens
    assert "one iteration" in out.stdout
    assert "decode step, bytes by kind of op" in out.stdout
    # (Whether a step copies its cache is checked on one device in test_roofline.py and on the
    # v4 topology in BENCHMARKS.md; XLA:CPU's SPMD partitioner adds copies of its own here.)
    decode, train = json.loads((tmp_path / "aot.json").read_text())["roofline"]
    assert decode["program"].startswith("decode step (8 rows, cache ")
    assert set(decode["traffic"]) == {"matmul fusions", "kernels", "collectives", "other", "loops"}
    assert decode["traffic"]["collectives"] > 0  # 8 fake devices: the step gathers or reduces activations
    for row in (decode, train):
        assert row["seconds"] == pytest.approx(max(row["flops"] / 1e12, row["bytes"] / 100e9))
        assert row["bytes_over_ideal"] == pytest.approx(row["bytes"] / row["ideal_bytes"])
    assert decode["tokens_per_s_per_chip"] == pytest.approx(8 / decode["seconds"] / 8)
    assert 0 < train["mfu"] < 1 and train["program"].startswith("dpo_step (3 members x 2 pairs")

    refused = _cli("--programs=judge_score", "--roofline")
    assert refused.returncode == 2 and "--peak_tflops" in refused.stderr


@pytest.mark.e2e
def test_remat_modes_trade_memory_for_flops(setup):
    """`--remat_modes` (aot.remat_comparison): the DPO step per `dpo.remat` mode. Recomputing each
    layer ("full") costs the most flops and the least memory, nothing recomputed ("none", the tiny
    config's own mode) the reverse, keeping the projections' outputs ("dots") lies between."""
    config, mesh, rows = setup
    chip = aot.roofline_chip(TOPOLOGY, 1.0, 100.0)
    by_mode = {r["mode"]: r for r in aot.remat_comparison(config, mesh, aot.resolve_model_shape("tiny"), chip,
                                                          ["full", "dots", "none"], hbm_gib=1.0)}
    full, dots, none = (by_mode[m] for m in ("full", "dots", "none"))
    assert none["memory"]["temp_bytes"] == rows["dpo_step"]["temp_bytes"]
    assert full["roofline"]["flops"] > dots["roofline"]["flops"] > none["roofline"]["flops"]
    assert full["roofline"]["mfu"] < dots["roofline"]["mfu"] < none["roofline"]["mfu"]
    assert full["memory"]["temp_bytes"] < dots["memory"]["temp_bytes"] <= none["memory"]["temp_bytes"]
    assert dots["roofline"]["program"].endswith(", remat dots")
    table = aot.format_remat_rows(list(by_mode.values())).splitlines()
    assert table[1].startswith("DPO step by remat mode") and [line.split("|")[1].strip() for line in table[4:]] == [
        "full", "dots", "none"]


@pytest.mark.e2e
def test_cli_iteration_prices_refilled_rows(tmp_path):
    """--config.sampler.refill_rows=2: the decode step writes per-row cache slots, a refill prefill
    of 2 prompts is compiled, and the answers are priced by the loop's schedule."""
    import json

    from sparta_jax.iteration_time import queue_schedule

    out = _cli("--programs=judge_score", "--iteration", "--peak_tflops=1", "--hbm_gbps=100",
               "--config.sampler.refill_rows=2", f"--json_out={tmp_path / 'aot.json'}")
    assert out.returncode == 0, out.stderr[-2000:]
    iteration = json.loads((tmp_path / "aot.json").read_text())["iteration"]
    programs = {r["program"]: r for r in iteration["programs"]}
    assert "decode step (8 rows, cache 80, per-row slots)" in programs and "refill prefill (2 x 64)" in programs
    answers = {r["program"].split(" (")[0]: r for r in iteration["phases"] if r["phase"] == "answers"}
    steps, refills = queue_schedule([12] * 12, 8, 2)  # tiny.py: 12 answers, 8 rows, all at the 12-token cap
    assert (answers["decode step"]["calls"], answers["refill prefill"]["calls"]) == (steps, refills) == (24, 2)
    assert answers["refill prefill"]["seconds_per_call"] == programs["refill prefill (2 x 64)"]["seconds"]


def mixed_tiny_config():
    """Two groups of the tiny shape: group a as tiny.py's tribe, group b 2 members of rank 8."""
    config = tiny_config()
    config.tribe.groups = (dict(name="a", base="random:tiny", members=3),
                           dict(name="b", base="random:tiny", members=2, lora_rank=8))
    return config


@pytest.mark.e2e
def test_mixed_tribes_compile_per_group_with_the_other_groups_weights_beside(setup):
    config, mesh, single = setup
    mixed = mixed_tiny_config()
    rows = {r["program"]: r for r in aot.compile_mixed(mixed, mesh, {"a": "tiny", "b": "tiny"}, hbm_gib=1.0,
                                                       programs=("judge_score", "dpo_step"))}
    assert list(rows) == ["a: judge_score", "a: dpo_step", "b: judge_score", "b: dpo_step"]
    assert rows["b: dpo_step"]["shape"] == "2 members x 2 pairs x 2 x 128"

    def resident(members, rank):  # weights (base and adapters) and Adam's two moments of the adapters
        c = tiny_config()
        c.tribe.members, c.tribe.lora_rank = members, rank
        model, _ = aot.abstract_model(aot.resolve_model_shape("tiny"), c)
        _, state = nnx.split(model)
        lora = _per_device_bytes(aot.shard_abstract(dpo.split_lora(model)[1], mesh), mesh)
        return _per_device_bytes(aot.shard_abstract(state, mesh), mesh) + 2 * lora

    for group, other in (("a", resident(2, 8)), ("b", resident(3, 4))):
        for program in ("judge_score", "dpo_step"):
            r = rows[f"{group}: {program}"]
            assert r["group"] == group and abs(r["other_groups_bytes"] - other) <= 64, (r, other)
            assert r["fits"] is True
    for program in ("judge_score", "dpo_step"):  # group a is tiny.py's tribe: its own program, plus b's weights
        a = rows[f"a: {program}"]
        assert a["total_bytes"] == single[program]["total_bytes"] + a["other_groups_bytes"]


@pytest.mark.e2e
def test_cli_mixed_tribe_table_names_groups_and_their_neighbours(tmp_path):
    import json

    env = {**os.environ, "PYTHONPATH": REPO}
    env.pop("XLA_FLAGS", None)
    config = (f"{REPO}/configs/tiny.py", "--config.mesh.tensor=4", "--config.generation.max_prompt_tokens=64",
              "--config.judge.max_prompt_tokens=64",
              "--config.tribe.groups=({'name': 'a', 'base': 'random:tiny'}, {'name': 'b', 'base': 'x/gemma-7b-it'})")
    out = subprocess.run([sys.executable, "-m", "sparta_jax.aot", f"--config={config[0]}", *config[1:],
                          f"--topology={TOPOLOGY}", "--group_shapes=b=tiny", "--programs=judge_score", "--iteration",
                          "--peak_tflops=1", "--hbm_gbps=100", f"--json_out={tmp_path / 'aot.json'}"],
                         cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "a mixed tribe, its groups in turn" in out.stdout and "b tiny: 3 LoRA members" in out.stdout
    lines = [line for line in out.stdout.splitlines() if line.startswith("| ")]
    assert "other groups GiB" in lines[0]
    assert [line.split("|")[1].strip() for line in lines[1:3]] == ["a: judge_score", "b: judge_score"]
    # --iteration: each group at its own shapes, at half the answers (3 of 6 members), every pair trained
    phases = json.loads((tmp_path / "aot.json").read_text())["iteration"]["phases"]
    prefills = [r["program"] for r in phases if r["phase"] == "answers" and "prefill" in r["program"]]
    assert prefills == ["a: prefill (6 answers, 1 batches)", "b: prefill (6 answers, 1 batches)"]  # 6 of the 12 answers each, batches of 8
    steps = [r["calls"] for r in phases if r["phase"] == "DPO"]
    assert steps == [3, 3]  # 6 pairs, 2 a step, in each group
    assert "one iteration" in out.stdout
    shapes = aot.group_shapes(mixed_tiny_config(), {})  # from the bases: random:tiny, and a name's alias
    assert shapes["a"] == aot.resolve_model_shape("tiny")
    c = mixed_tiny_config()
    c.tribe.groups = (dict(name="g", base="/nowhere/gemma-7b-it"), dict(name="q", base="/m/Qwen2.5-7B-Instruct"))
    shapes = aot.group_shapes(c, {})
    assert shapes["g"] == aot.resolve_model_shape("gemma-7b") and shapes["q"] == aot.resolve_model_shape("qwen2.5-7b")
