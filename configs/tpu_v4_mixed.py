"""The paper's rebuttal tribe on a Cloud TPU v4-32 slice: three Gemma-7B-it and three
Qwen2.5-7B-Instruct LoRA experts side by side, on Alpaca, 8 iterations (docs/algorithm.md §1;
the released code's last run script).

    python -m sparta_jax.main --config=configs/tpu_v4_mixed.py --workdir=gs://BUCKET/mixed \
        --config.data.path=/data/alpaca_data.json
    python -m sparta_jax.aot --config=configs/tpu_v4_mixed.py --topology=v4:2x2x4   # per-chip memory

Each group is a tribe of its own (base, tokenizer, chat template, sampler and DPO programs);
members keep one global order (the three Gemma experts, then the three Qwen ones) for
reputations and match-making. A duel may pair a Gemma with a Qwen member; each answers in its
own template, and every judge reads both answers as text in its own. Both groups shard over the
whole mesh and run in turn, so a group's programs have the other group's weights beside them
(docs/guide.md, "Mixed-base tribes"). Gemma has no system role: its template folds the system
prompt into the first user turn (docs/algorithm.md §2.2).

The expert folders below are placeholders: point them at your PEFT adapters, or leave them
empty for fresh adapters (every member of a group then starts as its base). Everything else
follows configs/tpu_v4.py (the paper's settings, `faithful` mode).
"""
from sparta_jax.config_files import sibling_config


def get_config():
    c = sibling_config(__file__, "tpu_v4")
    c.tribe.groups = (
        dict(name="gemma", base="/data/models/gemma-7b-it", members=3,
             names=("gemma_code", "gemma_cot", "gemma_flan"), adapters=()),
        dict(name="qwen", base="/data/models/Qwen2.5-7B-Instruct", members=3,
             names=("qwen_code", "qwen_cot", "qwen_flan"), adapters=()),
    )
    # Alpaca (tatsu-lab/alpaca's alpaca_data.json): open-ended, so dev and test are scored by
    # the tribe's judges (evaluator "judged").
    c.data = dict(kind="local", path="/data/alpaca_data.json", instruction_template="{instruction}\n\n{input}",
                  evaluator="judged", dev=200, test=500, seed=0)
    c.judge.mode = "sampled"
    c.iterations = 8
    # Two groups of three: a group's DPO micro-step holds 3 members x 8 pairs (configs/tpu_v4.py:
    # 10 x 4), so its 16-pair step takes 2 micro-steps (docs/results.md: the AOT memory table).
    c.dpo.grad_accum = 2
    c.dpo.remat = "full"  # "dots" (configs/paper.py) not yet compiled for Gemma-7B's larger activations
    return c
