"""Try a model from the command line: the prompt goes in as one user message.

    python -m sparta_jax.generate --model PATH [--adapter PATH] --prompt TEXT \
        [--max-new-tokens N] [--temperature T] [--top-k K] [--top-p P] [--seed S]

PATH may be `embedded` for the bundled SmolLM2-135M-Instruct or `embedded:gemma3-270m` for Gemma 3 270M. The prompt passes through the
model's own chat template (nothing added beyond what the template adds); temperature 0 is
greedy. stdout carries the answer text only; errors go to stderr with exit status 1.
"""
from __future__ import annotations

import argparse
import sys


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m sparta_jax.generate", description=__doc__.splitlines()[0])
    p.add_argument("--model", required=True, help="HF-format folder, 'embedded' (SmolLM2-135M-Instruct) or 'embedded:gemma3-270m'")
    p.add_argument("--adapter", help="optional PEFT LoRA folder to apply")
    p.add_argument("--prompt", required=True, help="the user message")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.0, help="0 is greedy")
    p.add_argument("--top-k", type=int, default=50, help="0 disables")
    p.add_argument("--top-p", type=float, default=1.0, help="1 disables")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    import jax
    import jax.numpy as jnp

    from sparta_jax.models.config import UnsupportedModelError
    from sparta_jax.models.loading import CheckpointError, from_pretrained
    from sparta_jax.sampling import PromptTooLongError, Sampler, SamplerConfig

    path = args.model
    try:
        if path.startswith("embedded"):  # "embedded" (SmolLM2) or "embedded:gemma3-270m"
            from sparta_jax.tribe import resolve_base

            path = resolve_base(path)
        model, tokenizer = from_pretrained(path, dtype=jnp.dtype(args.dtype),
                                           adapters=[args.adapter] if args.adapter else ())
        sampler = Sampler(model, tokenizer, config=SamplerConfig(candidates=max(64, args.top_k)))
        prompt = sampler.encode_chat([args.prompt])
        out = sampler.generate(model, prompt, rng=jax.random.key(args.seed), adapter_ids=0 if args.adapter else -1,
                               temperature=args.temperature, top_k=args.top_k, top_p=args.top_p,
                               max_new_tokens=args.max_new_tokens)
    except (FileNotFoundError, CheckpointError, UnsupportedModelError, PromptTooLongError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    print(out.texts[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
