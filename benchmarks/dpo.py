"""DPO training throughput: tokens/s (and MFU on GPU) of the tribe step, against PyTorch.

    python benchmarks/dpo.py --case cpu [--append BENCHMARKS.md]
    python benchmarks/dpo.py --case gpu [--append BENCHMARKS.md]
    python benchmarks/dpo.py --case gpu --smoke     # the gpu code path at a tiny shape, any machine

cpu: the embedded SmolLM2-135M (f32), one LoRA member (r=16, q/k/v/o) with and without remat
     (recomputing activations in the backward pass: on in the 7B configs, off in the CPU ones),
     and four members in one step, 2 pairs x 256 tokens per member, against a torch + peft eager
     step (which recomputes nothing).
gpu: Qwen2.5-7B shape (bf16 compute) LoRA r=64 q/k/v/o, 4 pairs x 512; ten LoRA members in one
     step; Qwen2.5-1.5B shape full fine-tuning with AdamW (f32 master weights), 4 pairs x 512;
     the PyTorch cases in the same run when torch is present.
tokens/s counts every token of every chosen and rejected row, per member (a step over M members
processes M times the pairs). MFU uses 6 N flops per token for full fine-tuning and 4 N for
LoRA (no weight gradients for the frozen base), over the chip's dense bf16 peak.
"""
from __future__ import annotations

import os
import sys
import time

if "--case" in sys.argv and sys.argv[sys.argv.index("--case") + 1] == "gpu":
    os.environ.setdefault("XLA_FLAGS", "--xla_gpu_enable_triton_gemm=false")
    os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # PyTorch shares the device
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from sparta_jax import dpo, sharding  # noqa: E402
from sparta_jax.models.config import ModelConfig  # noqa: E402
from sparta_jax.models.loading import build_model, from_pretrained  # noqa: E402
from sparta_jax.models.lora import uniform_lora_config  # noqa: E402
from common import against, case_args, markdown_table, measured_where, publish  # noqa: E402

PEAK_BF16 = {"H100": 989e12, "H200": 989e12}




def random_batch(pairs, length, vocab, prompt=None, seed=0) -> dpo.PairBatch:
    rng = np.random.default_rng(seed)
    prompt = prompt or length // 4
    ids = rng.integers(100, vocab - 1, (pairs, 2, length)).astype(np.int32)
    ids[:, 1, :prompt] = ids[:, 0, :prompt]
    mask = np.ones((pairs, 2, length), bool)
    response = mask.copy()
    response[:, :, :prompt] = False
    return dpo.PairBatch(jnp.asarray(ids), jnp.asarray(mask), jnp.asarray(response))


def n_params(config: ModelConfig) -> int:
    c = config
    per_layer = (c.hidden_size * (c.q_size + 2 * c.kv_size) + c.q_size * c.hidden_size
                 + 3 * c.hidden_size * c.intermediate_size)
    embed = c.vocab_size * c.hidden_size * (1 if c.tie_word_embeddings else 2)
    return c.num_layers * per_layer + embed


def time_steps(step, state, frozen, batch, ref, repeats=3):
    state, metrics = step(state, frozen, batch, ref)  # compile
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for _ in range(repeats):
        state, metrics = step(state, frozen, batch, ref)
    jax.block_until_ready(metrics)
    return (time.perf_counter() - start) / repeats


def ours_lora(model, members, batch, cfg):
    graphdef, trainable, frozen = dpo.split_lora(model)
    ref = dpo.make_lora_reference_logps(graphdef, cfg)(trainable, frozen, batch)
    opt = dpo.make_optimizer(cfg, dpo.lora_member_axis)
    seconds = time_steps(dpo.make_lora_train_step(graphdef, cfg, opt), dpo.init_train_state(trainable, opt, cfg, 1000),
                         frozen, batch, ref)
    return members * batch.ids.size / seconds


def ours_full(model, batch, cfg):
    graphdef, state = nnx.split(model)
    stacked = jax.tree.map(lambda x: x[None], state)
    ref = dpo.make_full_reference_logps(graphdef, cfg)(stacked, batch)
    opt = dpo.make_optimizer(cfg, dpo.full_member_axis)
    seconds = time_steps(dpo.make_full_train_step(graphdef, cfg, opt), dpo.init_train_state(stacked, opt, cfg, 1000),
                         None, batch, ref)
    return batch.ids.size / seconds


