"""Reading a run's workdir (config.json, metrics.jsonl, audit.json, tribe.json and the
iteration_NNN/ folders) into RunData and IterationData. Never raises on a missing or malformed
file: what cannot be read is None and noted in `problems`."""
from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Dict, List, Optional, Sequence, Tuple


# --------------------------------------------------------------------------------- reading
_ITERATION_DIR = re.compile(r"^iteration_(\d+)$")


@dataclasses.dataclass
class IterationData:
    """What one iteration_NNN/ folder holds; None where a file is absent or unreadable."""

    t: int
    folder: str
    answers: Optional[list] = None
    duels: Optional[list] = None
    reputations: Optional[dict] = None
    preferences: Optional[list] = None
    summary: Optional[dict] = None
    evaluation: Optional[dict] = None
    judge_signal: Optional[Any] = None
    problems: List[str] = dataclasses.field(default_factory=list)

    def duel_models(self) -> Dict[int, Tuple[str, str]]:
        """{duel index: (a, b)} from duels.jsonl, else from answers.jsonl."""
        rows = self.duels if self.duels is not None else self.answers
        out = {}
        for row in rows or []:
            models = row.get("models")
            if isinstance(row.get("index"), int) and isinstance(models, list) and len(models) == 2:
                out[row["index"]] = (str(models[0]), str(models[1]))
        return out


@dataclasses.dataclass
class RunData:
    workdir: str
    config: Optional[dict]
    metrics: list
    iterations: List[IterationData]  # sorted by t; t = 0 holds only the initial evaluation
    names: List[str]  # tribe order
    problems: List[str]
    audit: Optional[dict] = None  # audit.json (python -m sparta_jax.audit), when present
    bases: Optional[dict] = None  # member -> its base model (tribe.json), when known

    @property
    def trained(self) -> List[IterationData]:
        return [it for it in self.iterations if it.t >= 1]


def _read_json(path: str, problems: List[str], label: str) -> Optional[Any]:
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        problems.append(f"{label}: unreadable ({type(e).__name__}: {e})")
        return None


def _read_jsonl(path: str, problems: List[str], label: str) -> Optional[list]:
    if not os.path.exists(path):
        return None
    rows, bad = [], 0
    try:
        with open(path, encoding="utf-8") as f:
            for line in f:
                if not line.strip():
                    continue
                try:
                    obj = json.loads(line)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(obj, dict):
                    rows.append(obj)
                else:
                    bad += 1
    except OSError as e:
        problems.append(f"{label}: unreadable ({type(e).__name__}: {e})")
        return None
    if bad:
        problems.append(f"{label}: skipped {bad} malformed line(s)")
    return rows


def _natural_key(name: str):
    return [int(p) if p.isdigit() else p for p in re.split(r"(\d+)", name)]


def load_run(workdir: str) -> RunData:
    """Reads everything the report needs; never raises on missing or malformed files."""
    problems: List[str] = []
    config = _read_json(os.path.join(workdir, "config.json"), problems, "config.json")
    if config is not None and not isinstance(config, dict):
        problems.append("config.json: not a JSON object")
        config = None
    metrics = _read_jsonl(os.path.join(workdir, "metrics.jsonl"), problems, "metrics.jsonl") or []
    iterations = []
    try:
        entries = sorted(os.listdir(workdir))
    except OSError as e:
        entries = []
        problems.append(f"workdir unreadable: {e}")
    for entry in entries:
        m = _ITERATION_DIR.match(entry)
        folder = os.path.join(workdir, entry)
        if not m or not os.path.isdir(folder):
            continue
        it = IterationData(int(m.group(1)), folder)
        p = it.problems
        j = lambda name: os.path.join(folder, name)  # noqa: E731
        it.answers = _read_jsonl(j("answers.jsonl"), p, f"{entry}/answers.jsonl")
        it.duels = _read_jsonl(j("duels.jsonl"), p, f"{entry}/duels.jsonl")
        it.preferences = _read_jsonl(j("preferences.jsonl"), p, f"{entry}/preferences.jsonl")
        for attr, name in (("reputations", "reputations.json"), ("summary", "summary.json"),
                           ("evaluation", "evaluation.json")):
            value = _read_json(j(name), p, f"{entry}/{name}")
            if value is not None and not isinstance(value, dict):
                p.append(f"{entry}/{name}: not a JSON object")
                value = None
            setattr(it, attr, value)
        it.judge_signal = _read_json(j("judge_signal.json"), p, f"{entry}/judge_signal.json")
        iterations.append(it)
    iterations.sort(key=lambda it: it.t)
    audit = _read_json(os.path.join(workdir, "audit.json"), problems, "audit.json")
    if audit is not None and not isinstance(audit, dict):
        problems.append("audit.json: not a JSON object")
        audit = None
    return RunData(workdir, config, metrics, iterations, _tribe_names(config, iterations), problems, audit,
                   _member_bases(workdir, problems))


def _member_bases(workdir: str, problems: List[str]) -> Optional[dict]:
    """tribe.json's member -> base (a mixed tribe's groups), or its one base for every member."""
    info = _read_json(os.path.join(workdir, "tribe.json"), problems, "tribe.json")
    if not isinstance(info, dict):
        return None
    if isinstance(info.get("bases"), dict):
        return {str(k): str(v) for k, v in info["bases"].items()}
    if isinstance(info.get("names"), list) and isinstance(info.get("base"), str):
        return {str(n): info["base"] for n in info["names"]}
    return None


def _tribe_names(config: Optional[dict], iterations: Sequence[IterationData]) -> List[str]:
    """Tribe order: reputations.json's order, else config tribe.names, else natural sort;
    every name seen anywhere is included."""
    names: List[str] = []
    for it in iterations:
        rep = it.reputations or {}
        for key in ("start", "end"):
            if isinstance(rep.get(key), dict):
                names = list(rep[key])
                break
        if names:
            break
    if not names and config:
        configured = ((config.get("tribe") or {}).get("names")) or []
        names = [str(n) for n in configured]
    seen = set()
    for it in iterations:
        for row in (it.answers or []) + (it.duels or []):
            seen.update(str(m) for m in row.get("models") or [])
            if isinstance(row.get("judges"), dict):
                seen.update(row["judges"])
        for row in it.preferences or []:
            seen.update(str(row.get(k)) for k in ("chosen_model", "rejected_model") if row.get(k) is not None)
        ev = it.evaluation or {}
        for split in ("dev", "test"):
            if isinstance(ev.get(split), dict):
                seen.update(ev[split])
    extra = sorted((n for n in seen if n not in names), key=_natural_key)
    return names + extra
