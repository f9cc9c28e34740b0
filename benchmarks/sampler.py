"""Sampler throughput against transformers' PyTorch `generate` on the same weights.

    python benchmarks/sampler.py --case cpu [--append BENCHMARKS.md]
    python benchmarks/sampler.py --case gpu [--append BENCHMARKS.md]
    python benchmarks/sampler.py --case gpu --smoke     # the gpu code path at a tiny shape, any machine

cpu: the embedded SmolLM2-135M-Instruct in float32, batch 8, 64-token prompts, 64 new tokens;
     the floor is one cache-free 1-token forward of the batch (every weight read once by XLA's
     own matmuls, logits included): tok/s no decode loop on this machine can beat. Then one
     decode step, compiled alone, against the cache length (128 / 576 / 1088 slots): its time
     should grow as the bytes it must move (weights plus the whole cache read once) grow.
gpu: the Qwen2.5-7B shape with random bf16 weights, prompt 128, 256 new tokens, temperature 0.7,
     top-k 50, top-p 0.95, batch 24 and 64, with and without 10 LoRA adapters (r=64, q/k/v/o)
     mixed in one batch; also % of the bandwidth floor (bytes of weights + KV cache read per
     decode step over the measured device copy bandwidth).
Both cases time one row more with `slice_layers="per_step"` (each decode step slices the layer
stacks: no copy of the layer weights for the call, at whatever the slicing costs in each step).
Every row generates exactly the budget (no stop tokens), so tokens/s compare like for like.
"""
from __future__ import annotations

import os
import sys
import time

if "--case" in sys.argv and sys.argv[sys.argv.index("--case") + 1] == "gpu":
    # XLA's Triton GEMMs are slow for the skinny decode matmuls; cuBLAS halves the step time.
    os.environ.setdefault("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=false")
    # PyTorch shares the device: XLA takes memory as it needs it instead of 75% up front.
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import ml_dtypes  # noqa: E402
import numpy as np  # noqa: E402

from sparta_jax import sharding  # noqa: E402
from sparta_jax.models.config import ModelConfig  # noqa: E402
from sparta_jax.models.loading import build_model, checkpoint_host_arrays, from_pretrained  # noqa: E402
from sparta_jax.models.lora import uniform_lora_config  # noqa: E402
from sparta_jax.models.llama import init_cache  # noqa: E402
from sparta_jax.sampling import Sampler, SamplerConfig, decode_step  # noqa: E402
from common import against, case_args, heading, markdown_table, measured_where, publish  # noqa: E402

SAMPLING = dict(temperature=0.7, top_k=50, top_p=0.95)


def time_ours(sampler, model, prompts, new_tokens, adapter_ids=None, repeats=2) -> float:
    kw = dict(max_new_tokens=new_tokens, stop_ids=[], decode=False, adapter_ids=adapter_ids, **SAMPLING)
    sampler.generate(model, prompts, rng=jax.random.key(0), **kw)  # compile
    best = float("inf")
    for r in range(repeats):
        start = time.perf_counter()
        out = sampler.generate(model, prompts, rng=jax.random.key(r + 1), **kw)
        best = min(best, time.perf_counter() - start)
        assert int(out.lengths.sum()) == len(prompts) * new_tokens
    return len(prompts) * new_tokens / best


def time_hf(hf_model, prompts, new_tokens, device, repeats=2) -> float:
    import torch

    ids = torch.tensor(np.asarray(prompts), device=device)
    mask = torch.ones_like(ids)
    kw = dict(do_sample=True, max_new_tokens=new_tokens, min_new_tokens=new_tokens, pad_token_id=0, **SAMPLING)
    with torch.no_grad():
        hf_model.generate(input_ids=ids, attention_mask=mask, **{**kw, "max_new_tokens": 4, "min_new_tokens": 4})
        best = float("inf")
        for _ in range(repeats):
            if device != "cpu":
                torch.cuda.synchronize()
            start = time.perf_counter()
            hf_model.generate(input_ids=ids, attention_mask=mask, **kw)
            if device != "cpu":
                torch.cuda.synchronize()
            best = min(best, time.perf_counter() - start)
    return len(prompts) * new_tokens / best


def random_prompts(batch, length, vocab, seed=0):
    rng = np.random.default_rng(seed)
    return [list(rng.integers(100, vocab - 1, length)) for _ in range(batch)]