def torch_step_tokens_per_s(hf_model, batch: dpo.PairBatch, device, trainable_filter, repeats=3) -> float:
    """An eager torch DPO step (policy forward on chosen+rejected, backward, AdamW), refs precomputed."""
    import torch

    ids = torch.tensor(np.asarray(batch.ids).reshape(-1, batch.ids.shape[-1]), device=device, dtype=torch.long)
    mask = torch.tensor(np.asarray(batch.mask).reshape(ids.shape), device=device, dtype=torch.long)
    resp = torch.tensor(np.asarray(batch.response_mask).reshape(ids.shape), device=device)
    params = [p for n, p in hf_model.named_parameters() if trainable_filter(n)]
    for n, p in hf_model.named_parameters():
        p.requires_grad_(trainable_filter(n))
    opt = torch.optim.AdamW(params, lr=1e-6, weight_decay=1e-5)
    ref = torch.zeros(ids.shape[0], device=device)

    def step():
        logits = hf_model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        logp = torch.log_softmax(logits, -1).gather(-1, ids[:, 1:, None])[..., 0]
        seq = (logp * resp[:, 1:]).sum(-1) - ref
        chosen, rejected = seq.view(-1, 2).unbind(-1)
        loss = -torch.nn.functional.logsigmoid(0.1 * (chosen - rejected)).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    step()
    sync = torch.cuda.synchronize if device != "cpu" else (lambda: None)
    sync()
    start = time.perf_counter()
    for _ in range(repeats):
        step()
    sync()
    return ids.numel() / ((time.perf_counter() - start) / repeats)


# --------------------------------------------------------------------------------------- cpu
def cpu_case():
    import peft
    import torch
    import transformers

    from sparta_jax.models.embedded import materialize_smollm2

    path = materialize_smollm2()
    rows = []
    batch = None
    # remat on is DPOConfig's default and the 7B configs'; configs/base.py (CPU) turns it off.
    for members, remat in ((1, True), (1, False), (4, False)):
        cfg = dpo.DPOConfig(learning_rate=1e-6, logps_chunk=128, remat=remat)
        lora = uniform_lora_config(members, rank=16, alpha=32.0)
        model, _ = from_pretrained(path, dtype=jnp.float32, load_tokenizer=False, lora=lora)
        batch = random_batch(2, 256, model.config.vocab_size)
        rows.append(dict(case=f"SmolLM2-135M f32, {members} LoRA member(s) r16 qkvo, 2 pairs x 256, "
                              f"remat {'on' if remat else 'off'}",
                         ours=ours_lora(model, members, batch, cfg), torch=None, mfu=None))
    torch.set_num_threads(os.cpu_count())
    hf = transformers.AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=16, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    theirs = torch_step_tokens_per_s(hf, batch, "cpu", lambda n: "lora_" in n)  # no recompute, as remat off
    rows[0]["torch"] = rows[1]["torch"] = theirs
    return rows


# --------------------------------------------------------------------------------------- gpu
QWEN7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
              num_attention_heads=28, num_key_value_heads=4, rope_theta=1e6, tie_word_embeddings=False)
QWEN1_5B = dict(vocab_size=151936, hidden_size=1536, intermediate_size=8960, num_hidden_layers=28,
                num_attention_heads=12, num_key_value_heads=2, rope_theta=1e6, tie_word_embeddings=True)
TINY = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, rope_theta=1e4)
# The GPU case, and a smoke scale that runs the same code on any machine in seconds
# (tests run it on CPU so that the one GPU session never meets an untried line).
GPU_SCALE = dict(lora_shape=QWEN7B, lora_name="Qwen2.5-7B shape", full_shape=QWEN1_5B,
                 full_name="Qwen2.5-1.5B shape", pairs=4, length=512, members=10, rank=64)
