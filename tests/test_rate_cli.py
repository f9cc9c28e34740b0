"""The duel log and the replay CLI (`python -m sparta_jax.rate`), run as a subprocess."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from sparta_jax.sparta import (
    DuelLogError,
    DuelRecord,
    JudgeRecord,
    TribeRater,
    TribeReputation,
    duel_from_json,
    make_matchups,
    read_duel_log,
    replay,
    write_duel_log,
)

ROOT = Path(__file__).resolve().parents[1]
TRIBE = ["ada", "bo", "cy", "dee", "eve"]
JUDGE_TEXTS = ['{"score": %d}', "Score: %d", "I'd say %d/10", "%d", "The answer is good."]


def run_cli(*args):
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    return subprocess.run(
        [sys.executable, "-m", "sparta_jax.rate", *map(str, args)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def make_log(seed=0, iterations=2, per_iteration=25):
    """A seeded two-iteration log: match-making from the live reputations, judge texts
    sampled from a few formats (some unparseable), parsed with the library's parser."""
    rng = np.random.default_rng(seed)
    rater = TribeRater(TRIBE, scheme="normal")
    records = []
    for t in range(1, iterations + 1):
        batch = []
        for mu in make_matchups(TRIBE, per_iteration, rater.state.reputations(), seed=rng):
            judges = {}
            for j in TRIBE:
                if j in mu.models:
                    continue
                texts = []
                for _ in range(2):
                    fmt = JUDGE_TEXTS[int(rng.integers(len(JUDGE_TEXTS)))]
                    texts.append(fmt % int(rng.integers(1, 11)) if "%d" in fmt else fmt)
                judges[j] = JudgeRecord.from_raw(*texts)
            batch.append(DuelRecord(t, mu.index, f"Question {t}.{mu.index}: é?", mu.models, (f"A{mu.index}", f"B{mu.index}"), judges))
        rater.rate(batch)
        records += batch
    return records


@pytest.fixture(scope="module")
def log_records():
    return make_log()


@pytest.fixture
def log_file(tmp_path, log_records):
    path = tmp_path / "duels.jsonl"
    write_duel_log(str(path), log_records)
    return path


def roundtrip(obj):
    return json.loads(json.dumps(obj))


def test_log_roundtrip(log_file, log_records):
    assert read_duel_log(str(log_file), TRIBE) == log_records
    first = json.loads(log_file.read_text(encoding="utf-8").splitlines()[0])
    assert set(first) == {"iteration", "index", "instruction", "models", "responses", "judges"}
    judge = next(iter(first["judges"].values()))
    assert set(judge) == {"scores", "raw"} and len(judge["raw"]) == 2
    # the log holds some unparseable scores, per score and whole, for both modes to replay
    scores = [j.scores for r in log_records for j in r.judges.values()]
    assert any((s[0] is None) != (s[1] is None) for s in scores)
    assert any(s == (None, None) for s in scores)
    assert any(None not in s for s in scores)


def test_duel_from_json_accepts_per_score_and_whole_null():
    base = {"iteration": 1, "index": 0, "instruction": "q", "models": ["a", "b"], "responses": ["x", "y"]}
    rec = duel_from_json(dict(base, judges={"c": {"scores": [7, None], "raw": ["7", "??"]}, "d": {"scores": None, "raw": None}}))
    assert rec.judges["c"].scores == (7, None) and rec.judges["d"].scores is None
    rec = duel_from_json(dict(base, judges={"c": {"scores": [6.25, 3.5]}}))  # logits mode: floats, no raw
    assert rec.judges["c"] == JudgeRecord((6.25, 3.5), None)


