"""Answers per second with static batches against rows refilled as answers end.

    python benchmarks/refill.py [--rows 32] [--refill 1,8] [--answers 128] [--append BENCHMARKS.md]

The embedded SmolLM2-135M-Instruct (float32) answers the released GSM8K / MATH prompts of
tests/data/paper_formats in its chat template, each answer exactly as long as one of the answer
lengths measured by benchmarks/finished_rows.py (benchmarks/data/, the embedded tribe's own
answers at the paper's 512-token budget; no stop tokens, so every method writes the same
tokens). Static: batches of `--rows` rows, each decoded until its longest answer ends (what the
sampler did before the refill). Refilled: one `generate(rows=...)` call whose rows take the next
waiting prompt when their answer ends, `--refill` of them prefilled together (one queue per
prompt-length bucket, as the sampler runs them). Each row is timed
after a compiling call, best of `--repeats`; the decode steps come from the loop itself and match
`sparta_jax.iteration_time.queue_schedule`.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from common import heading, machine, publish  # noqa: E402
from finished_rows import released_prompts  # noqa: E402

LENGTHS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "smollm2_gsm8k_math_answer_lengths.json")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=32)
    parser.add_argument("--refill", default="1,8", help="comma-separated refill_rows values to time")
    parser.add_argument("--answers", type=int, default=128, help="the first N measured lengths")
    parser.add_argument("--repeats", type=int, default=2, help="timed runs after the compiling one (best)")
    parser.add_argument("--append", help="append the table to this Markdown file")
    args = parser.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    from sparta_jax.iteration_time import queue_schedule
    from sparta_jax.models.loading import from_pretrained
    from sparta_jax.sampling import Sampler, SamplerConfig, bucket
    from sparta_jax.tribe import resolve_base

    with open(LENGTHS) as f:
        lengths = [int(n) for n in json.load(f)][: args.answers]
    model, tokenizer = from_pretrained(resolve_base("embedded"), dtype=jnp.float32)
    texts = [text for _, text in released_prompts()]
    plain = Sampler(model, tokenizer, config=SamplerConfig(cache_dtype="float32"))
    # Sorted by length, as the tribe's inference queues them (a call's prompt bucket is its longest).
    prompts = sorted(plain.encode_chat([texts[i % len(texts)] for i in range(len(lengths))]), key=len)
    kw = dict(max_new_tokens=lengths, stop_ids=[], decode=False, temperature=0.7, top_k=50, top_p=0.95)
    tokens = sum(lengths)

    def timed(run) -> tuple[float, int]:
        run(jax.random.key(0))  # compile
        best, steps = float("inf"), 0
        for r in range(args.repeats):
            start = time.perf_counter()
            steps = run(jax.random.key(r + 1))
            best = min(best, time.perf_counter() - start)
        return best, steps

    def static(key) -> int:
        steps = 0
        for b, start in enumerate(range(0, len(prompts), args.rows)):
            out = plain.generate(model, prompts[start: start + args.rows], rng=jax.random.fold_in(key, b),
                                 **{**kw, "max_new_tokens": lengths[start: start + args.rows]})
            assert list(out.lengths) == lengths[start: start + args.rows]
            steps += int(max(out.lengths))
        return steps

    results = [("static batches", *timed(static), 0)]
    for refill in [int(r) for r in args.refill.split(",")]:
        sampler = Sampler(model, tokenizer, config=SamplerConfig(cache_dtype="float32", refill_rows=refill))

        def queued(key, sampler=sampler) -> int:
            out = sampler.generate(model, prompts, rng=key, rows=args.rows, **kw)
            assert list(out.lengths) == lengths
            return int(out.decode_steps)

        seconds, steps = timed(queued)
        # One queue per prompt-length bucket (the sampler's rule): the schedules add up.
        buckets = np.array([bucket(len(p), sampler.config.prompt_buckets, "prompt length") for p in prompts])
        schedules = [queue_schedule([lengths[i] for i in np.flatnonzero(buckets == b)], args.rows, refill)
                     for b in sorted(set(buckets.tolist()))]
        predicted, refills = sum(s[0] for s in schedules), sum(s[1] for s in schedules)
        assert steps == predicted, (steps, predicted)
        results.append((f"refilled, {refill} at a time", seconds, steps, refills))

    base = results[0][1]
    q = np.percentile(lengths, [50, 90])
    command = "python benchmarks/refill.py " + " ".join(a for a in sys.argv[1:] if not a.startswith("--append"))
    prompt_tokens = sorted(len(p) for p in prompts)
    lines = heading("Static batches against refilled rows",
                    f"{machine()}, jax {jax.__version__}, command `{command}`") + [
        f"Embedded SmolLM2-135M-Instruct, float32; {len(lengths)} answers of the measured GSM8K / MATH lengths "
        f"(median {q[0]:.0f}, 90th percentile {q[1]:.0f}, longest {max(lengths)}; {tokens} tokens), prompts "
        f"{prompt_tokens[0]}-{prompt_tokens[-1]} tokens, {args.rows} rows, temperature 0.7, top-k 50, top-p 0.95.", "",
        "| method | decode steps | refills (prefills) | seconds | answers/s | tokens/s | vs static |",
        "|---|---:|---:|---:|---:|---:|---:|"]
    for name, seconds, steps, refills in results:
        lines.append(f"| {name} | {steps} | {refills} | {seconds:.1f} | {len(lengths) / seconds:.2f} | "
                     f"{tokens / seconds:.0f} | {base / seconds:.2f}x |")
    publish("\n".join(lines), args.append)


if __name__ == "__main__":
    main()
