"""Checks of the TRL DPO reference harness (tests/trl_reference.py) on a tiny random Qwen2, CPU, float32.

Besides checking the harness itself, `test_trl_matches_plain_torch_dpo` re-implements one DPO run in plain torch
(unpadded per-sequence forwards, mean loss per micro-batch, /grad_accum, global-norm clip, AdamW written out,
transformers' LR schedule) and asserts TRL lands on the same numbers: it is the executable statement of what the
JAX side has to do.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np
import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import transformers  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from tiny_models import save_hf_model  # noqa: E402
from trl_reference import sequence_logps, trl_dpo_step  # noqa: E402

pytestmark = pytest.mark.reference


def _save_qwen2(folder, seed=0):
    # Norms and biases randomised too (tiny_models), so weight-decay exclusions and every gradient matter.
    save_hf_model("qwen2", folder, seed)
    return str(folder)


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return _save_qwen2(tmp_path_factory.mktemp("tiny_qwen2"))


def _pairs(n, seed=0):
    """Pairs of varied lengths (so the collator pads), ids in [1, 100]."""
    g = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        lp, lc, lr = (int(x) for x in g.integers(1, 6, size=3))
        out.append({
            "prompt_ids": g.integers(1, 101, size=lp).tolist(),
            "chosen_ids": g.integers(1, 101, size=lc).tolist(),
            "rejected_ids": g.integers(1, 101, size=lr).tolist(),
        })
    return out


def _load(model_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                             attn_implementation="eager")


def _assert_params_close(got, want, init, param_rtol=1e-5, update_rtol=1e-3):
    """Per tensor: ||got - want|| <= param_rtol ||want|| and <= update_rtol ||want - init||.

    Not element-wise: Adam's first steps send an element's update to about lr * g / (|g| + eps), so elements whose
    gradient is near eps (1e-8) turn float32 rounding noise in g (~1e-10 here) into update differences of up to a
    few 1e-3 * lr. Two correct float32 implementations (TRL's padded batch vs unpadded forwards) differ there; on
    this model a handful of the 4096 q_proj elements do, ~1e-5 of lr=1e-2.
    k_proj.bias gets 10x looser `param_rtol`: its gradient only exists through RoPE (q.b would otherwise be a
    softmax-invariant shift), so it is ~100x smaller than the rest and mostly cancellation; its float32 relative error
    is large, and Adam passes that straight into the update (measured: 1.6e-5 of the parameter norm, all others
    <= 1.5e-7).
    """
    assert set(got) == set(want)
    for n in want:
        diff = np.linalg.norm(got[n] - want[n])
        rtol = param_rtol * (10 if n.endswith("k_proj.bias") else 1)
        assert diff <= rtol * np.linalg.norm(want[n]), (n, diff)
        assert diff <= update_rtol * np.linalg.norm(want[n] - init[n]) + 1e-12, (n, diff)


def test_step0_is_log2_and_full_params_change(qwen_dir, tmp_path):
    pairs = _pairs(2)
    out = trl_dpo_step(qwen_dir, pairs, output_dir=str(tmp_path), steps=1, batch_size=2)
    (log,) = out["logs"]
    assert abs(log["loss"] - math.log(2)) < 1e-6
    for k in ("rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies"):
        assert log[k] == 0.0, k
    assert set(out["params"]) == set(out["initial_params"])
    assert "lm_head.weight" in out["params"] and "model.embed_tokens.weight" in out["params"]
    changed = [n for n in out["params"] if not np.array_equal(out["params"][n], out["initial_params"][n])]
    # With lr=1e-3 Adam moves every parameter that has a gradient; unused embedding rows stay put.
    assert len(changed) == len(out["params"])
    # transformers' weight-decay rule: no biases, no norms.
    decay = set(out["decay_param_names"])
    assert not any(n.endswith("bias") or "norm" in n for n in decay)
    assert "lm_head.weight" in decay and "model.layers.0.self_attn.q_proj.weight" in decay


def test_logps_are_plain_completion_sums(qwen_dir, tmp_path):
    """TRL's logps/* equal an unpadded torch forward on the same ids: no token added, dropped or shifted."""
    pairs = _pairs(4, seed=1)
    out = trl_dpo_step(qwen_dir, pairs, output_dir=str(tmp_path), steps=1, batch_size=2, grad_accum=2)
    model = _load(qwen_dir).eval()
    micro = out["micro"][0]
    for mb in range(2):
        chunk = pairs[2 * mb: 2 * mb + 2]
        chosen = np.mean([sequence_logps(model, p["prompt_ids"], p["chosen_ids"]) for p in chunk])
        rejected = np.mean([sequence_logps(model, p["prompt_ids"], p["rejected_ids"]) for p in chunk])
        assert micro["logps/chosen"][mb] == pytest.approx(chosen, rel=1e-5)
        assert micro["logps/rejected"][mb] == pytest.approx(rejected, rel=1e-5)
    # The logged value is the plain mean of the micro-batch values.
    log = out["logs"][0]
    assert log["logps/chosen"] == pytest.approx(np.mean(micro["logps/chosen"]), rel=1e-12)


def _lr_factor(kind, step, warmup, total):
    # transformers/optimization.py: "constant" ignores warmup; the others ramp k/W from 0.
    if kind == "constant":
        return 1.0
    if step < warmup:
        return step / max(1, warmup)
    if kind == "constant_with_warmup":
        return 1.0
    progress = (step - warmup) / max(1, total - warmup)
    return max(0.0, 0.5 * (1.0 + math.cos(math.pi * 0.5 * 2.0 * progress)))


def _torch_dpo(model_dir, pairs, *, beta, lr, wd, max_grad_norm, sched, warmup_ratio, batch_size, grad_accum,
               steps, b1=0.9, b2=0.999, eps=1e-8):
    """One DPO run written out in plain torch; returns (per-step logs, final params as float64)."""
    policy, ref = _load(model_dir), _load(model_dir).eval()
    policy.train()
    params = [(n, p) for n, p in policy.named_parameters()]
    no_decay = lambda n: "bias" in n or "norm" in n  # noqa: E731  (what the Qwen2 names hit in the real rule)
    m = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params}
    v = {n: torch.zeros_like(p, dtype=torch.float64) for n, p in params}
    warmup = math.ceil(steps * warmup_ratio)

    def logp(model, prompt, completion):
        ids = torch.tensor([prompt + completion])
        logits = model(input_ids=ids, use_cache=False).logits[0, :-1].float()
        tok = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None])[:, 0]
        return tok[len(prompt) - 1:].sum()

    logs = []
    it = iter(pairs)
    for k in range(steps):
        policy.zero_grad()
        total_loss, rec = 0.0, {"rewards/chosen": [], "rewards/margins": [], "logps/chosen": []}
        for _ in range(grad_accum):
            mb = [next(it) for _ in range(batch_size)]
            pc = torch.stack([logp(policy, p["prompt_ids"], p["chosen_ids"]) for p in mb])
            pr = torch.stack([logp(policy, p["prompt_ids"], p["rejected_ids"]) for p in mb])
            with torch.no_grad():
                rc = torch.stack([logp(ref, p["prompt_ids"], p["chosen_ids"]) for p in mb])
                rr = torch.stack([logp(ref, p["prompt_ids"], p["rejected_ids"]) for p in mb])
            loss = -F.logsigmoid(beta * ((pc - rc) - (pr - rr))).mean()
            (loss / grad_accum).backward()
            total_loss += loss.item() / grad_accum
            rec["rewards/chosen"].append((beta * (pc - rc)).mean().item())
            rec["rewards/margins"].append((beta * ((pc - rc) - (pr - rr))).mean().item())
            rec["logps/chosen"].append(pc.mean().item())
        grads = {n: p.grad.double() for n, p in params}
        norm = math.sqrt(sum(float((g * g).sum()) for g in grads.values()))
        coef = min(max_grad_norm / (norm + 1e-6), 1.0)
        lr_k = lr * _lr_factor(sched, k, warmup, steps)
        t = k + 1
        with torch.no_grad():
            for n, p in params:
                g = grads[n] * coef
                w = p.double() * (1.0 - lr_k * (0.0 if no_decay(n) else wd))
                m[n] = b1 * m[n] + (1 - b1) * g
                v[n] = b2 * v[n] + (1 - b2) * g * g
                denom = (v[n].sqrt() / math.sqrt(1 - b2 ** t)) + eps
                p.copy_(w - (lr_k / (1 - b1 ** t)) * m[n] / denom)
        logs.append({"loss": total_loss, "grad_norm": norm, "learning_rate": lr_k,
                     **{key: float(np.mean(val)) for key, val in rec.items()}})
    return logs, {n: p.detach().double().numpy() for n, p in policy.named_parameters()}


