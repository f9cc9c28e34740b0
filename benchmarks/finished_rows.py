"""How much of a static batch's decoding goes to answers that already ended.

    python benchmarks/finished_rows.py [--config=configs/paper.py:gsm8k,cpu] [--rows=64] [--append FILE]
        [--lengths_out=lengths.json]   # the answer lengths, for `python -m sparta_jax.aot --iteration --answer_lengths`

A static batch decodes until its longest row ends (the sampler's loop stops once every row has),
so every step spends a row on each answer that ended before it. Per batch that share of the
row-steps is 1 - sum(lengths) / (rows x steps), steps being the batch's longest answer.

Measured here on real prompts and the config's own tribe and settings: the released GSM8K and
MATH prompts in tests/data/paper_formats (12 prompts, repeated to fill `--rows` answers, each
member answering in turn), chat-templated as the duel phase does, sampled with the config's
`generation` settings to its answer budget, in its batches (`generation.batch_size`, sorted by
prompt length). With every answer at the budget (the roofline's assumption, `aot --iteration`
without `--answer_lengths`) the share is 0: this measures how far real answers are from it.
"""
from __future__ import annotations

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import heading, machine, publish  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FORMATS = os.path.join(REPO, "tests", "data", "paper_formats")
DEFAULT_CONFIG = os.path.join(REPO, "configs", "paper.py") + ":gsm8k,cpu"


def released_prompts() -> list[tuple[str, str]]:
    """(source, instruction) of the released GSM8K and MATH prompts in tests/data/paper_formats, in
    the released wording (GSM8K: instruction + question; MATH: problem + the step-by-step cue)."""
    def lines(*path):
        with open(os.path.join(FORMATS, *path)) as f:
            return [json.loads(line) for line in f if line.strip()]

    with open(os.path.join(FORMATS, "gsm8k", "questions.json")) as f:
        out = [("gsm8k train", f"{r['instruction']}\n{r['input']}") for r in json.load(f)]
    out += [("gsm8k test", r["question"]) for r in lines("gsm8k", "test.json")]
    for level in ("easy", "medium"):
        out += [(f"MATH {level}", r["problem"] + " Let's solve this problem step by step.")
                for r in lines("MATH", "train_by_difficulty", f"{level}.jsonl")]
    return out


def batch_shares(lengths: list[int], batch_size: int) -> list[tuple[int, int, float]]:
    """(rows, steps, finished share) per batch of consecutive answers."""
    out = []
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start: start + batch_size]
        steps = max(batch)
        out.append((len(batch), steps, 1.0 - sum(batch) / (len(batch) * steps) if steps else 0.0))
    return out


def main(argv):
    import jax
    import numpy as np

    from sparta_jax import sharding
    from sparta_jax.inference import chat_ids
    from sparta_jax.logs import quiet_third_party
    from sparta_jax.tribe import build_tribe

    quiet_third_party()
    config = _CONFIG.value
    gen = config.generation
    tribe = build_tribe(config.tribe, config.sampler, sharding.make_mesh(dict(config.mesh)))
    prompts = released_prompts()
    members = len(tribe.names)
    jobs = [(r % members, chat_ids(tribe, prompts[r % len(prompts)][1], r % members)) for r in range(_ROWS.value)]
    order = sorted(range(len(jobs)), key=lambda i: len(jobs[i][1]))  # as inference._generate_group batches
    lengths, stopped, started = [0] * len(jobs), [False] * len(jobs), time.perf_counter()
    for b, start in enumerate(range(0, len(order), gen.batch_size)):
        rows = order[start: start + gen.batch_size]
        out = tribe.sampler.generate(tribe.model, [jobs[i][1][: gen.max_prompt_tokens] for i in rows],
                                     rng=jax.random.fold_in(jax.random.key(config.seed), b),
                                     adapter_ids=[jobs[i][0] for i in rows], temperature=gen.temperature,
                                     top_k=gen.top_k, top_p=gen.top_p, max_new_tokens=gen.max_new_tokens,
                                     decode=False)
        for i, n, reason in zip(rows, out.lengths, out.finish_reasons):
            lengths[i], stopped[i] = int(n), reason == "stop"
        print(f"batch {b}: {len(rows)} answers, longest {max(out.lengths)} tokens", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - started
    in_order = [lengths[i] for i in order]
    per_batch = batch_shares(in_order, gen.batch_size)
    wasted = sum(rows * steps * share for rows, steps, share in per_batch)
    total = sum(rows * steps for rows, steps, _ in per_batch)
    q = np.percentile(lengths, [50, 90])
    command = "python benchmarks/finished_rows.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("--append"))
    where = f"{machine()}, jax {jax.__version__}, base {config.tribe.base}, {members} members, command `{command}`"
    lines = heading("Decode rows spent on finished answers", where) + [
        f"{len(jobs)} answers to the {len(prompts)} released GSM8K / MATH prompts, temperature {gen.temperature}, "
        f"top-p {gen.top_p}, budget {gen.max_new_tokens} tokens, batches of {gen.batch_size}; "
        f"{seconds:.0f} s of generation.", "",
        "| batch | answers | decode steps (longest answer) | row-steps on finished answers |",
        "|---:|---:|---:|---:|"]
    lines += [f"| {b} | {rows} | {steps} | {share:.0%} |" for b, (rows, steps, share) in enumerate(per_batch)]
    lines += [f"| all | {len(jobs)} | {sum(s for _, s, _ in per_batch)} | {wasted / total:.0%} |", "",
              f"Answer lengths: median {q[0]:.0f}, 90th percentile {q[1]:.0f}, longest {max(lengths)} tokens; "
              f"{sum(stopped)} of {len(jobs)} ended with the end token, {len(jobs) - sum(stopped)} at the budget."]
    publish("\n".join(lines), _APPEND.value)
    if _LENGTHS_OUT.value:
        with open(_LENGTHS_OUT.value, "w") as f:
            json.dump(lengths, f)


if __name__ == "__main__":  # flags defined here only: the tests import this module's functions
    from absl import app, flags
    from ml_collections import config_flags

    from sparta_jax.config_files import parse_flags_checked

    _CONFIG = config_flags.DEFINE_config_file("config", DEFAULT_CONFIG, "Run config: its tribe and generation settings.")
    _ROWS = flags.DEFINE_integer("rows", 64, "Answers to generate.")
    _APPEND = flags.DEFINE_string("append", "", "Also append the table to this file.")
    _LENGTHS_OUT = flags.DEFINE_string("lengths_out", "", "Also write the answer lengths (a JSON list) here.")
    app.run(main, flags_parser=lambda argv: parse_flags_checked(argv, DEFAULT_CONFIG))
