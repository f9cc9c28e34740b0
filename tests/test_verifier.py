"""judge.mode="verifier": the control that replaces the judges by the task's answer checker."""
from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys

import pytest

from sparta_jax import combat, evaluation, inference
from sparta_jax.compare import arm_summary, markdown
from sparta_jax.sparta import Matchup, TribeRater

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass
class Names:  # judge_duels in verifier mode needs only the members' names
    names: tuple


JUDGE_CFG = {"mode": "verifier"}


class Cfg(dict):
    __getattr__ = dict.__getitem__


def test_verifier_scores_and_preferences():
    tribe = Names(("a", "b", "c", "d"))
    refs = [{"instruction": "What is 2 + 3?", "answer": "5", "evaluator": "numeric"},
            {"instruction": "What is 9 - 4?", "answer": "5", "evaluator": "numeric"},
            {"instruction": "Pick A.\nA) x\nB) y", "answer": "A", "evaluator": "choice"},
            {"instruction": "What is 6 * 7?", "answer": "42", "evaluator": "numeric"}]
    responses = [("2 + 3 = 5", "It is 6."), ("The answer is 4.", "9 - 4 = 5."), ("B", "C"), ("42", "It is 42.")]
    matchups = [Matchup(0, "a", "b"), Matchup(1, "c", "d"), Matchup(2, "a", "c"), Matchup(3, "b", "d")]
    records = combat.judge_duels(tribe, 1, matchups, [r["instruction"] for r in refs], responses,
                                 judge_cfg=Cfg(JUDGE_CFG), mode="fixed", rng=None, references=refs)
    want = [(10.0, 1.0), (1.0, 10.0), (1.0, 1.0), (10.0, 10.0)]
    for record, pair, m in zip(records, want, matchups):
        assert set(record.judges) == set(tribe.names) - set(m.models)  # every non-duelist, as Sparta's judges
        assert all(j.scores == pair for j in record.judges.values())
    result = TribeRater(list(tribe.names), scheme="static", mode="fixed").rate(records, iteration=1)
    # Only the duels with exactly one right answer become pairs, the right answer chosen.
    assert [(p.instruction, p.chosen) for p in result.preferences] == [
        (refs[0]["instruction"], "2 + 3 = 5"), (refs[1]["instruction"], "9 - 4 = 5.")]
    for p, ref in zip(result.preferences, refs):
        assert evaluation.score(p.chosen, ref["answer"], ref["evaluator"]) == 1.0
        assert evaluation.score(p.rejected, ref["answer"], ref["evaluator"]) == 0.0

    with pytest.raises(ValueError, match="needs instructions with an answer"):
        combat.judge_duels(tribe, 1, matchups[:1], ["Say hi."], responses[:1], judge_cfg=Cfg(JUDGE_CFG),
                           mode="fixed", rng=None, references=[{"instruction": "Say hi."}])
    with pytest.raises(ValueError, match="open-ended"):
        inference.single_scores(tribe, [(0, [1, 2])], judge_cfg=Cfg(JUDGE_CFG), rng=None)


@pytest.mark.e2e
@pytest.mark.reference
def test_verifier_run_is_labelled_and_compare_reads_it(tmp_path, smollm2_dir):
    """A tiny verifier-control run: labelled a control, every judge score is the answer check,
    and `compare` prints its paired before/after row."""
    from tiny_models import save_tiny_chat_model

    base = save_tiny_chat_model(tmp_path / "base", smollm2_dir)  # real chat template, fast
    workdir = tmp_path / "verifier"
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env.pop("XLA_FLAGS", None)
    proc = subprocess.run([sys.executable, "-m", "sparta_jax.main", "--config=configs/tiny.py",
                           f"--workdir={workdir}", f"--config.tribe.base={base}", "--config.iterations=1",
                           "--config.judge.mode=verifier", "--config.mode=fixed"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "a CONTROL, not Sparta" in proc.stderr
    train = {r["instruction"]: r for r in _bundled_train()}
    for line in (workdir / "iteration_001" / "duels.jsonl").read_text().splitlines():
        duel = json.loads(line)
        ref = train[duel["instruction"]]
        want = [10.0 if evaluation.score(r, ref["answer"], ref["evaluator"]) == 1.0 else 1.0 for r in duel["responses"]]
        assert all(list(j["scores"]) == want for j in duel["judges"].values())

    arm = arm_summary(str(workdir))
    assert arm["label"] == "verifier control (not Sparta)" and arm["iterations"] == 1
    ev0 = json.loads((workdir / "iteration_000" / "evaluation.json").read_text())
    assert arm["before"]["n_correct"] == sum(ev0["test"][ev0["best_member"]]["scores"])
    table = markdown([arm])
    assert "| no training (iteration 0" in table and "verifier control" in table
    out = subprocess.run([sys.executable, "-m", "sparta_jax.compare", str(workdir)], cwd=REPO, env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.startswith(table + "\n")


def _bundled_train():
    from sparta_jax.config_files import load_config
    from sparta_jax.data import load_instructions

    return load_instructions(load_config(os.path.join(REPO, "configs/tiny.py")).data)["train"]
