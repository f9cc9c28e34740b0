"""A CPU tribe whose judges carry signal, and the paper's mechanism measured on it (README,
"Measured demonstration: competent judges").

    python -m sparta_jax.experts --config=configs/competent_judges.py          # builds and caches the experts
    python -m sparta_jax.audit --config=configs/competent_judges.py --split=test --items=100 --out=cj_sparta/audit.json
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj_sparta
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj_uniform --config.reputation.scheme=uniform
    python -m sparta_jax.main --config=configs/competent_judges.py --workdir=cj_verifier --config.judge.mode=verifier
    python -m sparta_jax.compare cj_sparta cj_uniform cj_verifier

At 7B the judging skill comes with the instruct models; SmolLM2-135M has none. Here it is taught:
two of the four LoRA experts (case_a, case_b) learn the bundled `case` task (rewrite a Title Case
phrase in capital or lowercase letters) and, mixed into their SFT data, to judge it: the tribe's
own judge prompt (SPEC 2.3) over a right or a near-miss answer (the same words in another case)
to a training instruction, target {"score": 9} or {"score": 2}. This stands in for the judging
skill of large instruct models; it is not part of Sparta. The other two experts learn arithmetic
and word problems only: on `case` they answer and judge as the base model does. So the members
who win duels are also the ones who can judge, the premise of reputation weighting.

Why `case` and not arithmetic: the arithmetic experts' own likelihood tells "= 50" from "= 51"
(audit --scorer=likelihood, AUC 0.77), but their judge prompt did not draw it out after 640
judge examples with attention or MLP adapters (AUC 0.51-0.53, measured 2026-12-02): checking a
sum is as hard as doing it. Checking a letter case is not; answering it is still hard for the
base model (2.5% of 40 test items, greedy, mostly the phrase copied unchanged).

How judging is learnt (measured 2026-12-02 on the 2-core CPU, AMD EPYC). A first build at lr
1e-3 with 181 and 176 judge examples (share 0.6, 38 steps) left the taught two weak: audit AUC
0.53 and 0.65 on 100 test items (matched accuracy 0.51 and 0.78; mean scores right / wrong 4.14
/ 4.10 and 7.49 / 7.30), and one case expert with 384 judge examples at lr 3e-3 whose schedule
ended after 54 steps scored its own training items at AUC 0.65: underfit, not overfit. Judging
comes with steps at a high rate: one fresh adapter trained on judge examples only at lr 3e-3
(cosine over 240 steps of 8, 5% warmup) judged 48 held-out test items at AUC 0.48 before and
0.81 after 60 steps (480 examples; matched accuracy 0.83; score: log p('{"score": 9}') -
log p('{"score": 2}') after the judge prompt). Hence this config: lr 3e-3 held constant after a
5% warmup, 80 answer examples and 9 judge examples to each (share 0.9), steps of 8 rows a member.

An earlier build with a cosine decay and share 0.875 (525 / 518 judge examples, 75 steps) reached
AUC 0.67 [0.61, 0.73] and 0.60 [0.56, 0.65] only. This config's build (2026-12-02, 2-core CPU,
45 min, its first steps sharing the CPU with a test run: case_a 75 answer + 675 judge examples over 94 steps, case_b 74 + 666 over 93, the
answer-only experts 10 steps each and then left out of the batch; 5 and 6 case items skipped as
dev/test; loss case_a 1.48 -> 0.10, case_b 1.69 -> 0.08), audited on 100 test items with
logits judges (python -m sparta_jax.audit --split=test --items=100):

    judge           matched accuracy [95% CI]   AUC [95% CI]        mean score right / wrong
    case_a          0.78 [0.69, 0.85]           0.77 [0.69, 0.83]   7.41 / 6.27
    case_b          0.78 [0.69, 0.85]           0.87 [0.81, 0.93]   5.11 / 3.42
    arith           0.51 [0.41, 0.61]           0.54 [0.48, 0.60]   6.26 / 6.25
    word_problems   0.59 [0.49, 0.68]           0.53 [0.47, 0.60]   5.54 / 5.53

Two competent judges and two at chance: the tribe the four-arm run (launch/competent_judges.sh)
needs.

DPO: lr 2e-3, 2 epochs, with an NLL term on the chosen answers (`dpo.sft_weight=1`, RPO), only
the pairs whose weighted judge scores differ by at least half a point (`dpo.min_margin`), and
the previous iteration's pairs trained again (`dpo.replay_iterations=1`).
Plain DPO at lr 5e-4 for one epoch lowered every arm's accuracy, the verifier's too (mean member
0.318 -> 0.211 after two iterations, measured 2026-12-02): it pushed the chosen answers down
with the rejected ones and undid part of the experts' SFT, and the members who cannot answer
`case` learnt nothing (0.0 before and after). The NLL term alone at that rate held the case
experts up (mean member after iteration 1: 0.300, against 0.276 without it); with it at lr 2e-3
for 2 epochs the same verifier pairs took the mean member from 0.318 to 0.564 in one iteration
(arith 0.0 -> 0.48); the higher rate without the term was not measured. The margin filter drops the
near-ties, more often duels of two wrong answers (in that run's first iteration the chosen
answer was wrong in 16 of the 28 pairs under a 0.5-point margin and in 2 of the 14 above it;
the threshold was chosen from those training pairs). Without replay the second iteration undid
the first: the case experts answer lowercase requests well (0.95) and capital-letter ones badly
(0.30), so iteration 1's right answers were lowercase and taught arith and word_problems those;
by iteration 2 lowercase duels were ties (both right) and the pairs left were capital-letter
requests with a lowercase answer rejected, and DPO on them took the two members' lowercase
accuracy from 0.94 / 0.97 to 0.36 / 0.17 (verifier pairs; mean member 0.564 -> 0.380). With
iteration 1's pairs replayed it went to 0.95 / 0.92, capital letters rose, and the mean member
to 0.608.
Every member is scored on test (mean-member accuracy).
Sized for the 2-core CPU: 2 iterations x 48 duels, 40 dev and 200 test items per evaluation.
Run to 4 iterations (`--config.iterations=4`, measured 2026-12-03), the static reputations spread
100 points and weighting beat uniform votes (mean member 0.474 against 0.328), but iteration 3
fell in every arm, the verifier's too: one iteration of replay no longer holds iteration 1's
lowercase pairs (README, "Four iterations").
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
