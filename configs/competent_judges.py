"""A CPU tribe whose judges carry signal, and the paper's mechanism measured on it
(docs/results.md, "Measured demonstration: competent judges").

    python -m sparta_jax.experts --config=configs/competent_judges.py          # builds and caches the experts
    python -m sparta_jax.audit --config=configs/competent_judges.py --split=test --items=100 --out=cj_sparta/audit.json
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj_sparta
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj_uniform --config.reputation.scheme=uniform
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj_verifier --config.judge.mode=verifier
    python -m sparta_jax.compare cj_sparta cj_uniform cj_verifier

At 7B the judging skill comes with the instruct models; SmolLM2-135M has none. Here it is taught:
two of the four LoRA experts (case_a, case_b) learn the bundled `case` task (rewrite a Title Case
phrase in capital or lowercase letters) and, mixed into their SFT data, to judge it: the tribe's
own judge prompt (docs/algorithm.md §2.3) over a right or a near-miss answer (the same words in
another case) to a training instruction, target {"score": 9} or {"score": 2}. This stands in for
the judging skill of large instruct models; it is not part of Sparta. The other two experts learn
arithmetic and word problems only: on `case` they answer and judge as the base model does. So the
members who win duels are also the ones who can judge, the premise of reputation weighting.

Why `case` and not arithmetic: checking a sum was as hard for these judges as doing it (no signal
after 640 judge examples); checking a letter case is not, while answering it is still hard for the
base model.

Experts: judging is learnt in optimizer steps at a high rate, so lr 3e-3 held constant after a 5%
warmup, 80 answer examples and 9 judge examples to each (share 0.9), steps of 8 rows a member.
Lower rates, fewer steps or a decaying schedule left the taught judges weak (docs/results.md,
"Teaching 135M judges to judge", has each build and its audit).

DPO: lr 2e-3, 2 epochs, with an NLL term on the chosen answers (`dpo.sft_weight=1`, RPO), only
the pairs whose weighted judge scores differ by at least half a point (`dpo.min_margin`), and
the previous iteration's pairs trained again (`dpo.replay_iterations=1`). Why each:
- plain DPO pushed the chosen answers down with the rejected ones and undid part of the experts'
  SFT; the NLL term holds them up, and the higher rate lets the members who cannot answer `case`
  learn it;
- pairs under the margin are near-ties, more often duels of two wrong answers;
- without replay an iteration unlearns what the previous one taught once its duels become ties
  (both answers right). One iteration of replay is not enough past iteration 2
  (`--config.dpo.replay_iterations=2` held iteration 3 in the verifier arm).
Every member is scored on test (mean-member accuracy).
Sized for the 2-core CPU: 2 iterations x 48 duels, 40 dev and 200 test items per evaluation.
"""
from sparta_jax.config_files import sibling_config


def get_config():
    c = sibling_config(__file__, "demo")
    c.data.task = "case"
    c.data.train, c.data.dev, c.data.test = 300, 60, 300
    c.instructions_per_iteration = 48
    c.evaluation.dev, c.evaluation.test = 40, 200  # the first items of the data's splits
    c.evaluation.test_all_members = True
    c.evaluation.max_new_tokens = 16  # answers are "The answer is GREEN APPLE." (about 10 tokens)
    c.generation.max_new_tokens = 24
    judge = dict(share=0.9, right_score=9, wrong_score=2, noise=0.0)  # 9 judge examples per answer example
    c.experts.enabled = True
    c.experts.sources = (
        dict(kind="bundled", task="case", train=256, dev=0, test=0, seed=200, judge=judge),
        dict(kind="bundled", task="case", train=256, dev=0, test=0, seed=201, judge=judge),
        dict(kind="bundled", task="arithmetic", train=256, dev=0, test=0, seed=202),
        dict(kind="bundled", task="word_problems", train=256, dev=0, test=0, seed=203),
    )
    c.experts.names = ("case_a", "case_b", "arith", "word_problems")
    c.experts.examples = 80
    c.experts.learning_rate = 3e-3  # judging is learnt in steps at a high rate (docstring), so no decay
    c.experts.lr_schedule, c.experts.warmup_ratio = "constant", 0.05
    c.experts.max_length, c.experts.max_prompt_length = 128, 120  # judge prompts are about 110 tokens
    c.dpo.learning_rate, c.dpo.epochs = 2e-3, 2
    c.dpo.sft_weight = 1.0  # NLL on the chosen answers (RPO): see the docstring
    c.dpo.min_margin = 0.5  # judge-score points: near-ties (mostly two wrong answers) are not trained
    c.dpo.replay_iterations = 1  # the last iteration's pairs again: see the docstring
    c.dpo.max_length, c.dpo.max_prompt_length = 64, 48  # prompts about 40 tokens, answers about 12
    return c
