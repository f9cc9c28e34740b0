"""The paper's setup on a Cloud TPU v4-32 pod slice: ten Qwen2.5-7B-Instruct LoRA experts, GSM8K.
It is configs/paper.py:gsm8k (the paper's twelve tasks share these settings there).

    python -m sparta_jax.main --config=configs/tpu_v4.py --workdir=gs://BUCKET/run \
        --config.tribe.base=/path/Qwen2.5-7B-Instruct "--config.tribe.adapters=('/experts/a', '/experts/b', ...)"

Paper settings (docs/algorithm.md §2): 8 iterations x 1000 duels, alpha 0.6, k 5, sampling T .7 / top-k 50 /
top-p .95, 512 new tokens (answers) and 256 (judges), prompts cut at 512 tokens, DPO beta 0.1,
lr 1e-6 cosine with 10% warmup, weight decay 1e-5, 1 epoch, max length 512 / prompt 256, the
released code's `faithful` mode.

One deliberate difference: the released code trains with batch 1 (one pair per optimizer step);
here a step takes 16 pairs (4 micro-batches of 4, every member at once). With ~1000 pairs an
iteration, batch 1 would be ~1000 sequential steps of 10 tiny sequences each, which leaves a
16-chip slice almost idle; 16 pairs make 16x fewer, larger updates at the same learning rate.
For the released code's exact schedule run with --config.dpo.pairs_per_step=1 --config.dpo.grad_accum=1.

Evaluation (configs/paper.py): greedy, 512 new tokens, every member on 200 dev items held out of
GSM8K's train, the best one on the whole test split (1319 items).
"""
from sparta_jax.config_files import sibling_config


def get_config():
    return sibling_config(__file__, "paper", "gsm8k")