SMOKE_SCALE = dict(lora_shape={**TINY, "tie_word_embeddings": False}, lora_name="smoke (tiny, not a measurement)",
                   full_shape={**TINY, "tie_word_embeddings": True}, full_name="smoke (tiny, not a measurement)",
                   pairs=2, length=32, members=3, rank=4)


def torch_cases(scale, batch, device) -> tuple[float | None, float | None]:
    """The two PyTorch steps (LoRA on the LoRA shape, full fine-tuning on the full shape), or
    (None, None) where torch, transformers or peft are missing."""
    try:
        import peft
        import torch
        import transformers
    except ImportError:
        return None, None
    with torch.device(device):
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**scale["lora_shape"])).to(torch.bfloat16)
    rank = scale["rank"]
    hf = peft.get_peft_model(hf, peft.LoraConfig(r=rank, lora_alpha=2 * rank,
                                                 target_modules=["q_proj", "k_proj", "v_proj", "o_proj"]))
    lora = torch_step_tokens_per_s(hf, batch, device, lambda n: "lora_" in n)
    del hf
    with torch.device(device):
        hf = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**scale["full_shape"])).to(torch.bfloat16)
    full = torch_step_tokens_per_s(hf, batch, device, lambda n: True)
    del hf
    if device == "cuda":
        torch.cuda.empty_cache()  # give the memory back before XLA takes its own
    return lora, full


def gpu_case(scale=GPU_SCALE):
    try:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
    except ImportError:
        device = None
    peak = next((v for k, v in PEAK_BF16.items() if k in jax.devices()[0].device_kind), None)
    mesh = sharding.make_mesh({"data": 1, "fsdp": 1, "tensor": 1}, devices=jax.devices()[:1])

    def mfu(tok_s, n, per_token):
        return None if peak is None else tok_s * per_token * n / peak

    def model_config(shape):
        return ModelConfig.from_hf_dict({**shape, "architectures": ["Qwen2ForCausalLM"], "max_position_embeddings": 32768})

    config_lora, config_full = model_config(scale["lora_shape"]), model_config(scale["full_shape"])
    pairs, length, rank = scale["pairs"], scale["length"], scale["rank"]
    # One batch for every case (token ids below the smaller vocabulary), torch measured first.
    batch = random_batch(pairs, length, min(config_lora.vocab_size, config_full.vocab_size))
    torch_lora, torch_full = torch_cases(scale, batch, device) if device else (None, None)
    cfg = dpo.DPOConfig(logps_chunk=128)
    rows = []
    for members in (1, scale["members"]):
        model = build_model(config_lora, {}, lora=uniform_lora_config(members, rank, 2.0 * rank), dtype=jnp.bfloat16,
                            param_dtype=jnp.bfloat16, mesh=mesh)
        tok_s = ours_lora(model, members, batch, cfg)
        rows.append(dict(case=f"{scale['lora_name']} bf16, {members} LoRA r{rank} qkvo, {pairs} pairs x {length}",
                         ours=tok_s, torch=torch_lora if members == 1 else None,
                         mfu=mfu(tok_s, n_params(config_lora), 4)))
        del model
    model = build_model(config_full, {}, dtype=jnp.bfloat16, param_dtype=jnp.float32, mesh=mesh)
    tok_s = ours_full(model, batch, cfg)
    rows.append(dict(case=f"{scale['full_name']}, full fine-tune AdamW (bf16 compute, f32 master), "
                          f"{pairs} pairs x {length}", ours=tok_s, torch=torch_full,
                     mfu=mfu(tok_s, n_params(config_full), 6)))
    return rows


def table(rows, where) -> str:
    return markdown_table("DPO step", where, ["case", "sparta_jax tok/s", "PyTorch tok/s", "ratio", "MFU"], [
        [r["case"], f"{r['ours']:,.0f}", *against(r["ours"], r["torch"]), f"{100 * r['mfu']:.0f}%" if r["mfu"] else "-"]
        for r in rows])


def main():
    args = case_args(__doc__.splitlines()[0])
    rows = cpu_case() if args.case == "cpu" else gpu_case(SMOKE_SCALE if args.smoke else GPU_SCALE)
    publish(table(rows, measured_where("dpo.py", args)), args.append)


if __name__ == "__main__":
    main()
