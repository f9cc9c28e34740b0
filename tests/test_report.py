"""The HTML run report (sparta_jax.report) on synthetic workdirs in the exact formats the main
loop writes. Duels come from the real match-making, reputations and preferences from the real
TribeRater, so the numbers in the files are consistent with each other. No model runs."""
import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter

import numpy as np
import pytest

from sparta_jax import report
from sparta_jax.evaluation import wilson_interval
from sparta_jax.selection import pick
from sparta_jax.sparta import DuelRecord, JudgeRecord, TribeRater, duel_to_json, make_matchups
from sparta_jax.sparta.judge_signal import judge_signal

FOUR = ["member_0", "member_1", "member_2", "member_3"]
TITLES = ["Reputation trajectories", "Win matrix", "Judge agreement", "Judge signal", "Judge audit", "Preference margins",
          "Unparseable judge scores", "Dev and test accuracy", "Reputation against dev accuracy", "DPO training",
          "Config"]
pytestmark = pytest.mark.filterwarnings("error::UserWarning")
PLOTTED = ["reputation", "win_matrix", "judge_agreement", "judge_signal", "margins", "unparseable", "evaluation",
           "reputation_accuracy", "dpo"]


# ------------------------------------------------------------------------------- fixtures
def _write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=1)


def _write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _judge(rng, strength_a, strength_b, logits):
    """One judge's record: mostly parsed scores that favour the stronger model, sometimes
    unparseable (one score or both)."""
    if logits:
        sa = float(np.clip(5 + strength_a + rng.normal(), 1, 10))
        sb = float(np.clip(5 + strength_b + rng.normal(), 1, 10))
        return JudgeRecord((sa, sb), None)
    u = rng.random()
    if u < 0.08:
        return JudgeRecord(None, ("I cannot judge this.", "no idea"))
    sa = int(np.clip(round(5 + strength_a + rng.normal()), 1, 10))
    sb = int(np.clip(round(5 + strength_b + rng.normal()), 1, 10))
    if u < 0.16:
        return JudgeRecord((sa, None), (f'{{"score": {sa}}}', "great answer"))
    return JudgeRecord((sa, sb), (f'{{"score": {sa}}}', f'Score: {sb}'))


def _evaluation(rng, names, t):
    out = {"iteration": t}
    for split, n in (("dev", 40), ("test", 60)):
        table = {}
        for k, name in enumerate(names):
            correct = int(rng.binomial(n, min(0.95, 0.3 + 0.08 * k + 0.05 * t)))
            lo, hi = wilson_interval(correct, n)
            table[name] = {"accuracy": correct / n, "n": n, "n_correct": correct,
                           "n_unparsed": int(rng.integers(0, 3)), "ci95": [lo, hi]}
        out[split] = table
    best = max(names, key=lambda name: out["dev"][name]["accuracy"])
    out["best_member"] = best
    out["best_test"] = dict(out["test"][best])
    return out