@pytest.mark.parametrize(
    "scheme, mode, extra",
    [("static", "faithful", ()), ("dynamic", "fixed", ()), ("normal", "fixed", ("reputations", "weights"))],
)
@pytest.mark.e2e
def test_replay_cli_reproduces_the_library(tmp_path, log_file, log_records, scheme, mode, extra):
    out = tmp_path / "out.json"
    args = ["--duels", log_file, "--tribe", ",".join(TRIBE), "--scheme", scheme, "--mode", mode, "--out", out]
    start = weights = None
    if "reputations" in extra:
        start = {n: {"R": 90.0 + 5 * i, "sigma": 0.3 + 0.2 * i} for i, n in enumerate(TRIBE)}
        (tmp_path / "in.json").write_text(json.dumps(start))
        args += ["--reputations", tmp_path / "in.json"]
    if "weights" in extra:
        weights = {"ada": 0.0, "cy": 0.5}
        (tmp_path / "w.json").write_text(json.dumps(weights))
        args += ["--weights", tmp_path / "w.json"]
    proc = run_cli(*args)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text(encoding="utf-8"))
    lib = replay(
        log_records,
        TRIBE,
        start=None if start is None else TribeReputation.from_dict(start, TRIBE),
        scheme=scheme,
        weights=weights,
        mode=mode,
    )
    assert got == roundtrip(lib.to_json())
    assert set(got) == {"reputations", "history", "preferences"}
    assert len(got["history"]) == 50
    assert got["history"][-1]["reputations"] == got["reputations"]
    assert 0 < len(got["preferences"]) <= 50
    pref = got["preferences"][0]
    assert set(pref) >= {"index", "instruction", "chosen", "rejected", "chosen_model", "rejected_model", "margin", "weighted_scores"}
    assert pref["margin"] > 0 and pref["weighted_scores"][0] > pref["weighted_scores"][1]
    assert got["reputations"]["ada"]["R"] != 100.0
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".tmp")] == []


@pytest.mark.e2e
def test_scheme_and_mode_change_the_result(tmp_path, log_file):
    results = {}
    for scheme in ("normal", "static"):
        for mode in ("faithful", "fixed"):
            out = tmp_path / f"{scheme}-{mode}.json"
            proc = run_cli("--duels", log_file, "--tribe", ",".join(TRIBE), "--scheme", scheme, "--mode", mode, "--out", out)
            assert proc.returncode == 0, proc.stderr
            results[scheme, mode] = json.loads(out.read_text())["reputations"]
    # static differs from normal only from iteration 2 on, but it does differ; so do modes
    assert results["normal", "faithful"] != results["static", "faithful"]
    assert results["normal", "faithful"] != results["normal", "fixed"]


GOOD = {
    "iteration": 1,
    "index": 0,
    "instruction": "q",
    "models": ["ada", "bo"],
    "responses": ["x", "y"],
    "judges": {"cy": {"scores": [7, 3], "raw": None}, "dee": {"scores": [6, 6], "raw": None}},
}


def line(**changes):
    obj = json.loads(json.dumps(GOOD))
    obj.update(changes)
    return json.dumps(obj)


BAD_LOGS = {
    # name: (lines of the log, line number the error must name, words the message must hold)
    "unknown model": ([line(), line(index=1), line(index=2, models=["ada", "zed"])], 3, "zed"),
    "malformed json": ([line(), '{"iteration": 1, "index": 1,', line(index=2)], 2, "JSON"),
    "judge is a duelist": (
        [line(), line(index=1), line(index=2), line(index=3, judges={"ada": {"scores": [1, 2], "raw": None}})],
        4,
        "duelist",
    ),
    "missing key": ([line(), json.dumps({k: v for k, v in GOOD.items() if k != "responses"})], 2, "responses"),
    "score out of range": ([line(), line(index=1), line(index=2, judges={"cy": {"scores": [11, 3]}})], 3, "score"),
    "duplicate index": ([line(), line(index=1), line(index=1)], 3, "repeats line 2"),
    "self duel": ([line(), line(index=1, models=["bo", "bo"])], 2, "itself"),
    "iteration gap": ([line(), line(index=1), line(iteration=3)], 3, "iteration 3"),
    "not an object": ([line(), "[1, 2]"], 2, "object"),
}


