"""The paper's comparison on the CPU: Sparta and its four baselines from one tribe, task,
budget of generated answers and seeds (docs/results.md, "Methods side by side").

    for m in sparta self_rewarding meta_rewarding spin sppo; do
      python -m sparta_jax.main --config=configs/compare_methods.py:$m --workdir=methods_$m
    done
    python -m sparta_jax.compare methods_* --markdown methods.md --html methods.html

The tribe: four SmolLM2-135M LoRA experts SFT'd on bundled tasks (built once and cached by the
first run; two of them with arithmetic judge examples, which left them at chance as judges),
with the members' own `logits` judges, on bundled arithmetic (the tribe configs/competent_judges.py
had before it moved to the `case` task). Each baseline trains the initial tribe's best member by
dev accuracy; every run shares the iteration-0 evaluation, so "best initial" is one row and the
tests are paired.

Budget: 64 generated answers per iteration for every method (Sparta: 32 duels x 2; Self-Rewarding
16 instructions x 4; Meta-Rewarding 9 x 7; SPIN 64 x 1; SPPO 13 x 5), 2 iterations. Judgments
are not budgeted: Sparta's judges are the other members, the baselines judge themselves (and
Meta-Rewarding writes 3 judgments per answer, capped here at 64 tokens, plus its meta-judge).
"""
from sparta_jax.config_files import sibling_config
from sparta_jax.methods import METHODS

ANSWERS_PER_ITERATION = 64


def get_config(method: str = "sparta"):
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")
    c = sibling_config(__file__, "demo")
    judge = dict(share=0.5, right_score=9, wrong_score=2, noise=0.0)
    c.experts.enabled = True
    c.experts.sources = (
        dict(kind="bundled", task="arithmetic", train=256, dev=0, test=0, seed=200, judge=judge),
        dict(kind="bundled", task="mixed", train=256, dev=0, test=0, seed=201, judge=judge),
        dict(kind="bundled", task="arithmetic", train=256, dev=0, test=0, seed=202),
        dict(kind="bundled", task="word_problems", train=256, dev=0, test=0, seed=203),
    )
    c.experts.names = ("arith_judge", "mixed_judge", "arith", "word_problems")
    c.experts.examples = 128
    c.experts.max_length, c.experts.max_prompt_length = 200, 190  # judge prompts are about 150 tokens
    c.method = method
    per_instruction = 2 if method == "sparta" else c.methods[method].get("samples", 1)
    c.instructions_per_iteration = round(ANSWERS_PER_ITERATION / per_instruction)
    # SPPO's paper beta (1e-3, i.e. eta = 1000) goes with its lr of 5e-7; at this config's DPO lr of
    # 1e-3 it would regress log-ratios onto targets of +-200 nats. It takes the other methods' beta.
    c.methods.sppo.beta = c.dpo.beta
    c.judge.max_new_tokens = 64  # Meta-Rewarding's sampled judgments; the logits judges write nothing
    c.evaluation.dev, c.evaluation.test = 60, 400
    return c