def make_workdir(root, names=FOUR, iterations=2, duels=16, seed=0, logits=False, evaluation=True, signal=True):
    """A run's workdir in the main loop's formats (train.py), built without a model."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    strength = {n: 0.6 * k - 0.8 for k, n in enumerate(names)}
    config = {"iterations": iterations, "instructions_per_iteration": duels, "mode": "faithful", "seed": seed,
              "judge": {"mode": "logits" if logits else "sampled", "max_new_tokens": 256},
              "reputation": {"scheme": "static"}, "matchmaking": {"alpha": 0.6, "k": 5},
              "tribe": {"base": "embedded", "members": len(names), "names": []}}
    _write_json(os.path.join(root, "config.json"), config)
    rater = TribeRater(names, scheme="static", mode="faithful")
    if evaluation:
        os.makedirs(os.path.join(root, "iteration_000"))
        _write_json(os.path.join(root, "iteration_000", "evaluation.json"), _evaluation(rng, names, 0))
    metrics = []
    for t in range(1, iterations + 1):
        folder = os.path.join(root, f"iteration_{t:03d}")
        os.makedirs(folder)
        frozen = rater.state.reputations()
        matchups = make_matchups(names, duels, [frozen[n] for n in names], alpha=0.6, k=5, seed=[seed, t])
        answers, records = [], []
        for m in matchups:
            a, b = m.models
            instruction = f"What is {m.index} + {t}? Give the final answer as a number."
            responses = (f"{a} says {m.index + t}", f"{b} says {m.index + t + 1}")
            answers.append({"index": m.index, "instruction": instruction, "id": f"arith-{t}-{m.index}",
                            "models": [a, b], "responses": list(responses)})
            judges = {}
            for j in names:
                if j in (a, b):
                    continue
                if m.index % 7 == 3 and not logits:  # every judge sees a tie: no preference
                    judges[j] = JudgeRecord((6, 6), ('{"score": 6}', '{"score": 6}'))
                else:
                    judges[j] = _judge(rng, strength[a], strength[b], logits)
            records.append(DuelRecord(t, m.index, instruction, (a, b), responses, judges))
        result = rater.rate(records, iteration=t)
        _write_jsonl(os.path.join(folder, "answers.jsonl"), answers)
        _write_jsonl(os.path.join(folder, "duels.jsonl"), [duel_to_json(r) for r in records])
        _write_json(os.path.join(folder, "reputations.json"), {
            "iteration": t, "weights": result.weights, "c": result.c, "start": result.start.to_dict(),
            "end": result.end.to_dict(), "history": result.history})
        _write_jsonl(os.path.join(folder, "preferences.jsonl"), [p.to_json() for p in result.preferences])
        if signal:  # the first response is always right ("index + t"), the second always wrong
            refs = {a["instruction"]: {"answer": a["index"] + t, "evaluator": "numeric"} for a in answers}
            _write_json(os.path.join(folder, "judge_signal.json"), {"iteration": t, **judge_signal(
                [duel_to_json(r) for r in records], refs, [p.to_json() for p in result.preferences])})
        steps = max(1, len(result.preferences) // 4)
        history = []
        for s in range(steps):
            loss = [0.6931 - 0.01 * s * (1 + 0.1 * k) for k in range(len(names))]
            history.append({"loss": loss, "rewards/margins": [0.01 * s * (1 + 0.1 * k) for k in range(len(names))],
                            "rewards/accuracies": [0.5] * len(names)})
        per_member = {k: np.mean([h[k] for h in history], axis=0).tolist() for k in history[0]}
        judged = [j for r in records for j in r.judges.values()]
        R = [v["R"] for v in result.end.to_dict().values()]
        summary = {"iteration": t, "duels": len(records), "pairs": len(result.preferences),
                   "ties_dropped": len(records) - len(result.preferences), "judge_scores": 2 * len(judged),
                   "unparseable_scores": sum(1 for j in judged for s in (j.scores or (None, None)) if s is None),
                   "reputation_spread": max(R) - min(R), "reputation_min": min(R), "reputation_max": max(R),
                   "dpo_loss": float(np.mean(per_member["loss"])),
                   "dpo_margin": float(np.mean(per_member["rewards/margins"])),
                   "pairs_trained": len(result.preferences), "seconds": 12.5}
        _write_json(os.path.join(folder, "summary.json"), {**summary, "train": {
            "pairs_trained": len(result.preferences), "pairs_dropped_too_long": 0, "dpo_steps": steps,
            "dpo_per_member": per_member, "dpo_history": history}})
        if evaluation:
            _write_json(os.path.join(folder, "evaluation.json"), _evaluation(rng, names, t))
        metrics.append({"step": t, "kind": "iteration", "time": 1.0 + t, **summary})
    _write_jsonl(os.path.join(root, "metrics.jsonl"), metrics)
    return root


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    root = make_workdir(str(tmp_path_factory.mktemp("run") / "work"))
    path = report.write_report(root)
    with open(path) as f:
        return root, path, f.read()


# --------------------------------------------------------------------------------- checks
def _check_png(data_or_path):
    from matplotlib.image import imread

    src = io.BytesIO(data_or_path) if isinstance(data_or_path, bytes) else data_or_path
    img = imread(src, format="png")
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert float(np.var(img[..., :3])) > 0, "blank image"


def _embedded_pngs(text):
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)]


def _expected_wins(root, iterations):
    """(wins[(winner, loser)], ties[frozenset pair]) straight from the files."""
    wins, ties = Counter(), Counter()
    for t in iterations:
        folder = os.path.join(root, f"iteration_{t:03d}")
        with open(os.path.join(folder, "preferences.jsonl")) as f:
            prefs = [json.loads(line) for line in f]
        with open(os.path.join(folder, "duels.jsonl")) as f:
            duels = [json.loads(line) for line in f]
        decided = {p["index"] for p in prefs}
        for p in prefs:
            wins[(p["chosen_model"], p["rejected_model"])] += 1
        for d in duels:
            if d["index"] not in decided:
                ties[frozenset(d["models"])] += 1
    return wins, ties


def _html_wins(text):
    cells = re.findall(r'data-winner="([^"]+)" data-loser="([^"]+)" data-wins="(\d+)" data-duels="(\d+)" '
                       r'data-ties="(\d+)"', text)
    return {(a, b): (int(w), int(n), int(ti)) for a, b, w, n, ti in cells}


def _check_win_table(text, root, iterations, names=FOUR):
    wins, ties = _expected_wins(root, iterations)
    cells = _html_wins(text)
    assert set(cells) == {(a, b) for a in names for b in names if a != b}
    for (a, b), (w, n, ti) in cells.items():
        assert w == wins[(a, b)], (a, b)
        assert ti == ties[frozenset((a, b))], (a, b)
        assert n == wins[(a, b)] + wins[(b, a)] + ties[frozenset((a, b))], (a, b)
    assert sum(w for w, _, _ in cells.values()) == sum(wins.values())


def _sections(text):
    return re.findall(r'<section id="([a-z_-]+)"><h2>(.*?)</h2>', text)


# ---------------------------------------------------------------------------------- tests
def test_full_report_has_every_panel(full_run):
    root, path, text = full_run
    assert path == os.path.join(root, "report", "report.html")
    assert text.startswith("<!DOCTYPE html>") and text.rstrip().endswith("</html>")
    titles = [re.sub(r"^\d+\. ", "", h) for _, h in _sections(text)]
    assert titles == ["Headline"] + TITLES
    assert "panel-error" not in text.replace(".panel-error", "")
    assert "needs &gt;= 4 members" not in text
    assert "no evaluation in this run" not in text.lower()
    evals = {t: json.load(open(os.path.join(root, f"iteration_{t:03d}", "evaluation.json"))) for t in (0, 1, 2)}
    best = pick(evals, "best_dev")  # the headline names the best-dev member and its iteration
    assert (f"best dev over the run (evaluation.select = last)</th><td>{best.member} after iteration "
            f"{best.iteration}: test accuracy") in text
    assert "<details><summary>config.json" in text and "&quot;scheme&quot;: &quot;static&quot;" in text


def test_pngs_decode_and_are_not_blank(full_run):
    root, _, text = full_run
    files = sorted(os.listdir(os.path.join(root, "report")))
    assert files == sorted([f"{p}.png" for p in PLOTTED] + ["report.html"])
    for p in PLOTTED:
        _check_png(os.path.join(root, "report", f"{p}.png"))
    embedded = _embedded_pngs(text)
    assert len(embedded) == len(PLOTTED)
    for data in embedded:
        _check_png(data)
    # The embedded images are the saved ones.
    saved = {open(os.path.join(root, "report", f"{p}.png"), "rb").read() for p in PLOTTED}
    assert set(embedded) == saved


def test_win_matrix_matches_the_preferences(full_run):
    root, _, text = full_run
    _check_win_table(text, root, [1, 2])
    wins, ties = _expected_wins(root, [1, 2])
    assert sum(ties.values()) > 0, "the fixture should contain tied duels"
    for name in FOUR:
        m = re.search(rf'data-member="{name}" data-total-wins="(\d+)" data-total-duels="(\d+)"', text)
        won = sum(v for (a, _), v in wins.items() if a == name)
        played = won + sum(v for (_, b), v in wins.items() if b == name) + sum(
            v for pair, v in ties.items() if name in pair)
        assert (int(m.group(1)), int(m.group(2))) == (won, played)


def test_headline_ranking_best_member_and_tables(full_run):
    root, _, text = full_run
    with open(os.path.join(root, "iteration_002", "reputations.json")) as f:
        end = json.load(f)["end"]
    ranking = re.search(r"<ol class='rank' id='ranking'>(.*?)</ol>", text).group(1)
    shown = re.findall(r"<li>(\w+) ", ranking)
    assert shown == sorted(end, key=lambda n: -end[n]["R"])
    with open(os.path.join(root, "iteration_002", "evaluation.json")) as f:
        ev = json.load(f)
    headline = re.search(r'<table class="headline" id="headline">(.*?)</table>', text).group(1)
    assert f"<b>{ev['best_member']}</b>: test accuracy {ev['best_test']['accuracy']:.3f}" in headline
    assert "2 completed of 2 planned" in headline
    duels = sum(1 for t in (1, 2) for _ in open(os.path.join(root, f"iteration_{t:03d}", "duels.jsonl")))
    assert f"<th>duels</th><td>{duels} judged</td>" in headline
    # Unparseable counts per iteration agree with summary.json.
    for t in (1, 2):
        with open(os.path.join(root, f"iteration_{t:03d}", "summary.json")) as f:
            s = json.load(f)
        assert f"<tr><td>{t}</td><td>{s['unparseable_scores']}/{s['judge_scores']} (" in text
    assert 'id="judge-majority"' in text and 'id="evaluation-table"' in text


def test_judge_signal_table_shows_the_files(full_run):
    root, _, text = full_run
    table = re.search(r'<table class="data" id="judge-signal">(.*?)</table>', text).group(1)
    rows = re.findall(r"<tr><td>(\d+)</td>(.*?)</tr>", table)
    assert [int(t) for t, _ in rows] == [1, 2]
    for t, cells in rows:
        with open(os.path.join(root, f"iteration_{int(t):03d}", "judge_signal.json")) as f:
            s = json.load(f)
        values = re.findall(r"<td>(.*?)</td>", cells)
        assert values[:4] == [str(s[k]) for k in ("duels_scored", "duels_one_right", "duels_both_right",
                                                    "duels_both_wrong")]
        assert s["duels_one_right"] == s["duels_scored"] > 0  # the fixture's second answer is always wrong
        assert values[4].startswith(f"{s['matched']['accuracy']:.3f} [")
        assert values[6] == f"{s['pooled_auc']:.3f}"
    signals = [json.load(open(os.path.join(root, f"iteration_00{t}", "judge_signal.json")))["matched"] for t in (1, 2)]
    wins, n = sum(m["accuracy"] * m["n"] for m in signals), sum(m["n"] for m in signals)
    assert f"right answer scored higher in {wins / n:.3f} [" in text and f"of {n} verdicts" in text


def test_judge_agreement_counts():
    """Hand-made duels: pairwise agreement and majority agreement by sign(s_a - s_b)."""
    def duel(index, models, judges):
        return {"iteration": 1, "index": index, "instruction": "q", "models": list(models), "responses": ["x", "y"],
                "judges": {j: {"scores": s, "raw": None} for j, s in judges.items()}}

    it = report.IterationData(1, "")
    it.duels = [
        duel(0, ("a", "b"), {"c": [7, 3], "d": [6, 2]}),  # agree (a better)
        duel(1, ("a", "b"), {"c": [7, 3], "d": [2, 6]}),  # disagree
        duel(2, ("c", "d"), {"a": [5, 5], "b": [5, 5]}),  # both tie: agree
        duel(3, ("c", "d"), {"a": [5, None], "b": [8, 1]}),  # a unparseable: no comparison
    ]
    it.reputations = {"end": {n: {"R": r, "sigma": 0.1} for n, r in zip("abcd", (100, 100, 101, 99))}}
    it.preferences = [{"index": 0, "chosen_model": "a", "rejected_model": "b"},
                      {"index": 1, "chosen_model": "a", "rejected_model": "b"}]
    run = report.RunData("", None, [], [it], list("abcd"), [])
    ag = report.judge_agreement(run)
    assert ag["pair"] == {("c", "d"): [1, 2], ("a", "b"): [1, 1]}
    # Duel 1: weighted vote 101 (c, +1) vs 99 (d, -1) -> majority +1: c agrees, d does not.
    assert ag["majority"]["c"] == [2, 2] and ag["majority"]["d"] == [1, 2]
    assert ag["preference"]["c"] == [2, 2] and ag["preference"]["d"] == [1, 2]
    assert ag["max_judges"] == 2


def test_partial_run_still_renders(tmp_path):
    """Second iteration answered but not judged, no evaluation for it; an empty third folder."""
    root = make_workdir(str(tmp_path / "work"), duels=12, seed=3)
    second = os.path.join(root, "iteration_002")
    for name in ("duels.jsonl", "reputations.json", "preferences.jsonl", "summary.json", "evaluation.json"):
        os.remove(os.path.join(second, name))
    os.makedirs(os.path.join(root, "iteration_003"))
    with open(os.path.join(root, "metrics.jsonl"), "a") as f:
        f.write('{"step": 3, "kind": "itera')  # a torn last line
    text = open(report.write_report(root)).read()
    assert [re.sub(r"^\d+\. ", "", h) for _, h in _sections(text)] == ["Headline"] + TITLES
    assert "panel-error" not in text.replace(".panel-error", "")
    assert "iteration 2: answered but not judged yet; left out." in text
    assert "iteration 2: no reputations.json (not rated yet); skipped." in text
    assert "metrics.jsonl: skipped 1 malformed line(s)" in text
    assert "(+12 answered, not judged yet)" in text
    _check_win_table(text, root, [1])
    for data in _embedded_pngs(text):
        _check_png(data)


def test_three_members_logits_no_evaluation(tmp_path):
    """The tiny config's shape: 3 members (one judge per duel), float scores, raw null."""
    root = make_workdir(str(tmp_path / "work"), names=FOUR[:3], duels=6, logits=True, evaluation=False)
    path = report.write_report(root)
    text = open(path).read()
    assert "Judge agreement needs &gt;= 4 members" in text
    assert "no evaluation in this run" in text.lower()
    assert "panel-error" not in text.replace(".panel-error", "")
    _check_win_table(text, root, [1, 2], names=FOUR[:3])
    files = set(os.listdir(os.path.dirname(path)))
    assert "judge_agreement.png" not in files and "evaluation.png" not in files
    for p in ("reputation", "win_matrix", "margins", "unparseable", "dpo"):
        _check_png(os.path.join(root, "report", f"{p}.png"))