@pytest.mark.parametrize("cfg", [
    # clipping active, constant LR, one micro-batch
    dict(sched="constant", warmup_ratio=0.0, steps=2, batch_size=2, grad_accum=1, wd=0.0, max_grad_norm=0.3),
    # accumulation, weight decay, cosine with ceil(0.34*3)=2 warmup steps (lr 0, lr/2, lr)
    dict(sched="cosine", warmup_ratio=0.34, steps=3, batch_size=2, grad_accum=2, wd=0.1, max_grad_norm=1.0),
], ids=["constant_clip", "cosine_warmup_ga2_wd"])
def test_trl_matches_plain_torch_dpo(qwen_dir, tmp_path, cfg):
    beta, lr = 0.1, 1e-2
    pairs = _pairs(cfg["steps"] * cfg["batch_size"] * cfg["grad_accum"], seed=2)
    out = trl_dpo_step(
        qwen_dir, pairs, output_dir=str(tmp_path), beta=beta, learning_rate=lr, weight_decay=cfg["wd"],
        max_grad_norm=cfg["max_grad_norm"], warmup_ratio=cfg["warmup_ratio"], lr_scheduler_type=cfg["sched"],
        batch_size=cfg["batch_size"], grad_accum=cfg["grad_accum"], steps=cfg["steps"])
    ref_logs, ref_params = _torch_dpo(qwen_dir, pairs, beta=beta, lr=lr, **cfg)

    assert len(out["logs"]) == cfg["steps"]
    for got, want in zip(out["logs"], ref_logs):
        assert got["learning_rate"] == pytest.approx(want["learning_rate"], rel=1e-12, abs=1e-15)
        assert got["grad_norm"] == pytest.approx(want["grad_norm"], rel=1e-4)
        for key in ("loss", "rewards/chosen", "rewards/margins", "logps/chosen"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), key
    if cfg["sched"] == "constant":
        assert ref_logs[0]["grad_norm"] > cfg["max_grad_norm"]  # the clip really was exercised
    assert abs(ref_logs[-1]["rewards/margins"]) > 1e-4  # later steps are not the trivial log(2) point
    _assert_params_close(out["params"], ref_params, out["initial_params"])