# --------------------------------------------------------------------------------------- cpu
def cpu_case():
    import torch
    import transformers

    from sparta_jax.models.embedded import materialize_smollm2

    torch.set_num_threads(os.cpu_count())
    path = materialize_smollm2()
    model, tokenizer = from_pretrained(path, dtype=jnp.float32)
    sampler = Sampler(model, tokenizer, config=SamplerConfig(cache_dtype="float32"))
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    batch, prompt_len, new = 8, 64, 64
    prompts = random_prompts(batch, prompt_len, model.config.vocab_size)
    ours = time_ours(sampler, model, prompts, new)
    theirs = time_hf(hf, prompts, new, "cpu")
    per_step = Sampler(model, tokenizer, config=SamplerConfig(cache_dtype="float32", slice_layers="per_step"))
    # The floor on CPU: XLA's elementwise copy is not the bandwidth its matmuls get, so the floor
    # is measured as what XLA's matmuls achieve: one token per row through every weight (a
    # cache-free 1-token forward, logits included), the least a decode step must do.
    floor = batch / weight_pass_seconds(model, batch)
    name = "SmolLM2-135M f32, batch 8, prompt 64, 64 new"
    return [dict(case=name, ours=ours, hf=theirs, floor=floor),
            dict(case=name + PER_STEP, ours=time_ours(per_step, model, prompts, new), hf=theirs, floor=floor)], \
        decode_step_curve(model, batch)


def _nbytes(tree) -> int:
    return sum(int(x.size) * x.dtype.itemsize for x in jax.tree.leaves(tree))


