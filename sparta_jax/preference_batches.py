"""Preference records -> token rows for DPO (docs/algorithm.md §2.6).

`fixed`: the DPO prompt is exactly the generation prompt and each response is followed by the
model's real EOS token; prompt and response ids are concatenated, so the model is trained on
the very sequence it produced.
`faithful` (the released code): the prompt is rendered with the chat template's own default
system prompt rather than the one used in generation, and each response is the text
"Assistant: " + response + "</s>" (a literal "</s>", not the model's EOS), tokenized as text.

Truncation follows the TRL version the released code used: the prompt keeps its last
`max_prompt_length` tokens, then prompt + response keeps its first `max_length` tokens.
Masks come from lengths, never from `ids != pad_id` (the EOS may equal the pad id).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from sparta_jax.dpo import PairBatch

MODES = ("faithful", "fixed")


def _check_mode(mode: str):
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")


def prompt_ids(tokenizer, instruction: str, *, mode: str, system_prompt: str | None) -> list[int]:
    """The DPO prompt: the generation prompt (`fixed`) or the released rendering (`faithful`)."""
    _check_mode(mode)
    messages = []
    if system_prompt and mode == "fixed":
        messages.append({"role": "system", "content": system_prompt})
    messages.append({"role": "user", "content": instruction})
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return tokenizer.encode(text, add_special_tokens=False)


def response_ids(tokenizer, response: str, *, mode: str) -> list[int]:
    _check_mode(mode)
    if mode == "faithful":
        return tokenizer.encode("Assistant: " + response + "</s>", add_special_tokens=False)
    if tokenizer.eos_token_id is None:
        raise ValueError("the tokenizer has no EOS token to end responses with")
    return tokenizer.encode(response, add_special_tokens=False) + [tokenizer.eos_token_id]


def truncate(prompt: Sequence[int], response: Sequence[int], max_prompt_length: int, max_length: int):
    prompt = list(prompt)[-max_prompt_length:] if max_prompt_length else list(prompt)
    return prompt, list(response)[: max(0, max_length - len(prompt))]


def pairs_to_batch(pairs: Sequence[tuple[Sequence[int], Sequence[int], Sequence[int]]], length: int,
                   pad_id: int = 0, targets: Sequence[tuple[float, float]] | None = None) -> PairBatch:
    """(prompt, chosen, rejected) id lists -> numpy PairBatch [pairs, 2, length], right padded.
    `targets`: each pair's (chosen, rejected) win probabilities for the `sppo` loss; default
    (1, 0), the hard labels."""
    n = len(pairs)
    ids = np.full((n, 2, length), pad_id, np.int32)
    mask = np.zeros((n, 2, length), np.bool_)
    response = np.zeros((n, 2, length), np.bool_)
    for i, (prompt, chosen, rejected) in enumerate(pairs):
        for j, completion in enumerate((chosen, rejected)):
            row = list(prompt) + list(completion)
            if len(row) > length:
                raise ValueError(f"pair {i}: {len(row)} tokens exceed the batch length {length}")
            if not completion:
                raise ValueError(f"pair {i}: empty {'chosen' if j == 0 else 'rejected'} response after truncation")
            ids[i, j, : len(row)] = row
            mask[i, j, : len(row)] = True
            response[i, j, len(prompt): len(row)] = True
    wins = np.tile(np.array([1.0, 0.0], np.float32), (n, 1)) if targets is None else np.asarray(targets, np.float32)
    if wins.shape != (n, 2):
        raise ValueError(f"targets must be one (chosen, rejected) pair per pair: shape {wins.shape} for {n} pairs")
    return PairBatch(ids, mask, response, wins.reshape(n, 2))


def preference_targets(record: dict) -> tuple[float, float]:
    """A record's (chosen, rejected) win probabilities (SPPO writes them; hard labels otherwise)."""
    return float(record.get("chosen_win_rate", 1.0)), float(record.get("rejected_win_rate", 0.0))


def encode_preferences(tokenizer, records: Sequence[dict], *, mode: str, system_prompt: str | None,
                       max_prompt_length: int = 256, max_length: int = 512):
    """Preference records ({"instruction", "chosen", "rejected", ...}) -> (id triples, dropped).

    A pair whose prompt leaves no room for a response is dropped (as TRL drops it); `dropped`
    lists the indices of such records.
    """
    out, dropped = [], []
    for i, record in enumerate(records):
        p = prompt_ids(tokenizer, record["instruction"], mode=mode, system_prompt=system_prompt)
        p_c, c = truncate(p, response_ids(tokenizer, record["chosen"], mode=mode), max_prompt_length, max_length)
        _, r = truncate(p, response_ids(tokenizer, record["rejected"], mode=mode), max_prompt_length, max_length)
        if c and r:
            out.append((p_c, c, r))
        else:
            dropped.append(i)
    return out, dropped
