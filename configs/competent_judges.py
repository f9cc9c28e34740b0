"""A CPU tribe whose judges carry signal: two experts taught to judge, two not.

    python -m sparta_jax.experts --config=configs/competent_judges.py          # builds and caches the experts
    python -m sparta_jax.audit --config=configs/competent_judges.py --out=cj/audit.json
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj

At 7B the judging skill comes with the instruct models; SmolLM2-135M has none (the audit of
configs/demo.py: AUC 0.51). Here two of the four LoRA experts also learn to judge during their
SFT: half of their examples are the tribe's own judge prompt over a right or a near-miss wrong
answer to a training instruction, with the target {"score": 9} or {"score": 2} (a stand-in for
the instruct models' skill, not part of Sparta; README, "Diverse experts"). The other two learn
only to answer. The run is Sparta on bundled arithmetic with the members' own `logits` judges.
"""
from sparta_jax.config_files import sibling_config


def get_config():
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
    return c