def decode_step_curve(model, batch: int, lengths=(128, 576, 1088), repeats: int = 20) -> list[dict]:
    """Best time of one decode step (compiled alone, its cache donated) at each cache length, and
    the bytes it must move: every weight once, every cache slot read once, the logits written."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    layers = jax.jit(lambda st: nnx.merge(graphdef, st).decode_weights())(state)
    step = jax.jit(lambda st, lw, t, c: decode_step(nnx.merge(graphdef, st), lw, t, jnp.ones_like(t, bool), c, None),
                   donate_argnums=3)
    weights = _nbytes(layers) + _nbytes(model.final_norm[...]) + _nbytes(model.unembedding())
    token = jnp.full((batch,), 100, jnp.int32)
    rows = []
    for length in lengths:
        cache = init_cache(model.config, batch, length, jnp.float32)
        ideal = weights + _nbytes((cache.k, cache.v)) + batch * model.config.vocab_size * 4
        logits, cache = step(state, layers, token, cache)
        jax.block_until_ready(cache)
        best = float("inf")
        for _ in range(repeats):
            start = time.perf_counter()
            logits, cache = step(state, layers, token, cache)
            jax.block_until_ready(cache)
            best = min(best, time.perf_counter() - start)
        rows.append(dict(length=length, seconds=best, ideal_bytes=ideal))
    return rows


def curve_table(rows, where) -> str:
    first = rows[0]
    lines = heading("Decode step against cache length", where) + [
        "| cache slots | step ms | bytes it must move | time growth from the first row | bytes growth | "
        "time growth / bytes growth |",
        "|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        time_growth = r["seconds"] / first["seconds"]
        byte_growth = r["ideal_bytes"] / first["ideal_bytes"]
        lines.append(f"| {r['length']} | {1e3 * r['seconds']:.1f} | {r['ideal_bytes'] / 1e6:,.0f} MB | "
                     f"{time_growth:.2f}x | {byte_growth:.2f}x | {time_growth / byte_growth:.2f} |")
    return "\n".join(lines)


def weight_pass_seconds(model, batch: int, repeats: int = 20) -> float:
    """Best time of a 1-token forward of `batch` rows (no KV cache): every weight read once."""
    from flax import nnx

    graphdef, state = nnx.split(model)
    ids = jnp.full((batch, 1), 100, jnp.int32)
    forward = jax.jit(lambda st, x: nnx.merge(graphdef, st)(x, jnp.ones_like(x, dtype=bool)))
    forward(state, ids).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        forward(state, ids).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return best


# --------------------------------------------------------------------------------------- gpu
QWEN7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, max_position_embeddings=32768,
              rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=False)


class TorchTensors:
    """A torch state dict seen as checkpoint shards (bf16 bits viewed, never converted)."""

    def __init__(self, state_dict):
        self.sd = state_dict

    def __contains__(self, name):
        return name in self.sd

    def shape(self, name):
        return tuple(self.sd[name].shape)

    def get(self, name):
        import torch

        t = self.sd[name].detach().to("cpu")
        if t.dtype == torch.bfloat16:
            return t.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
        return t.numpy()


def copy_bandwidth(n_bytes: int = 2**31) -> float:
    """Bytes per second a device copy moves (read + write)."""
    x = jnp.ones((n_bytes // 2,), jnp.bfloat16)
    copy = jax.jit(lambda a: a + 1)
    copy(x).block_until_ready()
    start = time.perf_counter()
    for _ in range(10):
        y = copy(x)
    y.block_until_ready()
    return 2 * x.nbytes * 10 / (time.perf_counter() - start)


# The GPU case, and a smoke scale that runs the same code on any machine in seconds
# (tests run it on CPU so that the one GPU session never meets an untried line).
PER_STEP = ", layers sliced per step"  # SamplerConfig.slice_layers="per_step" (the others: "per_call")
GPU_SCALE = dict(shape=QWEN7B, name="Qwen2.5-7B shape", batches=(24, 64), prompt=128, new=256, adapters=10, rank=64)
SMOKE_SCALE = dict(shape={**QWEN7B, "vocab_size": 512, "hidden_size": 64, "intermediate_size": 128,
                          "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2},
                   name="smoke (tiny Qwen2 shape, not a measurement)", batches=(4, 8), prompt=16, new=16,
                   adapters=3, rank=4)


def gpu_case(scale=GPU_SCALE):
    import torch
    import transformers

    device = "cuda" if torch.cuda.is_available() else "cpu"
    hf_config = transformers.Qwen2Config(**scale["shape"])
    torch.manual_seed(0)
    with torch.device(device):
        hf = transformers.Qwen2ForCausalLM(hf_config).to(torch.bfloat16).eval()
    config = ModelConfig.from_hf_dict({**hf_config.to_dict(), "architectures": ["Qwen2ForCausalLM"]})
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])
    shards = TorchTensors(hf.state_dict())
    n_adapters = scale["adapters"]
    lora = uniform_lora_config(n_adapters, rank=scale["rank"], alpha=2.0 * scale["rank"])
    model = build_model(config, checkpoint_host_arrays(config, shards, (), None), lora=lora,
                        dtype=jnp.bfloat16, param_dtype=jnp.bfloat16, mesh=mesh)
    for i, (name, value) in enumerate(sorted(model.lora.arrays().items())):  # non-zero adapters
        getattr(model.lora, name).set_value(0.01 * jax.random.normal(jax.random.key(i), value.shape, value.dtype))
    prompt_len, new = scale["prompt"], scale["new"]
    prompts = {b: random_prompts(b, prompt_len, config.vocab_size, seed=b) for b in scale["batches"]}
    # HF first, then its memory goes back before XLA allocates (both share the one device).
    # One timed run each: HF needs ~30 s per batch-24 run on the H100, and the device time is short.
    theirs = {b: time_hf(hf, prompts[b], new, device, repeats=1) for b in scale["batches"]}
    del hf, shards
    if device == "cuda":
        torch.cuda.empty_cache()
    samplers = {how: Sampler(model, pad_id=0, mesh=mesh, config=SamplerConfig(cache_dtype="bfloat16", slice_layers=how))
                for how in ("per_call", "per_step")}
    bandwidth = copy_bandwidth(2**31 if device == "cuda" else 2**24)
    base_bytes = sum(v.nbytes for k, v in _flat(model).items() if not k.startswith("lora/"))
    lora_bytes = sum(v.nbytes for k, v in _flat(model).items() if k.startswith("lora/"))
    rows = []
    for batch in scale["batches"]:
        kv_bytes = 2 * config.num_layers * batch * (prompt_len + new) * config.kv_size * 2
        mixed = [i % n_adapters for i in range(batch)]
        # The layers sliced in each step, on the largest batch with adapters: the call's copy of
        # the layer weights saved, at whatever each step's slicing costs on this device.
        for adapters, how in ((None, "per_call"), (mixed, "per_call"), (mixed, "per_step")):
            if how == "per_step" and batch != max(scale["batches"]):
                continue
            tok_s = time_ours(samplers[how], model, prompts[batch], new, adapter_ids=adapters)
            step_bytes = base_bytes + kv_bytes + (lora_bytes if adapters else 0)
            floor = bandwidth / step_bytes * batch
            name = (f"{scale['name']} bf16, batch {batch}, prompt {prompt_len}, {new} new"
                    + (f", {n_adapters} LoRA r{scale['rank']} mixed" if adapters else "")
                    + (PER_STEP if how == "per_step" else ""))
            rows.append(dict(case=name, ours=tok_s, hf=None if adapters else theirs[batch], floor=floor))
    return rows


def _flat(model):
    from flax import nnx

    return {sharding.path_name(p): v[...] for p, v in nnx.to_flat_state(nnx.state(model))}


def table(rows, where) -> str:
    return markdown_table("Sampler", where, ["case", "sparta_jax tok/s", "HF generate tok/s", "ratio",
                                             "% of bandwidth floor"], [
        [r["case"], f"{r['ours']:,.0f}", *against(r["ours"], r["hf"]),
         f"{100 * r['ours'] / r['floor']:.0f}% of {r['floor']:,.0f}" if r["floor"] else "-"] for r in rows])


def main():
    args = case_args(__doc__.splitlines()[0])
    curve = None
    if args.case == "cpu":
        rows, curve = cpu_case()
    else:
        rows = gpu_case(SMOKE_SCALE if args.smoke else GPU_SCALE)
    where = measured_where("sampler.py", args)
    publish(table(rows, where), args.append)
    if curve:
        publish(curve_table(curve, where), args.append)


if __name__ == "__main__":
    main()
