"""TRL reference for the JAX DPO step: run TRL's `DPOTrainer` on exactly the given token ids.

`trl_dpo_step(model_dir, pairs, ...)` trains a Hugging Face causal LM folder with TRL's own `DPOTrainer`
(TRL 1.16, transformers 5.24) on CPU in float32, and returns what TRL logged at every optimizer step plus the
trainable parameters before and after, so the JAX implementation can be compared number for number.

How the ids reach TRL unchanged
-------------------------------
`DPOTrainer._prepare_dataset` (trl/trainer/dpo_trainer.py:1036) always works on text: it extracts a prompt,
appends the EOS *text* to `chosen`/`rejected` and re-tokenizes `prompt`, `prompt+chosen`, `prompt+rejected`,
then splits on their common prefix. There is no switch that skips it for text-only models (the
`skip_prepare_dataset` at dpo_trainer.py:847 is only true for vision datasets). Its output is a dataset with the
columns `prompt_ids`, `chosen_ids`, `rejected_ids`, which is all the rest of the trainer reads
(`_set_signature_columns_if_needed`, dpo_trainer.py:1144; `DataCollatorForPreference`, dpo_trainer.py:146).
So `_IdsDPOTrainer` below overrides only `_prepare_dataset` to hand those three columns over as given.
`max_length=None` turns off the collator's truncation, the only other place that could drop tokens.

A tokenizer is still required (pad id, `processing_class` type checks); a word-level tokenizer whose vocabulary
is `<t0> ... <t{V-1}>` is built in memory. It is never used to tokenize, only to name the pad token. The pad id
has no effect on the numbers: padding is on the right, masked by `attention_mask` and by `labels=-100`.

Everything else (optimizer, schedule, clipping, accumulation, logging) is TRL / transformers' own code.
"""
from __future__ import annotations

import math
import os
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import numpy as np  # noqa: E402
import torch  # noqa: E402

# The DPO metrics TRL appends once per micro-batch (dpo_trainer.py:1582-1601) and averages at each log.
DPO_METRICS = (
    "rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
    "logps/chosen", "logps/rejected",
)


def make_id_tokenizer(vocab_size: int, pad_token_id: int = 0):
    """A `PreTrainedTokenizerFast` with one word-level token `<t{i}>` per id and pad `<t{pad}>`, no EOS.

    No EOS on purpose: transformers' Trainer copies a tokenizer EOS that differs from the model config onto the
    config; TRL only reads the EOS to append it to text completions, which `_IdsDPOTrainer` never does.
    """
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import WhitespaceSplit
    from transformers import PreTrainedTokenizerFast

    vocab = {f"<t{i}>": i for i in range(vocab_size)}
    tok = Tokenizer(WordLevel(vocab=vocab, unk_token=f"<t{pad_token_id}>"))
    tok.pre_tokenizer = WhitespaceSplit()
    pad = f"<t{pad_token_id}>"
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token=pad, unk_token=pad, padding_side="left")


def _ids_trainer_class():
    from datasets import Dataset, IterableDataset
    from trl import DPOTrainer

    class _IdsDPOTrainer(DPOTrainer):
        """`DPOTrainer` that takes `prompt_ids`/`chosen_ids`/`rejected_ids` as they are (no text, no EOS added)."""

        def _prepare_dataset(self, dataset: Dataset | IterableDataset, processing_class, args, dataset_name):
            needed = {"prompt_ids", "chosen_ids", "rejected_ids"}
            missing = needed - set(dataset.column_names)
            if missing:
                raise ValueError(f"{dataset_name} dataset lacks columns {sorted(missing)}")
            return dataset.select_columns(sorted(needed))

        def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
            # Keep the per-micro-batch values TRL is about to average (and clear) in `DPOTrainer.log`.
            mode = "train" if self.model.training else "eval"
            self._micro_metrics_log.append({k: list(v) for k, v in self._metrics[mode].items()})
            super().log(logs, start_time)

    return _IdsDPOTrainer