LORA = dict(r=4, lora_alpha=8, lora_dropout=0.1, target_modules=["q_proj", "v_proj", "gate_proj"])


def test_lora_trains_only_adapters(qwen_dir, tmp_path):
    pairs = _pairs(4, seed=3)
    out = trl_dpo_step(qwen_dir, pairs, output_dir=str(tmp_path), lora=LORA, steps=2, batch_size=2,
                       learning_rate=1e-2)
    assert abs(out["logs"][0]["loss"] - math.log(2)) < 1e-6  # B = 0: policy == base == reference
    assert out["logs"][0]["rewards/margins"] == 0.0
    assert out["frozen_max_abs_change"] == 0.0
    names = set(out["params"])
    assert names and all(".lora_A." in n or ".lora_B." in n for n in names)
    assert len(names) == 2 * 2 * 3  # 2 layers x 3 modules x (A, B)
    for n in names:
        assert not np.array_equal(out["params"][n], out["initial_params"][n]), n
        if ".lora_B." in n:
            assert not out["initial_params"][n].any()
    assert set(out["lora_scaling"].values()) == {2.0}
    assert abs(out["logs"][1]["rewards/margins"]) > 0.0


def test_existing_adapter_is_its_own_reference(qwen_dir, tmp_path):
    from peft import LoraConfig, get_peft_model

    base = _load(qwen_dir)
    peft_model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                 task_type="CAUSAL_LM"))
    torch.manual_seed(1)
    with torch.no_grad():
        for n, p in peft_model.named_parameters():
            if ".lora_B." in n:
                p.copy_(0.1 * torch.randn_like(p))
    adapter_dir = tmp_path / "adapter"
    peft_model.save_pretrained(str(adapter_dir))

    out = trl_dpo_step(qwen_dir, _pairs(2, seed=4), output_dir=str(tmp_path / "out"), lora=str(adapter_dir),
                       steps=1, batch_size=2)
    # Reference = frozen copy of the adapter (not the bare base), so step 0 is still log(2).
    assert abs(out["logs"][0]["loss"] - math.log(2)) < 1e-6
    assert out["frozen_max_abs_change"] == 0.0
    assert all(".default." in n for n in out["params"])
    b = next(n for n in out["initial_params"] if ".lora_B." in n)
    assert out["initial_params"][b].any()
    assert any(not np.array_equal(out["params"][n], out["initial_params"][n]) for n in out["params"])