@pytest.mark.parametrize("case", sorted(BAD_LOGS))
@pytest.mark.e2e
def test_bad_log_names_the_line_and_writes_nothing(tmp_path, case):
    lines, line_no, words = BAD_LOGS[case]
    duels = tmp_path / "duels.jsonl"
    duels.write_text("\n".join(lines) + "\n")
    out = tmp_path / "out.json"
    out.write_text("previous result")
    proc = run_cli("--duels", duels, "--tribe", "ada,bo,cy,dee", "--out", out)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert f"line {line_no}:" in proc.stderr
    assert words in proc.stderr
    assert out.read_text() == "previous result"  # nothing written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["duels.jsonl", "out.json"]
    # the library reports the same line
    if case != "iteration gap":
        with pytest.raises(DuelLogError) as err:
            read_duel_log(str(duels), ["ada", "bo", "cy", "dee"])
        assert err.value.line == line_no


@pytest.mark.parametrize(
    "setup, words",
    [
        ("unknown model in reputations", "unknown model 'zed'"),
        ("partial reputations", "no entry for"),
        ("bad tribe", "repeated"),
        ("missing file", "cannot read"),
        ("static needs history", "pass --weights"),
        ("bad weights", "unknown model"),
    ],
)
@pytest.mark.e2e
def test_other_bad_inputs(tmp_path, setup, words):
    duels = tmp_path / "duels.jsonl"
    duels.write_text(line() + "\n")
    out = tmp_path / "out.json"
    args = ["--duels", duels, "--tribe", "ada,bo,cy,dee", "--out", out]
    if setup == "unknown model in reputations":
        (tmp_path / "in.json").write_text(json.dumps({"zed": {"R": 1, "sigma": 1}}))
        args += ["--reputations", tmp_path / "in.json"]
    elif setup == "partial reputations":
        (tmp_path / "in.json").write_text(json.dumps({"ada": {"R": 100, "sigma": 0.5}}))
        args += ["--reputations", tmp_path / "in.json"]
    elif setup == "bad tribe":
        args[3] = "ada,bo,ada"
    elif setup == "missing file":
        args[1] = tmp_path / "absent.jsonl"
    elif setup == "static needs history":
        duels.write_text(line(iteration=3) + "\n")
        (tmp_path / "in.json").write_text(json.dumps({n: {"R": 100, "sigma": 0.5} for n in ["ada", "bo", "cy", "dee"]}))
        args += ["--reputations", tmp_path / "in.json", "--scheme", "static"]
    elif setup == "bad weights":
        (tmp_path / "w.json").write_text(json.dumps({"zed": 0.0}))
        args += ["--weights", tmp_path / "w.json"]
    proc = run_cli(*args)
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert words in proc.stderr
    assert not out.exists()


@pytest.mark.e2e
def test_later_iteration_with_reputations_and_dynamic(tmp_path):
    # a log of iteration 2 alone: IN.json is the end of iteration 1, enough for `dynamic`
    start = {"ada": {"R": 90.0, "sigma": 0.5}, "bo": {"R": 100.0, "sigma": 0.5}, "cy": {"R": 110.0, "sigma": 0.5}, "dee": {"R": 120.0, "sigma": 0.5}}
    duels = tmp_path / "duels.jsonl"
    duels.write_text(line(iteration=2) + "\n\n")  # blank lines are skipped
    (tmp_path / "in.json").write_text(json.dumps(start))
    out = tmp_path / "out.json"
    proc = run_cli("--duels", duels, "--tribe", "ada,bo,cy,dee", "--reputations", tmp_path / "in.json", "--scheme", "dynamic", "--out", out)
    assert proc.returncode == 0, proc.stderr
    got = json.loads(out.read_text())
    # dynamic at t = 2: ada (lowest at the end of 1) has w = 0; c = 10.
    # Delta = (110 (0 * 7 - 1 * 3) + 120 (0 * 6 - 1 * 6)) / 230 = (-330 - 720) / 230 = -4.5652
    lib = replay(read_duel_log(str(duels)), ["ada", "bo", "cy", "dee"], start=TribeReputation.from_dict(start, ["ada", "bo", "cy", "dee"]), scheme="dynamic")
    assert got == roundtrip(lib.to_json())
    assert lib.iterations[0].weights["ada"] == 0.0 and lib.iterations[0].c == 10.0
    assert got["reputations"]["ada"]["R"] < 90.0  # ada lost although the judges preferred her
    assert got["history"][0]["iteration"] == 2
