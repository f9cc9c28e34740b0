"""Toward a CPU tribe whose judges carry signal: two experts taught to judge, two not.

    python -m sparta_jax.experts --config=configs/competent_judges.py          # builds and caches the experts
    python -m sparta_jax.audit --config=configs/competent_judges.py --out=cj/audit.json
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj

At 7B the judging skill comes with the instruct models; SmolLM2-135M has none (the audit of
configs/demo.py: AUC 0.51). Here two of the four LoRA experts also learn to judge during their
SFT: half of their examples are the tribe's own judge prompt over a right or a near-miss wrong
answer to a training instruction, with the target {"score": 9} or {"score": 2} (a stand-in for
the instruct models' skill, not part of Sparta; README, "Diverse experts"). The other two learn
only to answer. The run is Sparta on bundled arithmetic with the members' own `logits` judges.

Not there yet (measured 2026-12-01 on the 2-core CPU, 14 min 46 s of expert SFT, one epoch):
the audit on 100 test items gives the judge-taught experts AUC 0.51 and 0.51 (0.44 and 0.47 for
the others); arith_judge scores every answer about 7.6, right or wrong. At 135M, telling
"37 + 13 = 50" from "37 + 13 = 51" needs the arithmetic the model lacks, and 114 examples teach
only the scores' prior. What to try next: more judge examples and epochs, wrong answers that are
further off, and tasks where checking is easier than answering.

Measured 2026-12-02 (README, "Methods side by side"): the demo's DPO rate (1e-3) damages these
SFT'd experts even with perfect pairs (the verifier control: test 0.300 -> 0.150 with 8 pairs);
at 1e-4 it is neutral (0.300 -> 0.300). The four-arm table needs a lower rate than the demo's.

Measured 2026-12-02 (same machine), what the experts hold against what their judging draws out:
- `python -m sparta_jax.audit --config=configs/competent_judges.py --split=test --items=100
  --scorer=likelihood` (each member's own log-likelihood of the right and the near-miss answer):
  AUC 0.77 [0.71, 0.83] arith_judge, 0.74 [0.69, 0.79] arith, 0.66 mixed_judge, 0.63
  word_problems (matched accuracy 0.83 / 0.85 / 0.73 / 0.63). The arithmetic experts do tell
  "37 + 13 = 50" from "= 51" in their likelihood; their judge prompt does not draw it out.
- More judge examples do not close that gap with these adapters: one arithmetic expert with 640
  judge examples (share 0.8) over 2 epochs (178 steps of 8) still judges at AUC 0.53
  [0.49, 0.58] (mean score 5.97 right, 5.96 wrong); with adapters on the MLPs too (q, k, v, o,
  gate, up, down; rank 16, alpha 32) the same build judges at AUC 0.51 [0.48, 0.54] (6.20 right,
  6.19 wrong). Neither learns more than the scores' prior. Left to try: far larger judge sets
  (thousands of examples: GPU time), full-parameter SFT, or a task whose checking the judge prompt
  exposes (e.g. the answer written next to the question's own numbers).
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
