"""The tribe DPO step: log-probs, step-0 values, member independence, accumulation, learning."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx

from sparta_jax import dpo, sharding
from sparta_jax.models.loading import from_pretrained
from sparta_jax.models.lora import uniform_lora_config
from assertions import assert_update_close
from tiny_models import TINY, save_hf_model

PAIRS, LENGTH, PROMPT = 4, 20, 8


@pytest.fixture(scope="module")
def base_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("base")
    save_hf_model("qwen2", folder)
    return str(folder)


@pytest.fixture(scope="module")
def mesh1():
    return sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])


# Weights after AdamW steps at lr 1e-2. Adam divides each gradient by its own magnitude, so an
# element whose gradient is near adam_eps (1e-8) moves by an amount that follows its float noise,
# and reduction order differs between CPUs (CI measured 1.7e-7 on one element of 1536). A real
# defect (a lost member, a halved accumulation) moves elements by a sizeable part of the lr.
ADAM_ATOL = 1e-5


def make_batch(seed=0, pairs=PAIRS):
    rng = np.random.default_rng(seed)
    ids = rng.integers(1, TINY["vocab_size"], (pairs, 2, LENGTH)).astype(np.int32)
    ids[:, 1, :PROMPT] = ids[:, 0, :PROMPT]  # chosen and rejected share the prompt
    mask = np.ones((pairs, 2, LENGTH), bool)
    mask[:, 1, LENGTH - 5:] = False  # rejected responses are shorter (right padding)
    response = mask.copy()
    response[:, :, :PROMPT] = False
    ids[~mask] = 0
    return dpo.PairBatch(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(response))


def lora_model(base_dir, mesh, members=3, seed=0):
    model, _ = from_pretrained(base_dir, dtype=jnp.float32, mesh=mesh, load_tokenizer=False,
                               lora=uniform_lora_config(members, rank=4, alpha=8.0, targets=("q_proj", "v_proj", "down_proj")))
    for i, (name, value) in enumerate(sorted(model.lora.arrays().items())):
        getattr(model.lora, name).set_value(0.1 * jax.random.normal(jax.random.key(seed * 100 + i), value.shape))
    return model


@pytest.mark.reference
def test_sequence_logps_equal_transformers(base_dir, mesh1):
    import transformers

    model, _ = from_pretrained(base_dir, dtype=jnp.float32, mesh=mesh1, load_tokenizer=False)
    hf = transformers.AutoModelForCausalLM.from_pretrained(base_dir, dtype=torch.float32).eval()
    batch = make_batch()
    ids, mask, resp = (np.asarray(x).reshape(-1, LENGTH) for x in (batch.ids, batch.mask, batch.response_mask))
    ours = np.asarray(jax.jit(lambda *a: dpo.sequence_logps(model, *a, chunk=6))(ids, mask, resp))
    with torch.no_grad():
        logits = hf(input_ids=torch.tensor(ids, dtype=torch.long), attention_mask=torch.tensor(mask, dtype=torch.long)).logits
    logp = torch.log_softmax(logits[:, :-1], -1).gather(-1, torch.tensor(ids[:, 1:], dtype=torch.long)[..., None])[..., 0]
    expected = (logp * torch.tensor(resp[:, 1:])).sum(-1).numpy()
    np.testing.assert_allclose(ours, expected, rtol=1e-5, atol=1e-4)


@pytest.mark.e2e
def test_step_zero_is_log2_and_members_equal_single_steps(base_dir, mesh1):
    cfg = dpo.DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, lr_schedule="constant", max_grad_norm=0.05,
                        weight_decay=0.01)
    batch = make_batch()
    tribe = lora_model(base_dir, mesh1, members=3)
    initial = {name: np.asarray(v) for name, v in tribe.lora.arrays().items()}  # the step donates its input
    graphdef, trainable, frozen = dpo.split_lora(tribe)
    ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch)
    opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    step = dpo.make_lora_train_step(graphdef, cfg, opt)
    state, metrics = step(dpo.init_train_state(trainable, opt, cfg, 10), frozen, batch, ref)
    np.testing.assert_allclose(np.asarray(metrics["loss"]), np.log(2.0), rtol=1e-6)
    # Rewards are beta * (policy - reference): zero up to float noise between the two programs
    # (so rewards/accuracies, a strict comparison of noise, is not asserted here).
    for key in ("rewards/chosen", "rewards/rejected", "rewards/margins"):
        np.testing.assert_allclose(np.asarray(metrics[key]), 0.0, atol=1e-6)
    state, metrics2 = step(state, frozen, batch, ref)
    tribe_after = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(state.params)}

    # Each member trained alone (a stack of one) must land on the same weights and metrics.
    for m in range(3):
        single = lora_model(base_dir, mesh1, members=1)
        for name, value in initial.items():
            getattr(single.lora, name).set_value(jnp.asarray(value[:, m: m + 1]))
        g1, t1, f1 = dpo.split_lora(single)
        ref1 = dpo.make_lora_reference_logps(g1, cfg)(t1, f1, batch)
        np.testing.assert_allclose(np.asarray(ref1[0]), np.asarray(ref[m]), rtol=1e-6)
        opt1 = dpo.make_optimizer(cfg, dpo.lora_member_axis)
        step1 = dpo.make_lora_train_step(g1, cfg, opt1)
        s1, _ = step1(dpo.init_train_state(t1, opt1, cfg, 10), f1, batch, ref1)
        s1, m1 = step1(s1, f1, batch, ref1)
        for path, var in nnx.to_flat_state(s1.params):
            np.testing.assert_allclose(np.asarray(var[...])[:, 0], tribe_after[path][:, m], rtol=1e-5, atol=ADAM_ATOL)
        for key in m1:
            np.testing.assert_allclose(np.asarray(m1[key])[0], np.asarray(metrics2[key])[m], rtol=1e-5, atol=1e-6)


@pytest.mark.e2e
def test_gradient_accumulation_equals_one_big_batch(base_dir, mesh1):
    """And neither what is recomputed (remat "full", off, or "dots") nor unrolled scans (for costing)
    change the step."""
    batch = make_batch(seed=1)
    results = []
    variants = (dict(grad_accum=1), dict(grad_accum=2), dict(grad_accum=2, remat=False), dict(grad_accum=2, remat="dots"),
                dict(grad_accum=2, unroll_scans=True, logps_chunk=6))
    for variant in variants:
        cfg = dpo.DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, max_grad_norm=0.0, **variant)
        tribe = lora_model(base_dir, mesh1, members=2, seed=3)
        graphdef, trainable, frozen = dpo.split_lora(tribe)
        ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch)
        ref = ref + jnp.asarray(np.random.default_rng(0).normal(0, 1, ref.shape), jnp.float32)  # policy != ref
        opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
        state, metrics = dpo.make_lora_train_step(graphdef, cfg, opt)(dpo.init_train_state(trainable, opt, cfg, 5),
                                                                              frozen, batch, ref)
        results.append(({k: np.asarray(v[...]) for k, v in nnx.to_flat_state(state.params)}, metrics))
    (p1, m1), *others = results
    for p2, m2 in others:
        for k in p1:
            np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=ADAM_ATOL)
        np.testing.assert_allclose(np.asarray(m1["loss"]), np.asarray(m2["loss"]), rtol=1e-6)


@pytest.mark.e2e
def test_training_lowers_the_loss_and_grows_margins(base_dir, mesh1):
    cfg = dpo.DPOConfig(learning_rate=5e-3, warmup_ratio=0.1, weight_decay=1e-5)
    batch = make_batch(seed=2)
    tribe = lora_model(base_dir, mesh1, members=2)
    graphdef, trainable, frozen = dpo.split_lora(tribe)
    ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch)
    opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    step = dpo.make_lora_train_step(graphdef, cfg, opt)
    state = dpo.init_train_state(trainable, opt, cfg, 30)
    history = []
    for _ in range(30):
        state, metrics = step(state, frozen, batch, ref)
        history.append({k: np.asarray(v) for k, v in metrics.items()})
    assert np.all(history[-1]["loss"] < 0.5 * np.log(2))
    assert np.all(history[-1]["rewards/margins"] > 0.5)
    assert np.all(history[-1]["rewards/accuracies"] == 1.0)
    assert int(state.step) == 30


@pytest.mark.e2e
def test_chosen_nll_term_holds_the_chosen_answers_up(base_dir, mesh1):
    """dpo.sft_weight: the step's "nll/chosen" is the per-token NLL over the chosen responses' scored
    tokens (12 a row here), and with the term the chosen answers end more likely than without it,
    by the same DPO margin or more."""
    batch = make_batch(seed=4)
    ends = {}
    for weight in (0.0, 1.0):
        cfg = dpo.DPOConfig(learning_rate=5e-3, warmup_ratio=0.0, sft_weight=weight)
        graphdef, trainable, frozen = dpo.split_lora(lora_model(base_dir, mesh1, members=2))
        ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch)
        opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
        step = dpo.make_lora_train_step(graphdef, cfg, opt)
        state = dpo.init_train_state(trainable, opt, cfg, 10)
        for i in range(10):
            state, metrics = step(state, frozen, batch, ref)
            metrics = {k: np.asarray(v) for k, v in metrics.items()}
            if i == 0:
                np.testing.assert_allclose(np.asarray(dpo.chosen_token_counts(batch)), LENGTH - PROMPT)
                np.testing.assert_allclose(metrics["nll/chosen"], -metrics["logps/chosen"] / (LENGTH - PROMPT),
                                           rtol=1e-6)
        ends[weight] = metrics
    assert np.all(ends[1.0]["logps/chosen"] > ends[0.0]["logps/chosen"] + 1.0)
    assert np.all(ends[1.0]["rewards/margins"] > 0.5)


@pytest.mark.e2e
def test_full_parameter_tribe_step(base_dir, mesh1):
    """Two full parameter sets stacked: each equals its own single-model step."""
    cfg = dpo.DPOConfig(learning_rate=1e-3, warmup_ratio=0.0, max_grad_norm=0.5, weight_decay=0.1)
    batch = make_batch(seed=4)
    members = []
    for seed in (0, 1):
        model, _ = from_pretrained(base_dir, dtype=jnp.float32, mesh=mesh1, load_tokenizer=False)
        state = nnx.state(model)
        noise = jax.tree.map(lambda x: 0.02 * jax.random.normal(jax.random.key(seed), x.shape), state)
        members.append(jax.tree.map(jnp.add, state, noise))
    graphdef = nnx.split(model)[0]
    stacked = jax.tree.map(lambda *xs: jnp.stack(xs), *members)
    ref = dpo.make_full_reference_logps(graphdef, cfg)(stacked, batch) - 0.3  # policy != reference
    mask = dpo.decay_mask(stacked)
    singles = [jax.tree.map(lambda x: jnp.array(x[m: m + 1]), stacked) for m in range(2)]  # the step donates
    before = [{sharding.path_name(p): np.asarray(v[...])[0] for p, v in nnx.to_flat_state(s)} for s in singles]
    opt = dpo.make_optimizer(cfg, dpo.full_member_axis)
    out, metrics = dpo.make_full_train_step(graphdef, cfg, opt)(dpo.init_train_state(stacked, opt, cfg, 4), None, batch, ref)
    for m, single in enumerate(singles):
        opt1 = dpo.make_optimizer(cfg, dpo.full_member_axis)
        out1, m1 = dpo.make_full_train_step(graphdef, cfg, opt1)(dpo.init_train_state(single, opt1, cfg, 4), None, batch,
                                                                  ref[m: m + 1])
        for (path, a), (_, b) in zip(nnx.to_flat_state(out1.params), nnx.to_flat_state(out.params)):
            name = sharding.path_name(path)
            assert_update_close(name, np.asarray(b[...])[m], np.asarray(a[...])[0], before[m][name])
        np.testing.assert_allclose(np.asarray(m1["loss"])[0], np.asarray(metrics["loss"])[m], rtol=1e-6)
    # Norms and biases are not decayed (transformers' rule).
    flat = {sharding.path_name(p): v for p, v in jax.tree_util.tree_flatten_with_path(mask)[0]}
    assert flat["layers/q_bias"] is False and flat["layers/attn_norm"] is False and flat["layers/q_proj"] is True


@pytest.mark.reference
def test_learning_rate_schedule_matches_transformers():
    from transformers import get_cosine_schedule_with_warmup

    cfg = dpo.DPOConfig(learning_rate=2e-3, warmup_ratio=0.1)
    total = 37
    sched = dpo.learning_rate_schedule(cfg, total)
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.learning_rate)
    ref = get_cosine_schedule_with_warmup(opt, num_warmup_steps=dpo.warmup_steps(cfg, total), num_training_steps=total)
    for step in range(total):
        assert abs(float(sched(step)) - ref.get_last_lr()[0]) < 1e-9 + 1e-6 * cfg.learning_rate
        opt.step()
        ref.step()


@pytest.mark.e2e
def test_filler_pairs_change_nothing(base_dir, mesh1):
    """A batch padded with filler pairs (no response tokens) trains exactly like the real pairs alone."""
    cfg = dpo.DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, max_grad_norm=0.0)
    real = make_batch(seed=5, pairs=2)
    filler = jax.tree.map(lambda x: jnp.concatenate([x, jnp.zeros_like(x)]), real)
    assert list(np.asarray(dpo.pair_validity(filler))) == [True, True, False, False]
    results = []
    for batch in (real, filler):
        tribe = lora_model(base_dir, mesh1, members=2, seed=7)
        graphdef, trainable, frozen = dpo.split_lora(tribe)
        ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch) - 0.5
        opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
        state, metrics = dpo.make_lora_train_step(graphdef, cfg, opt)(dpo.init_train_state(trainable, opt, cfg, 3), frozen,
                                                                      batch, ref)
        results.append(({k: np.asarray(v[...]) for k, v in nnx.to_flat_state(state.params)}, metrics))
    (p1, m1), (p2, m2) = results
    for k in p1:
        np.testing.assert_allclose(p1[k], p2[k], rtol=1e-5, atol=ADAM_ATOL)
    for k in m1:
        np.testing.assert_allclose(np.asarray(m1[k]), np.asarray(m2[k]), rtol=1e-5, atol=1e-6)


def test_train_step_keeps_shardings_and_compiles_once(base_dir):
    """On an 8-device mesh the state after a step has the shardings it came in with (moments
    like their parameters, counters replicated), so later steps compile nothing."""
    mesh8 = sharding.make_mesh({"data": 2, "fsdp": 2, "tensor": 2})
    cfg = dpo.DPOConfig(learning_rate=1e-3)
    batch = make_batch(seed=5)
    model, _ = from_pretrained(base_dir, dtype=jnp.float32, mesh=mesh8, load_tokenizer=False,
                               lora=uniform_lora_config(2, rank=4, alpha=8.0))  # adapters sharded by the rules
    graphdef, trainable, frozen = dpo.split_lora(model)
    ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch)
    opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    step = dpo.make_lora_train_step(graphdef, cfg, opt)
    state = dpo.init_train_state(trainable, opt, cfg, 4)
    before = [x.sharding for x in jax.tree.leaves(state)]
    assert any(not s.is_fully_replicated for s in before)  # the test means something: some leaves are split
    # Every moment tree (Adam's mu and nu) is split exactly as the parameters it follows.
    params_structure, moments = jax.tree.structure(state.params), []
    pending = [state.opt_state]
    while pending:
        node = pending.pop()
        if jax.tree.structure(node) == params_structure:
            moments.append(node)
        elif isinstance(node, (tuple, list)):
            pending.extend(node)
    assert len(moments) >= 2
    for tree in moments:
        for moment, param in zip(jax.tree.leaves(tree), jax.tree.leaves(state.params)):
            assert moment.sharding.is_equivalent_to(param.sharding, param.ndim), (moment.sharding, param.sharding)
    compiles = []
    jax.monitoring.register_event_duration_secs_listener(
        lambda event, *_, **__: compiles.append(event) if event == "/jax/core/compile/backend_compile_duration" else None)
    state, _ = step(state, frozen, batch, ref)
    first = len(compiles)
    assert first >= 1
    for _ in range(2):
        state, _ = step(state, frozen, batch, ref)
    assert len(compiles) == first
    after = [x.sharding for x in jax.tree.leaves(state)]
    assert all(a.is_equivalent_to(b, x.ndim) for a, b, x in zip(after, before, jax.tree.leaves(state)))
    assert int(state.step) == 3
    # The next iteration trains for another number of steps: the schedule is data, not code.
    state = dpo.init_train_state(state.params, opt, cfg, 11)
    state, _ = step(state, frozen, batch, ref)
    assert len(compiles) == first and int(state.total_steps) == 11 and int(state.warmup_steps) == 2


def test_trained_pair_metrics_weigh_every_real_pair_once(base_dir, mesh1):
    """The summary's after-training DPO figures: per member, the mean over every real pair of the
    iteration, whatever batch it sat in (filler pairs excluded) == one batch of all real pairs."""
    import types

    from sparta_jax.trainer import trained_pair_metrics

    cfg = dpo.DPOConfig()
    start = lora_model(base_dir, mesh1, members=3, seed=0)
    trained = lora_model(base_dir, mesh1, members=3, seed=1)
    graphdef, start_params, frozen = dpo.split_lora(start)
    trained_params = dpo.split_lora(trained)[1]
    reference = dpo.make_lora_reference_logps(graphdef, cfg)
    full, part = make_batch(seed=1), make_batch(seed=2)
    part = dpo.PairBatch(part.ids, part.mask, part.response_mask.at[2:].set(False))  # 2 real pairs + 2 fillers
    batches = [full, part]
    refs = [reference(start_params, frozen, b) for b in batches]
    trainer = types.SimpleNamespace(reference=reference, frozen=frozen)
    got = trained_pair_metrics(trainer, trained_params, batches, refs, cfg)

    real = jax.tree.map(lambda a, b: jnp.concatenate([a, b[:2]]), full, part)
    _, want = dpo.tribe_loss(reference(trained_params, frozen, real), reference(start_params, frozen, real), cfg)
    for key in ("loss", "rewards/accuracies", "rewards/margins"):
        np.testing.assert_allclose(got[key], np.asarray(want[key]), rtol=1e-5, atol=1e-6)
    assert len(got["loss"]) == 3 and not np.allclose(got["loss"], np.log(2.0))


@pytest.mark.parametrize("n_pairs, per_step, epochs", [(5, 4, 2), (7, 3, 3), (8, 4, 2), (3, 4, 1)])
def test_after_training_figures_weigh_every_pair_once(n_pairs, per_step, epochs):
    """A pair count that is not a multiple of pairs_per_step: the second epoch's pairs fill the
    first epoch's last training step, but the after-training figures take each pair exactly once."""
    from sparta_jax.trainer import plan_pair_batches

    steps, once = plan_pair_batches(n_pairs, per_step, epochs, np.random.default_rng(0))
    assert sorted(np.concatenate(once).tolist()) == list(range(n_pairs))
    assert all(len(b) <= per_step for b in once)
    trained = np.concatenate(steps)
    assert len(steps) == -(-n_pairs * epochs // per_step) and np.bincount(trained).tolist() == [epochs] * n_pairs
    first_epoch = steps[: -(-n_pairs // per_step)]  # what the figures took before: some pairs twice
    counts = np.bincount(np.concatenate(first_epoch), minlength=n_pairs)
    if n_pairs % per_step and epochs > 1:
        assert counts.sum() > n_pairs
    for a, b in zip(steps, once):  # the batches both share are the same steps (their references reused)
        if len(a) == len(b):
            np.testing.assert_array_equal(a, b)


def test_remat_modes_keep_what_they_say():
    """The backward pass's stored activations (XLA's temporaries of the gradient): "none" keeps
    every activation, "full" each layer's input only, "dots" that plus every projection's output
    (base and LoRA), so it sits between the two by about the projections' outputs."""
    from sparta_jax.models.config import ModelConfig
    from sparta_jax.models.llama import LlamaForCausalLM

    config = ModelConfig.from_hf_dict({**TINY, "num_hidden_layers": 4, "architectures": ["LlamaForCausalLM"]})
    graphdef, trainable, frozen = dpo.split_lora(
        LlamaForCausalLM(config, lora=uniform_lora_config(2, 4, 8.0), rngs=nnx.Rngs(0)))
    rows, length = 8, 128
    ids = jnp.ones((rows, length), jnp.int32)
    temps = {}
    for mode in ("none", "dots", "full"):
        def loss(t, mode=mode):
            hidden = nnx.merge(graphdef, t, frozen).hidden_states(ids, adapter_ids=jnp.zeros((rows,), jnp.int32),
                                                                  remat=mode)
            return jnp.sum(hidden**2)

        temps[mode] = jax.jit(jax.grad(loss)).lower(trainable).compile().memory_analysis().temp_size_in_bytes
    d, kv = config.hidden_size, config.num_kv_heads * config.head_dim
    projections = config.num_layers * rows * length * (d + 2 * kv + d + 3 * config.intermediate_size) * 4
    assert temps["full"] < temps["dots"] < temps["none"], temps
    assert projections <= temps["dots"] - temps["full"] <= 1.2 * projections, (temps, projections)
    with pytest.raises(ValueError, match="remat 'some': one of none, full, dots"):
        dpo.DPOConfig(remat="some")


def test_member_rates_scale_each_member_s_update():
    """apply_gradients with member_rates [1, 0.5, 0]: member 0 moves as without them, member 1 half
    as far (AdamW's update, weight decay included, is linear in the rate), member 2 not at all."""
    cfg = dpo.DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, lr_schedule="constant", max_grad_norm=0.5,
                        weight_decay=0.1)
    rng = np.random.default_rng(0)
    params = {"lora_a": jnp.asarray(rng.normal(size=(2, 3, 4, 5)), jnp.float32),  # [layers, members, ...]
              "lora_b": jnp.asarray(rng.normal(size=(2, 3, 5)), jnp.float32)}
    grads = jax.tree.map(lambda x: jnp.asarray(rng.normal(size=x.shape), jnp.float32), params)
    opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    state = dpo.init_train_state(params, opt, cfg, 10)
    plain = dpo.apply_gradients(state, grads, opt, cfg)
    scaled = dpo.apply_gradients(state, grads, opt, cfg, jnp.asarray([1.0, 0.5, 0.0]), dpo.lora_member_axis)
    for name, before in params.items():
        moved = np.asarray(plain.params[name]) - np.asarray(before)
        got = np.asarray(scaled.params[name]) - np.asarray(before)
        assert np.abs(moved).min() > 0
        np.testing.assert_array_equal(got[:, 0], moved[:, 0])
        np.testing.assert_allclose(got[:, 1], 0.5 * moved[:, 1], rtol=0, atol=5e-7)  # float32 sums near 1: ulp 1.2e-7
        np.testing.assert_array_equal(np.asarray(scaled.params[name])[:, 2], np.asarray(before)[:, 2])
    # the optimizer's moments are the same either way: the factor scales the step, not the statistics
    for a, b in zip(jax.tree.leaves(plain.opt_state), jax.tree.leaves(scaled.opt_state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    full = dpo.scale_members({"w": jnp.ones((3, 2))}, jnp.asarray([2.0, 1.0, 0.0]), dpo.full_member_axis)
    np.testing.assert_array_equal(np.asarray(full["w"]), [[2, 2], [1, 1], [0, 0]])


@pytest.mark.e2e
def test_a_lora_step_with_member_rates(base_dir, mesh1):
    """The jitted step takes member_rates: rate 0 leaves a member's adapter bit-identical, rate 1
    gives the step without them (to float noise: member_rates compiles another program)."""
    cfg = dpo.DPOConfig(learning_rate=1e-2, warmup_ratio=0.0, lr_schedule="constant")
    batch = make_batch(seed=2)
    results = []
    for rates in (None, jnp.asarray([1.0, 0.0])):
        tribe = lora_model(base_dir, mesh1, members=2, seed=5)
        graphdef, trainable, frozen = dpo.split_lora(tribe)
        before = {k: np.asarray(v[...]) for k, v in nnx.to_flat_state(trainable)}
        ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch)
        ref = ref + jnp.asarray(np.random.default_rng(1).normal(0, 1, ref.shape), jnp.float32)  # policy != ref
        opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
        state, _ = dpo.make_lora_train_step(graphdef, cfg, opt)(dpo.init_train_state(trainable, opt, cfg, 5), frozen,
                                                                 batch, ref, rates)
        results.append({k: np.asarray(v[...]) for k, v in nnx.to_flat_state(state.params)})
    plain, rated = results
    for k in plain:
        np.testing.assert_allclose(rated[k][:, 0], plain[k][:, 0], rtol=1e-5, atol=ADAM_ATOL)  # another program
        np.testing.assert_array_equal(rated[k][:, 1], before[k][:, 1])
        assert not np.array_equal(plain[k][:, 1], before[k][:, 1])