def test_empty_and_broken_workdirs(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    text = open(report.write_report(str(empty))).read()
    assert "No config.json in this workdir." in text and "No iteration folder yet." in text
    assert _embedded_pngs(text) == []

    broken = tmp_path / "broken"
    make_workdir(str(broken), duels=8, seed=5)
    (broken / "config.json").write_text("{not json")
    (broken / "iteration_001" / "reputations.json").write_text("[1, 2]")
    with open(broken / "iteration_002" / "duels.jsonl", "a") as f:
        f.write("garbage\n[]\n")
    text = open(report.write_report(str(broken))).read()
    assert "panel-error" not in text.replace(".panel-error", "")
    assert "config.json: unreadable" in text
    assert "iteration_001/reputations.json: not a JSON object" in text
    assert "iteration_002/duels.jsonl: skipped 2 malformed line(s)" in text


def test_rewrite_drops_stale_pngs(tmp_path):
    root = make_workdir(str(tmp_path / "work"), duels=8, seed=1)
    report.write_report(root)
    assert os.path.exists(os.path.join(root, "report", "evaluation.png"))
    for t in range(3):
        shutil.rmtree(os.path.join(root, f"iteration_{t:03d}"))
    report.write_report(root)
    assert sorted(os.listdir(os.path.join(root, "report"))) == ["report.html"]


@pytest.mark.e2e
def test_cli_prints_the_report_path(tmp_path):
    root = make_workdir(str(tmp_path / "work"), duels=8, seed=2)
    out = subprocess.run([sys.executable, "-m", "sparta_jax.report", "--workdir", root],
                         capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == os.path.join(root, "report", "report.html")
    assert os.path.isfile(out.stdout.strip())
    bad = subprocess.run([sys.executable, "-m", "sparta_jax.report", "--workdir", str(tmp_path / "nope")],
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 1 and "no such directory" in bad.stderr


@pytest.mark.e2e
def test_markdown_table_shows_every_member_and_evaluation(tmp_path):
    root = make_workdir(str(tmp_path / "work"), duels=8, seed=4)
    out = subprocess.run([sys.executable, "-m", "sparta_jax.report", "--workdir", root, "--markdown"],
                         capture_output=True, text=True, timeout=120, check=True)
    rows = [line for line in out.stdout.splitlines() if re.match(r"\| \d+ \|", line)]
    assert len(rows) == 3 * len(FOUR)  # iterations 0, 1, 2
    for t in (0, 1, 2):
        ev = json.load(open(os.path.join(root, f"iteration_00{t}", "evaluation.json")))
        for name in FOUR:
            d = ev["dev"][name]
            label = f"**{name}** (best on dev)" if name == ev["best_member"] else name
            want = (f"| {t} | {label} | {d['accuracy']:.3f} [{d['ci95'][0]:.3f}, {d['ci95'][1]:.3f}] "
                    f"({d['n_correct']}/{d['n']}) |")
            assert any(r.startswith(want) for r in rows), want


def test_judge_signal_panel_lists_tasks():
    it = report.IterationData(1, "")
    it.judge_signal = judge_signal(
        [{"iteration": 1, "index": i, "instruction": q, "models": ["a", "b"], "responses": r,
          "judges": {"c": {"scores": sc, "raw": None}}}
         for i, (q, r, sc) in enumerate([("q1", ["5", "6"], [8, 3]), ("q3", ["A", "B"], [1, 9])])],
        {"q1": {"answer": 5, "evaluator": "numeric", "task": "arithmetic"},
         "q3": {"answer": "B", "evaluator": "choice", "task": "multiple_choice"}})
    run = report.RunData("", None, [], [it], ["a", "b", "c"], [])
    panel = report.panel_judge_signal(run, report._colors(run.names))
    table = next(h for h in panel.html if 'id="judge-signal-by-task"' in h)
    assert "<tr><td>1</td><td>arithmetic</td><td>1</td><td>1</td><td>1.000 [" in table
    assert "<tr><td>1</td><td>multiple_choice</td><td>1</td><td>1</td><td>1.000 [" in table
    assert panel.image is not None


def test_reputation_against_accuracy_panel_by_hand(full_run):
    """Figure 5: each member's mean end reputation and mean dev accuracy over the trained
    iterations, from the files, and Pearson r of those points (numpy's corrcoef)."""
    root, _, text = full_run
    run = report.load_run(root)
    points = report.reputation_and_accuracy(run)
    for name in FOUR:
        reps = [json.load(open(os.path.join(root, f"iteration_00{t}", "reputations.json")))["end"][name]["R"]
                for t in (1, 2)]
        accs = [json.load(open(os.path.join(root, f"iteration_00{t}", "evaluation.json")))["dev"][name]["accuracy"]
                for t in (1, 2)]
        np.testing.assert_allclose(points[name], (np.mean(reps), np.mean(accs)), rtol=1e-12)
    xs, ys = zip(*points.values())
    want = np.corrcoef(xs, ys)[0, 1]
    assert f"Pearson r = {want:.3f} over 4 members" in text
    from sparta_jax.stats import pearson_r

    assert abs(pearson_r(xs, ys) - want) < 1e-12
    assert np.isnan(pearson_r([1.0, 2.0], [3.0, 4.0])) and np.isnan(pearson_r([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]))