def _to_np(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy().copy()


def _params(model, full: bool) -> dict[str, np.ndarray]:
    if full:
        return {k: _to_np(v) for k, v in model.state_dict().items()}
    return {n: _to_np(p) for n, p in model.named_parameters() if p.requires_grad}


def trl_dpo_step(
    model_dir: str,
    pairs: list[dict],
    *,
    output_dir: str,
    beta: float = 0.1,
    loss_type: str = "sigmoid",
    learning_rate: float = 1e-3,
    weight_decay: float = 0.0,
    max_grad_norm: float = 1.0,
    warmup_ratio: float = 0.0,
    warmup_steps: int | None = None,
    lr_scheduler_type: str = "constant",
    batch_size: int = 2,
    grad_accum: int = 1,
    steps: int = 1,
    adam_beta1: float = 0.9,
    adam_beta2: float = 0.999,
    adam_epsilon: float = 1e-8,
    optim: str = "adamw_torch",
    lora: dict | str | None = None,
    seed: int = 0,
    attn_implementation: str = "eager",
    pad_token_id: int = 0,
    extra_config: dict[str, Any] | None = None,
) -> dict:
    """Run `steps` optimizer steps of TRL's DPOTrainer on `pairs` (in order) and return metrics and parameters.

    pairs: `[{"prompt_ids": [...], "chosen_ids": [...], "rejected_ids": [...]}, ...]`; used in the given order,
        `batch_size` pairs per micro-batch, `grad_accum` micro-batches per optimizer step. Exactly
        `steps * batch_size * grad_accum` pairs are needed (fewer would make TRL wrap around into a second epoch).
    lora: None for full fine-tuning (reference = a second, frozen copy loaded from `model_dir`); a dict of
        `peft.LoraConfig` kwargs to train a new adapter (reference = the base model with the adapter disabled);
        or the path of a saved PEFT adapter folder to keep training (TRL copies it into a frozen "ref" adapter,
        which is the reference).
    warmup_ratio / warmup_steps: transformers 5.24 has only `warmup_steps`; a value < 1 is a ratio,
        `ceil(ratio * steps)` steps. `warmup_steps` (an int >= 1) wins if given.
    optim: "adamw_torch" (torch.optim.AdamW, foreach) or "adamw_torch_fused" (transformers' default on torch>=2.8).

    Returns a dict:
        logs: one dict per optimizer step, as TRL logged it (loss, grad_norm, learning_rate, rewards/*, logps/*,
            logits/*, entropy, ...). `grad_norm` is the pre-clip global norm; `learning_rate` the lr the step used.
        micro: one dict per optimizer step, metric -> list of the per-micro-batch values TRL averaged into `logs`.
        initial_params / params: name -> float64 array of the trainable parameters before / after training
            (full fine-tuning: the whole `state_dict`; LoRA: the `lora_A`/`lora_B` weights, PEFT names such as
            `base_model.model.model.layers.0.self_attn.q_proj.lora_A.default.weight`).
        lora_scaling: for LoRA, module name -> scaling (lora_alpha / r, or / sqrt(r) with rslora).
        frozen_max_abs_change: for LoRA, the largest change of any frozen (base, or "ref" adapter) parameter.
        decay_param_names: names that received `weight_decay` (transformers' rule).
    """
    from datasets import Dataset
    from transformers import AutoConfig, TrainerCallback
    from trl import DPOConfig

    need = steps * batch_size * grad_accum
    if len(pairs) != need:
        raise ValueError(f"need exactly steps*batch_size*grad_accum = {need} pairs, got {len(pairs)}")
    for p in pairs:
        if not p["chosen_ids"] or not p["rejected_ids"]:
            raise ValueError("completions must be non-empty")

    data = Dataset.from_dict({
        "prompt_ids": [list(map(int, p["prompt_ids"])) for p in pairs],
        "chosen_ids": [list(map(int, p["chosen_ids"])) for p in pairs],
        "rejected_ids": [list(map(int, p["rejected_ids"])) for p in pairs],
    })
    config = AutoConfig.from_pretrained(model_dir)
    tokenizer = make_id_tokenizer(config.get_text_config().vocab_size, pad_token_id)

    if warmup_steps is None:
        warmup_steps = warmup_ratio  # < 1: ratio of the total steps, ceil'ed by transformers
        if warmup_ratio >= 1:
            raise ValueError("warmup_ratio must be < 1 (transformers reads a value >= 1 as a step count)")

    args = DPOConfig(
        output_dir=output_dir,
        beta=beta,
        loss_type=[loss_type],
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        max_grad_norm=max_grad_norm,
        warmup_steps=warmup_steps,
        lr_scheduler_type=lr_scheduler_type,
        per_device_train_batch_size=batch_size,
        gradient_accumulation_steps=grad_accum,
        max_steps=steps,
        adam_beta1=adam_beta1,
        adam_beta2=adam_beta2,
        adam_epsilon=adam_epsilon,
        optim=optim,
        seed=seed,
        data_seed=seed,
        # exactness
        max_length=None,  # no truncation anywhere
        bf16=False, fp16=False, use_cpu=True,  # TRL defaults bf16=True (base_config.py __post_init__)
        model_init_kwargs={"dtype": "float32", "attn_implementation": attn_implementation},
        disable_dropout=True,
        gradient_checkpointing=False,  # TRL defaults it to True; numerically a no-op, only slower
        precompute_ref_log_probs=False,
        train_sampling_strategy="sequential",  # data order = given order
        dataloader_num_workers=0,
        dataloader_drop_last=False,
        # plumbing
        logging_steps=1,
        report_to=[],
        save_strategy="no",
        eval_strategy="no",
        disable_tqdm=True,
        **(extra_config or {}),
    )

    peft_config = None
    model: Any = model_dir
    if isinstance(lora, dict):
        from peft import LoraConfig

        peft_config = LoraConfig(**{"task_type": "CAUSAL_LM", **lora})
    elif isinstance(lora, str):
        from peft import PeftModel
        from transformers import AutoModelForCausalLM

        base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32,
                                                    attn_implementation=attn_implementation)
        model = PeftModel.from_pretrained(base, lora, is_trainable=True)

    captured: list[dict] = []

    class _Capture(TrainerCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            if logs is not None and "rewards/chosen" in logs:
                captured.append({**logs, "step": state.global_step})

    trainer_cls = _ids_trainer_class()
    trainer = trainer_cls(model=model, args=args, train_dataset=data, processing_class=tokenizer,
                          peft_config=peft_config, callbacks=[_Capture()])
    trainer._micro_metrics_log = []
    full = lora is None
    initial = _params(trainer.model, full)
    frozen_before = {n: p.detach().clone() for n, p in trainer.model.named_parameters() if not p.requires_grad}
    decay = set(trainer.get_decay_parameter_names(trainer.model))

    trainer.train()

    micro = [m for m in trainer._micro_metrics_log if "rewards/chosen" in m]
    out = {
        "logs": captured,
        "micro": micro,
        "initial_params": initial,
        "params": _params(trainer.model, full),
        "decay_param_names": sorted(n for n, p in trainer.model.named_parameters() if p.requires_grad and n in decay),
    }
    if not full:
        after = dict(trainer.model.named_parameters())
        out["frozen_max_abs_change"] = max(
            (float((after[n].detach() - v).abs().max()) for n, v in frozen_before.items()), default=0.0)
        scaling = {}
        for name, module in trainer.model.named_modules():
            if hasattr(module, "scaling") and isinstance(module.scaling, dict) and "default" in module.scaling:
                scaling[name] = float(module.scaling["default"])
        out["lora_scaling"] = scaling
    return out


def sequence_logps(model, prompt_ids: list[int], completion_ids: list[int]) -> float:
    """sum_t log p(completion_t | prompt, completion_<t) with an unpadded float32 forward (no TRL involved)."""
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(input_ids=ids, use_cache=False).logits.float()
    logp = torch.log_softmax(logits[0, :-1], dim=-1)
    targets = ids[0, 1:]
    tok = logp.gather(-1, targets[:, None])[:, 0]
    return float(tok[len(prompt_ids) - 1:].double().sum())


def expected_warmup_steps(total_steps: int, warmup_ratio: float) -> int:
    """transformers 5.24 `TrainingArguments.get_warmup_steps` for a ratio < 1."""
    return math.ceil(total_steps * warmup_ratio)
