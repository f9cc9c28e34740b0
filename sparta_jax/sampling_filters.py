"""Per-row logit filters for sampling: temperature, top-k, top-p (pure functions, jit-able).

Semantics follow transformers' logits processors applied in generate's order (temperature,
then top-k, then top-p); removed tokens get -inf. Every parameter is a traced per-row array,
so changing it never recompiles:
- temperature [batch]: 0 means greedy for that row (handled by `sample_tokens`).
- top_k [batch]: 0 disables; values above the candidate count keep all candidates.
- top_p [batch]: 1.0 disables; the smallest set whose probability reaches top_p is kept
  (at least one token).

`candidates` (static) bounds the work: filtering runs on the `candidates` best logits
found by `lax.top_k` instead of a sort of the whole vocabulary. It must be at least every
row's top_k; `None` sorts the full vocabulary (exact for any top_k, including 0). A decode
step can find them where its logits lie (`LlamaForCausalLM.extend_candidates`: on a mesh, each
chip's best of its slice of the vocabulary, merged) and `sample_candidates` draws from them.
"""
from __future__ import annotations

import jax
import jax.numpy as jnp


def top_candidates(logits, candidates: int | None = None):
    """(values, token_ids) [batch, n] of the `candidates` best float32 logits, best first (ties:
    the lower token id first); None: the whole vocabulary, sorted."""
    vocab = logits.shape[-1]
    n = vocab if candidates is None else min(candidates, vocab)
    values, ids = jax.lax.top_k(logits.astype(jnp.float32), n)  # descending
    return values, ids


def filter_candidates(values, temperature, top_k, top_p):
    """Candidate logits [batch, n] (best first) scaled by temperature and filtered by top-k and
    top-p: -inf where removed."""
    n = values.shape[-1]
    safe_t = jnp.where(temperature > 0, temperature, 1.0)
    values = values / safe_t[:, None]

    # top-k: keep ranks < k, and every candidate tied with the k-th (as `scores < kth` does).
    k = jnp.where((top_k <= 0) | (top_k > n), n, top_k)
    kth = jnp.take_along_axis(values, (k - 1)[:, None], axis=-1)
    values = jnp.where(values < kth, -jnp.inf, values)

    # top-p on what top-k left: drop the tail whose cumulative (ascending) mass is <= 1 - p.
    probs = jax.nn.softmax(values, axis=-1)
    ascending_cum = jnp.cumsum(probs[:, ::-1], axis=-1)[:, ::-1]  # mass of this token and all worse
    remove = ascending_cum <= (1.0 - top_p)[:, None]
    remove = remove.at[:, 0].set(False)  # min_tokens_to_keep = 1
    return jnp.where(remove, -jnp.inf, values)


def filtered_candidates(logits, temperature, top_k, top_p, candidates: int | None = None):
    """(values, token_ids) [batch, n]: filtered scaled logits (-inf where removed), best first."""
    values, ids = top_candidates(logits, candidates)
    return filter_candidates(values, temperature, top_k, top_p), ids


def filtered_logits(logits, temperature, top_k, top_p, candidates: int | None = None):
    """Full-vocabulary filtered logits [batch, vocab] (for tests and inspection)."""
    values, ids = filtered_candidates(logits, temperature, top_k, top_p, candidates)
    out = jnp.full(logits.shape, -jnp.inf, jnp.float32)
    return out.at[jnp.arange(logits.shape[0])[:, None], ids].set(values)


def sample_tokens(rng, logits, temperature, top_k, top_p, candidates: int | None = None):
    """One token per row: argmax where temperature == 0, else a draw from the filtered logits.

    `rng` is one typed key for the batch, or a [batch] array of typed keys, one per row (a row's
    draw then depends on its own key only, not on where it sits in the batch)."""
    return sample_candidates(rng, *top_candidates(logits, candidates), temperature, top_k, top_p)


def sample_candidates(rng, values, ids, temperature, top_k, top_p):
    """`sample_tokens` given each row's best logits already: values and their token ids
    [batch, n], best first, as `top_candidates` returns them (the greedy token is ids[:, 0])."""
    filtered = filter_candidates(values, temperature, top_k, top_p)
    if jax.dtypes.issubdtype(rng.dtype, jax.dtypes.prng_key) and rng.ndim == 1:
        choice = jax.vmap(lambda key, v: jax.random.categorical(key, v))(rng, filtered)
    else:
        choice = jax.random.categorical(rng, filtered, axis=-1)
    sampled = jnp.take_along_axis(ids, choice[:, None], axis=-1)[:, 0]
    return jnp.where(temperature > 0, sampled, ids[:, 0]).astype(jnp.int32)
