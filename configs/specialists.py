"""A CPU tribe of specialists: where Sparta's pairs can teach the best member what it lacks.

    python -m sparta_jax.experts --config=configs/specialists.py        # builds and caches the experts
    python -m sparta_jax.audit --config=configs/specialists.py --items=100 --out=spec_sparta/audit.json
    python -m sparta_jax.main --config=configs/specialists.py --workdir=spec_sparta
    python -m sparta_jax.main --config=configs/specialists.py:spin --workdir=spec_spin   # a baseline
    launch/specialists.sh OUTDIR                                        # every arm, then the tables

The paper's experts come from different data: the best initial model wins on average, but the
others are better than it somewhere, and there Sparta's pairs can teach it. Here the task is
the bundled `rewrite` (half `case`: a Title Case phrase in capital or lowercase letters; half
`reverse`: its two words in reverse order), and the four SmolLM2-135M LoRA experts come in two
pairs: case_1 and case_2 learn `case`, reverse_1 and reverse_2 learn `reverse`. Each also learns
to judge its own part (the tribe's judge prompt over a right answer or the part's natural
mistake, target {"score": 9} or {"score": 2}; a stand-in for the judging skill of large
instruct models, not part of Sparta). Two experts per part, so that in a duel between experts
of different parts one judge of the duel knows the part of the instruction. The rules are ones
a 135M judge can check (checking a letter case or a word order is easier than producing it:
configs/competent_judges.py, where checking arithmetic was not learnt).

Training, from what the competent-judges runs measured: DPO lr 2e-3 for 2 epochs with the NLL
term on the chosen answers (dpo.sft_weight), and the last two iterations' pairs replayed (one
iteration of replay forgot iteration 1's skill by iteration 3). From the runs on this tribe
(docs/results.md, "The specialists tribe"): pairs under a 0.25-point judge margin left out (the
judges that leave the other part alone halve every margin, so 0.25 here is what 0.5 was among
competent judges), and the member best by dev trains at half the rate (measured at three seeds).
Against this recipe at seed 0 ("The recipe's other choices"): 96 duels an iteration raised the
mean member, not the best one, for twice the work (not adopted); without replay the best member
was level; without the NLL term it fell below the best initial member.
Every member is scored on test, so the mean member is reported beside the best one.
"""
from sparta_jax.config_files import sibling_config
from sparta_jax.methods import METHODS

ANSWERS_PER_ITERATION = 96  # Sparta's 48 duels x 2: every method generates as many answers an iteration


def get_config(method: str = "sparta"):
    if method not in METHODS:
        raise ValueError(f"method {method!r}: one of {', '.join(METHODS)}")
    c = sibling_config(__file__, "demo")
    c.method = method
    c.data.task = "rewrite"
    c.data.train, c.data.dev, c.data.test = 400, 80, 400
    c.iterations = 3
    per_instruction = 2 if method == "sparta" else c.methods[method].get("samples", 1)
    c.instructions_per_iteration = round(ANSWERS_PER_ITERATION / per_instruction)
    c.methods.sppo.beta = 0.1  # DPO's beta: at SPPO's 1e-3 its targets are 500x the log-ratios DPO moves here
    c.judge.max_new_tokens = 64  # Self- and Meta-Rewarding's sampled judgments; logits judges write nothing
    c.evaluation.dev, c.evaluation.test = 40, 400  # the first items of the data's splits
    c.evaluation.test_all_members = True
    c.evaluation.max_new_tokens = 16  # answers are "The answer is Apple Green." (about 10 tokens)
    c.generation.max_new_tokens = 24
    # 9 judge examples per answer example. Wrong answers: every wrong rewrite of the phrase (the
    # other part's experts' mistakes, not only the part's own near miss); a quarter of the judge
    # examples are over the other part's instructions, scored 5 whatever the answer, so that a judge
    # leaves the part it does not know to the judges that do (docs/results.md, the specialists tribe:
    # without them the reverse judges scored reversed words high on case instructions too).
    judge = dict(share=0.9, right_score=9, wrong_score=2, noise=0.0, wrong_answers="wrong_forms",
                 abstain_share=0.25, abstain_score=5)
    c.experts.enabled = True
    c.experts.sources = (
        dict(kind="bundled", task="case", train=256, dev=0, test=0, seed=300, judge=judge),
        dict(kind="bundled", task="case", train=256, dev=0, test=0, seed=301, judge=judge),
        dict(kind="bundled", task="reverse", train=256, dev=0, test=0, seed=302, judge=judge),
        dict(kind="bundled", task="reverse", train=256, dev=0, test=0, seed=303, judge=judge),
    )
    c.experts.names = ("case_1", "case_2", "reverse_1", "reverse_2")
    c.experts.examples = 64
    c.experts.learning_rate = 3e-3  # judging is learnt in steps at a high rate (configs/competent_judges.py)
    c.experts.lr_schedule, c.experts.warmup_ratio = "constant", 0.05
    c.experts.max_length, c.experts.max_prompt_length = 128, 120  # judge prompts are about 110 tokens
    c.dpo.learning_rate, c.dpo.epochs = 2e-3, 2
    c.dpo.sft_weight = 1.0  # NLL on the chosen answers (RPO)
    c.dpo.min_margin = 0.25  # judge-score points: near-ties (mostly two wrong answers) are not trained
    # The best member by dev learns at half the rate while the pairs teach the rest; a one-model
    # baseline trains only that member, so it keeps the full rate.
    c.dpo.best_member_lr_scale = 0.5 if method == "sparta" else 1.0
    c.dpo.replay_iterations = 2
    c.dpo.max_length, c.dpo.max_prompt_length = 64, 48  # prompts about 40 tokens, answers about 12
    return c
