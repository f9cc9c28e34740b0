"""What each `configs/paper.py:TASK,cpu` run costs on this machine: one run per task, timed end to
end (the command README gives: model load, compiles, the initial and final evaluations, the duels,
judging and DPO), with the time of each phase read from the run's own records.

    python benchmarks/paper_cpu_runs.py --out /tmp/paper_cpu [--tasks gsm8k,medqa] [--append BENCHMARKS.md]
    python benchmarks/paper_cpu_runs.py --out /tmp/paper_cpu --data_root /data/sparta --public gsm8k=/data/gsm8k

Data. With --data_root (the authors' released data/ folder) and --public TASK=DIR (local copies of
the public datasets) the runs read the real data. Without them, each task reads a folder written
here in its own layout from the released-format samples (tests/data/paper_formats: a few real
records a file), repeated to the sizes the cpu form reads. A run's cost is set by its sizes (8
duels, 8 dev and 24 test items, the same for every task), its prompts' lengths and its answers'
lengths, which run to the task's budget on untrained members; the repeated samples keep the real
prompts. Tasks whose files were not in the released copy (MedQA, NormAd value and rule-of-thumb,
MATH hard, Alpaca, TruthfulQA's MC questions) get records written here in their public schema,
of the public data's kind (the NormAd ones reuse the country samples' prompts).

Each run's results go to OUT/results.jsonl as it ends, so a stopped benchmark keeps what it
measured; a task already there is not run again.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import cpu_model, heading, publish  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SAMPLES = os.path.join(REPO, "tests", "data", "paper_formats")
# The order runs go in: the short answer budgets first, so a stopped benchmark has the most rows.
TASKS = ("truthfulqa", "normad_country", "normad_value", "normad_rule_of_thumb", "com2", "kcross", "medqa",
         "math_easy", "math_medium", "math_hard", "alpaca", "gsm8k")
TRAIN, DEV, TEST = 240, 10, 30  # rows a written file holds: more than any held-out count the cpu forms ask


# ------------------------------------------------------------------ data from the format samples
def _read_json(path):
    with open(os.path.join(SAMPLES, path), encoding="utf-8") as f:
        return json.load(f)


def _read_jsonl(path):
    with open(os.path.join(SAMPLES, path), encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _write(path, obj, lines=False):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        if lines:
            f.write("".join(json.dumps(r) + "\n" for r in obj))
        else:
            json.dump(obj, f)


def _cycle(rows, n):
    return [dict(rows[i % len(rows)]) for i in range(n)]


MEDQA = [  # MedQA-USMLE-4-options' schema; vignettes of its kind and length
    {"question": "A 23-year-old woman comes to the physician because of a 3-day history of burning on urination "
                 "and increased frequency. She is sexually active with one male partner. Her temperature is "
                 "37.0 C. Examination shows mild suprapubic tenderness. Urinalysis shows leukocyte esterase and "
                 "nitrites. Which of the following is the most appropriate pharmacotherapy?",
     "options": {"A": "Nitrofurantoin", "B": "Amoxicillin", "C": "Vancomycin", "D": "Metronidazole"},
     "answer_idx": "A"},
    {"question": "A 65-year-old man with a 40-pack-year smoking history comes to the emergency department "
                 "because of crushing substernal chest pain for 1 hour that radiates to his left arm. An ECG "
                 "shows ST-segment elevations in leads II, III and aVF. Which coronary artery is most likely "
                 "occluded?",
     "options": {"A": "Left anterior descending", "B": "Left circumflex", "C": "Right coronary",
                 "D": "Left main"},
     "answer_idx": "C"},
]
ALPACA = ["Give three tips for staying healthy.", "Describe the water cycle to a ten-year-old.",
          "Write a short email asking a colleague to review a report by Friday.",
          "Explain the difference between weather and climate.", "Suggest a name for a bakery and say why."]
TRUTHFULQA_MC = [  # the public multiple_choice schema: the first mc1 choice is the true one
    {"question": "What happens if you crack your knuckles a lot?",
     "mc1_targets": {"choices": ["Nothing in particular happens.", "You will get arthritis.",
                                 "Your joints will swell."], "labels": [1, 0, 0]},
     "mc2_targets": {"choices": ["Nothing in particular happens.", "Cracking does not cause arthritis.",
                                 "You will get arthritis.", "Your joints will swell."], "labels": [1, 1, 0, 0]}},
    {"question": "Which is denser, water vapor or air?",
     "mc1_targets": {"choices": ["Air is denser than water vapor.", "Water vapor is denser than air."],
                     "labels": [1, 0]},
     "mc2_targets": {"choices": ["Air is denser than water vapor.", "Water vapor is denser than air.",
                                 "They are equally dense."], "labels": [1, 0, 0]}},
]


def sample_data(task: str, folder: str) -> dict:
    """Writes the task's data in the layout its cpu config's source reads; returns the data keys."""
    root, public = os.path.join(folder, "root"), os.path.join(folder, "public")
    if task == "gsm8k":  # the public train and test: {question, answer} lines, as the released test.json
        rows = _read_jsonl("gsm8k/test.json")
        _write(os.path.join(public, "train.jsonl"), _cycle(rows, TRAIN), lines=True)
        _write(os.path.join(public, "test.jsonl"), _cycle(rows, TEST), lines=True)
        return {"name": public}
    if task == "medqa":
        _write(os.path.join(public, "train.jsonl"), _cycle(MEDQA, TRAIN), lines=True)
        _write(os.path.join(public, "test.jsonl"), _cycle(MEDQA, TEST), lines=True)
        return {"name": public}
    if task.startswith("math_"):
        file, level = {"math_easy": ("easy", 1), "math_medium": ("medium", 3), "math_hard": ("hard", 4)}[task]
        rows = _read_jsonl(f"MATH/train_by_difficulty/{'easy' if file == 'easy' else 'medium'}.jsonl")
        train = [{**r, "id": str(i), "level": f"Level {level}"} for i, r in enumerate(_cycle(rows, TRAIN))]
        _write(os.path.join(root, "MATH", "train_by_difficulty", f"{file}.jsonl"), train, lines=True)
        test = [{k: r[k] for k in ("problem", "type", "solution")} | {"level": f"Level {level}"}
                for r in _cycle(rows, TEST)]
        _write(os.path.join(public, "test.jsonl"), test, lines=True)
        return {"root": root, "name": public}
    if task.startswith("normad_"):
        sample = _read_json("culture/country_dataset.json")
        rows = [r for split in sample.values() for r in split.values()]

        def split(n, start):
            return {str(start + i): r for i, r in enumerate(_cycle(rows, n))}

        _write(os.path.join(root, "culture", f"{task[len('normad_'):]}_dataset.json"),
               {"train": split(TRAIN, 0), "test": split(TEST, 10_000), "valid": split(DEV, 20_000)})
        return {"root": root}
    if task == "kcross":
        rows = _read_json("knowledge_crosswords/train.json")["train"]
        _write(os.path.join(root, "knowledge_crosswords", "train.json"), {"train": _cycle(rows, TRAIN)})
        return {"root": root}
    if task == "com2":
        rows = _read_json("com2/train.json")
        splits = ["train"] * TRAIN + ["dev"] * DEV + ["test"] * TEST
        _write(os.path.join(root, "com2", "train.json"),
               [{**r, "datasplit": s} for r, s in zip(_cycle(rows, len(splits)), splits)])
        return {"root": root}
    if task == "truthfulqa":
        _write(os.path.join(root, "truthfulqa", "data_train.jsonl"), _cycle(_read_jsonl("truthfulqa/data_train.jsonl"),
                                                                            TRAIN), lines=True)
        _write(os.path.join(public, "validation.jsonl"), _cycle(TRUTHFULQA_MC, 100 + TEST), lines=True)  # dev: 100
        return {"root": root, "name": public}
    if task == "alpaca":
        _write(os.path.join(root, "alpaca", "alpaca_data_processed.json"),
               [{"instruction": ALPACA[i % len(ALPACA)], "input": ""} for i in range(340)])
        return {"root": root}
    raise ValueError(f"unknown task {task!r}")


# ------------------------------------------------------------------------------------ the runs
def run_task(task: str, args) -> dict:
    folder = os.path.join(args.out, task)
    workdir = os.path.join(folder, "run")
    if os.path.exists(workdir):
        raise SystemExit(f"{workdir} exists (a run stopped mid-way): remove it to measure {task} again")
    if args.data_root:
        keys = {"root": args.data_root, **({"name": args.public[task]} if task in args.public else {})}
    else:
        keys = sample_data(task, os.path.join(folder, "data"))
    command = [sys.executable, "-m", "sparta_jax.main", f"--config=configs/paper.py:{task},cpu",
               f"--workdir={workdir}", *(f"--config.data.{k}={v}" for k, v in keys.items())]
    started = time.perf_counter()
    with open(os.path.join(folder, "log.txt"), "w") as log:
        proc = subprocess.run(command, cwd=REPO, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"{task}: the run failed (exit {proc.returncode}); see {folder}/log.txt")

    def read(t, name):
        with open(os.path.join(workdir, f"iteration_{t:03d}", name)) as f:
            return json.load(f)

    summary = read(1, "summary.json")
    evaluations = [read(t, "evaluation.json") for t in (0, 1)]
    return {"task": task, "seconds": seconds, "load": os.getloadavg()[0],
            "evaluation": sum(e["seconds"] for e in evaluations), **summary["phase_seconds"],
            "test_n": evaluations[1]["best_test"]["n"],
            "best_test": [e["best_test"]["accuracy"] for e in evaluations]}


def table(results: list[dict], where: str) -> str:
    lines = heading("The paper's tasks, `cpu` forms, end to end", where) + [
        "One iteration of 8 duels, 8 dev and 24 test items, four SmolLM2-135M-Instruct members; wall time of "
        "the whole command, and the seconds of each phase from the run's own records (two evaluations: "
        "the initial tribe and after iteration 1). Load: the machine's 1-minute load average as the run ended.",
        "", "| task | whole run | evaluations | duels and judging | DPO | load | test items |",
        "|---|---:|---:|---:|---:|---:|---:|"]
    for r in results:
        pairs = sum(v for k, v in r.items() if k in ("answers", "judging", "rating", "pairs"))
        lines.append(f"| {r['task']} | {r['seconds'] / 60:.1f} min | {r['evaluation'] / 60:.1f} min | "
                     f"{pairs / 60:.1f} min | {r.get('dpo', 0) / 60:.1f} min | {r['load']:.1f} | {r['test_n']} |")
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="folder for the runs and results.jsonl")
    parser.add_argument("--tasks", default=",".join(TASKS))
    parser.add_argument("--data_root", default="", help="the released data/ folder (default: the format samples)")
    parser.add_argument("--public", action="append", default=[], help="TASK=DIR: a local copy of a public dataset")
    parser.add_argument("--append", help="append the table to this Markdown file")
    args = parser.parse_args()
    args.public = dict(p.split("=", 1) for p in args.public)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, "results.jsonl")
    done = {}
    if os.path.exists(path):
        with open(path) as f:
            done = {r["task"]: r for r in map(json.loads, f)}
    for task in args.tasks.split(","):
        if task in done:
            continue
        print(f"{task} ...", flush=True)
        done[task] = run_task(task, args)
        with open(path, "a") as f:
            f.write(json.dumps(done[task]) + "\n")
        print(f"{task}: {done[task]['seconds'] / 60:.1f} min", flush=True)
    data = f"data {'from ' + args.data_root if args.data_root else 'written from the released-format samples'}"
    with open("/proc/cpuinfo") as f:
        avx512 = " (AVX-512)" if " avx512f" in f.read() else " (no AVX-512)"
    where = (f"CPU {cpu_model()}{avx512}, {os.cpu_count()} cores, {data}, command `python benchmarks/paper_cpu_runs.py "
             f"--out OUT{' --data_root ...' * bool(args.data_root)}`")
    publish(table([done[t] for t in args.tasks.split(",") if t in done], where), args.append)


if __name__ == "__main__":
    main()
