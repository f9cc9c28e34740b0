"""Judging text (docs/algorithm.md §2.3): the judge prompt, its truncation, score parsing, logit scores.

Everything here is plain Python / NumPy. Tokenizers are taken duck-typed: a `transformers`
tokenizer (anything with `encode` / `decode`), a raw `tokenizers.Tokenizer`, or a pair of
callables `(encode, decode)` with `encode(str) -> list[int]` and `decode(list[int]) -> str`.
"""
from __future__ import annotations

import dataclasses
import json
import re
import unicodedata
from typing import Any, Callable, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

MODES = ("faithful", "fixed")

# The judge's user turn, exactly (docs/algorithm.md §2.3), leading and trailing newline included. It is
# kept in three pieces so that substitution is a single pass: an instruction that happens to
# contain the text "{response}" is not substituted a second time.
_PROMPT_HEAD = (
    "\nPlease judge the following response based on the question and the response to be "
    "evaluated.\nQuestion: "
)
_PROMPT_MIDDLE = "\nResponse to be evaluated: "
_PROMPT_TAIL = (
    "\n\nOperation: Output ONLY a JSON object with one score in this exact format. Score must "
    "be in the range of 1 to 10.\nYour output should be like this:\n"
    '{"score": score}\n'
)
JUDGE_PROMPT_TEMPLATE = _PROMPT_HEAD + "{instruction}" + _PROMPT_MIDDLE + "{response}" + _PROMPT_TAIL

JUDGE_MAX_PROMPT_TOKENS = 512  # released code's judge prompt limit

# The `logits` judge mode (this project's own, docs/algorithm.md §2.3): forced assistant prefix and the
# ten candidate continuations, scored by log-likelihood.
LOGIT_ASSISTANT_PREFIX = '{"score": '
LOGIT_CANDIDATES = tuple(str(i) for i in range(1, 11))
LOGIT_CANDIDATE_VALUES = np.arange(1, 11, dtype=np.float64)

# Score parsing (docs/algorithm.md §2.3): the regex fallbacks, tried in this order, case-insensitive.
SCORE_PATTERNS = (
    r'{\s*"score"\s*:\s*(\d+)\s*}',
    r'"score"\s*:\s*(\d+)',
    r"score\s*[:=]\s*(\d+)",
    r"Score:\s*(\d+)",
    r"(\d+)\s*/\s*10",
)
_SCORE_REGEXES = tuple(re.compile(p, re.IGNORECASE) for p in SCORE_PATTERNS)

# A faithful-mode stand-in for a judge whose pair of scores is incomplete.
FAITHFUL_FALLBACK_SCORES = (5, 5)

Score = Union[int, float]
ScorePair = Tuple[Optional[Score], Optional[Score]]


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    return mode


# --------------------------------------------------------------------------------------
# The prompt
# --------------------------------------------------------------------------------------
def judge_prompt(instruction: str, response: str) -> str:
    """The judge's user turn for one response (docs/algorithm.md §2.3), exactly."""
    return _PROMPT_HEAD + instruction + _PROMPT_MIDDLE + response + _PROMPT_TAIL


@dataclasses.dataclass(frozen=True)
class TokenCodec:
    """`encode(text) -> list[int]` and `decode(ids) -> str`, without special tokens."""

    encode: Callable[[str], list]
    decode: Callable[[Sequence[int]], str]


def as_codec(tokenizer: Any) -> TokenCodec:
    """Adapts a transformers tokenizer, a `tokenizers.Tokenizer`, or (encode, decode)."""
    if isinstance(tokenizer, TokenCodec):
        return tokenizer
    if isinstance(tokenizer, (tuple, list)) and len(tokenizer) == 2 and all(map(callable, tokenizer)):
        enc, dec = tokenizer
        return TokenCodec(lambda text: [int(i) for i in _ids(enc(text))], lambda ids: dec(list(ids)))
    if not (hasattr(tokenizer, "encode") and hasattr(tokenizer, "decode")):
        raise TypeError("tokenizer needs encode/decode methods, or pass (encode, decode) callables")

    def encode(text: str) -> list:
        try:
            out = tokenizer.encode(text, add_special_tokens=False)
        except TypeError:
            out = tokenizer.encode(text)
        return [int(i) for i in _ids(out)]

    def decode(ids: Sequence[int]) -> str:
        try:
            return tokenizer.decode(list(ids), skip_special_tokens=False)
        except TypeError:
            return tokenizer.decode(list(ids))

    return TokenCodec(encode, decode)


def _ids(out: Any) -> Sequence[int]:
    # `tokenizers.Tokenizer.encode` returns an Encoding; transformers returns a list.
    return out.ids if hasattr(out, "ids") else out


@dataclasses.dataclass(frozen=True)
class FittedPrompt:
    """A judge prompt fitted into the token limit. `ids` are authoritative; `text` is
    `decode(ids)` (the full prompt text when nothing was cut)."""

    text: str
    ids: Tuple[int, ...]
    truncated: bool


def fit_judge_prompt(
    instruction: str,
    response: str,
    tokenizer: Any,
    *,
    max_tokens: int = JUDGE_MAX_PROMPT_TOKENS,
    mode: str = "faithful",
    wrap: Optional[Callable[[str], str]] = None,
) -> FittedPrompt:
    """Builds the judge prompt and fits it into `max_tokens` tokens.

    `wrap` turns the user turn into the whole prompt string (e.g. a chat template with the
    generation prompt); default: the user turn alone. The limit counts the wrapped prompt.
    - `faithful` (released code: a tokenizer with truncation on, HF's default right side):
      keep the FIRST `max_tokens` tokens, so a long response cuts off the end of the prompt:
      the judging instruction ("Operation: Output ONLY a JSON object ...") and, with a chat
      template, the assistant turn header.
    - `fixed`: keep the template and the instruction whole and shorten the response (keeping
      its beginning) until the whole prompt fits. If even an empty response does not fit,
      the instruction is shortened as well; if the bare template does not fit, ValueError.
    """
    fitted = _fit_response(lambda r: judge_prompt(instruction, r), response, tokenizer, max_tokens, mode, wrap)
    if fitted is not None:
        return fitted
    # Even the empty response does not fit: shorten the instruction too.
    codec = as_codec(tokenizer)
    wrap = wrap or (lambda text: text)

    def build_response(n: int, r_ids: Sequence[int]) -> str:
        return _clean_cut(codec.decode(r_ids[:n])) if n else ""

    i_ids = codec.encode(instruction)
    fitted = _longest_fitting_prefix(
        i_ids,
        lambda n: wrap(judge_prompt(build_response(n, i_ids), "")),
        codec,
        max_tokens,
        estimate=len(i_ids) - (len(codec.encode(wrap(judge_prompt(instruction, "")))) - max_tokens),
    )
    if fitted is None:
        raise ValueError(f"the judge prompt template alone is longer than {max_tokens} tokens")
    return FittedPrompt(fitted[0], tuple(fitted[1]), True)


def fit_around_response(
    make_user: Callable[[str], str],
    response: str,
    tokenizer: Any,
    *,
    max_tokens: int,
    mode: str = "faithful",
    wrap: Optional[Callable[[str], str]] = None,
) -> FittedPrompt:
    """Any prompt built around one long text (`make_user(response)`, e.g. the meta-judge's),
    fitted to `max_tokens` as the judge prompt is: `faithful` keeps the first tokens, `fixed`
    shortens `response` inside the template; ValueError if even an empty response does not fit."""
    fitted = _fit_response(make_user, response, tokenizer, max_tokens, mode, wrap)
    if fitted is None:
        raise ValueError(f"the prompt without its response is longer than {max_tokens} tokens")
    return fitted


def _fit_response(make_user, response, tokenizer, max_tokens, mode, wrap) -> Optional[FittedPrompt]:
    """The whole prompt when it fits; else `faithful`: its first max_tokens tokens; `fixed`: the
    longest start of `response` that fits inside the prompt (None when none does)."""
    check_mode(mode)
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    codec = as_codec(tokenizer)
    wrap = wrap or (lambda text: text)
    full_text = wrap(make_user(response))
    ids = codec.encode(full_text)
    if len(ids) <= max_tokens:
        return FittedPrompt(full_text, tuple(ids), False)
    if mode == "faithful":
        kept = ids[:max_tokens]
        return FittedPrompt(codec.decode(kept), tuple(kept), True)
    r_ids = codec.encode(response)
    fitted = _longest_fitting_prefix(
        r_ids,
        lambda n: wrap(make_user(_clean_cut(codec.decode(r_ids[:n])) if n else "")),
        codec,
        max_tokens,
        estimate=len(r_ids) - (len(ids) - max_tokens),
    )
    return None if fitted is None else FittedPrompt(fitted[0], tuple(fitted[1]), True)


def _clean_cut(text: str) -> str:
    # A byte-level cut in the middle of a character decodes to U+FFFD; drop such debris.
    return text.rstrip("\ufffd")


def _longest_fitting_prefix(piece_ids, build, codec, max_tokens, estimate):
    """Largest n in [0, len(piece_ids)] with len(encode(build(n))) <= max_tokens, or None.

    Tokenization is near-additive, so the estimate usually hits at once; otherwise a binary
    search (fit is monotone in n up to merges at the cut, which the final check absorbs).
    """
    cache = {}

    def fits(n):
        if n not in cache:
            text = build(n)
            ids = codec.encode(text)
            cache[n] = (text, ids) if len(ids) <= max_tokens else None
        return cache[n]

    total = len(piece_ids)
    est = min(max(estimate, 0), total)
    if fits(est) is not None and (est == total or fits(est + 1) is None):
        return fits(est)
    lo, hi = 0, total  # invariant candidates in [lo, hi]
    if fits(0) is None:
        return None
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if fits(mid) is not None:
            lo = mid
        else:
            hi = mid - 1
    return fits(lo)


# --------------------------------------------------------------------------------------
# Parsing sampled judge outputs
# --------------------------------------------------------------------------------------
def parse_score(text: Any) -> Optional[int]:
    """A judge's text -> its score, or None when unparseable (docs/algorithm.md §2.3). Never raises.

    1. The whole text as JSON: an object whose "score" is a number (not a boolean) in
       [0, 10] gives int(value) (truncation toward zero: 7.9 -> 7, 0 -> 0).
    2. Otherwise each of SCORE_PATTERNS in order (case-insensitive); for each pattern the
       first match (re.search) is taken, and accepted when its integer lies in [1, 10].
    """
    if not isinstance(text, str):
        return None
    try:
        obj = json.loads(text)
    except Exception:  # ValueError, RecursionError on deep nesting, ...
        obj = None
    if isinstance(obj, dict) and "score" in obj:
        value = obj["score"]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            if 0 <= value <= 10:  # NaN and infinities fail this test
                return int(value)
    for regex in _SCORE_REGEXES:
        match = regex.search(text)
        if match is not None:
            value = _small_int(match.group(1))
            if value is not None and 1 <= value <= 10:
                return value
    return None


def _small_int(digits: str) -> Optional[int]:
    """Integer value of a run of (Unicode) decimal digits, or None when above 99.

    Avoids int() on huge digit strings (Python refuses > 4300 digits) and keeps leading
    zeros meaningful ("007" -> 7)."""
    values = [unicodedata.decimal(ch, 0) for ch in digits]
    first = 0
    while first < len(values) and values[first] == 0:
        first += 1
    significant = values[first:]
    if len(significant) > 2:
        return None
    out = 0
    for v in significant:
        out = out * 10 + v
    return out


def parse_pair(raw_a: Optional[str], raw_b: Optional[str]) -> Tuple[Optional[int], Optional[int]]:
    """Parses a judge's two outputs (one per duelist)."""
    return parse_score(raw_a), parse_score(raw_b)


def effective_pair(scores: Optional[Sequence[Optional[Score]]], mode: str) -> Optional[Tuple[Score, Score]]:
    """The pair a judge contributes to a duel, after the unparseable rule (docs/algorithm.md §2.3).

    `scores` is (s_a, s_b) with None for an unparseable score, or None for the whole pair.
    Complete pair: returned as is. Otherwise `faithful` gives (5, 5) (the judge still counts
    with full weight) and `fixed` gives None (the judge is dropped from this duel).
    """
    check_mode(mode)
    if scores is not None and len(scores) != 2:
        raise ValueError(f"a judge's scores are a pair, got {scores!r}")
    if scores is not None and scores[0] is not None and scores[1] is not None:
        return scores[0], scores[1]
    return FAITHFUL_FALLBACK_SCORES if mode == "faithful" else None


def effective_judgements(
    judges: Mapping[str, Optional[Sequence[Optional[Score]]]], mode: str
) -> dict:
    """{judge: scores or None} -> {judge: (s_a, s_b)} of the judges that count.

    Empty in `fixed` when every judge was dropped: the duel then yields no preference and
    moves no reputation."""
    out = {}
    for name, scores in judges.items():
        pair = effective_pair(scores, mode)
        if pair is not None:
            out[name] = pair
    return out


# --------------------------------------------------------------------------------------
# The `logits` judge mode
# --------------------------------------------------------------------------------------
def logit_expected_score(logliks: Any, values: Optional[Sequence[float]] = None) -> Tuple[np.ndarray, np.ndarray]:
    """Ten candidate log-likelihoods ("1".."10", last axis) -> (softmax probs, expected score).

    A candidate's log-likelihood is that of the judge writing exactly that number after
    LOGIT_ASSISTANT_PREFIX: its tokens' log-probabilities plus the log-probability that no
    digit follows (see `number_continuation_ids`), so "1" is not counted again inside "10".
    Normalising over the ten conditions on the judge writing a whole number in 1..10. Works on
    any leading batch shape; -inf entries get probability 0. Raises ValueError on NaN, +inf or
    a row that is all -inf. `values`: other candidates' values (e.g. a 0..5 rubric's points).
    """
    values = LOGIT_CANDIDATE_VALUES if values is None else np.asarray(values, np.float64)
    x = np.asarray(logliks, dtype=np.float64)
    if x.ndim == 0 or x.shape[-1] != len(values):
        raise ValueError(f"expected {len(values)} log-likelihoods on the last axis, got shape {x.shape}")
    if np.isnan(x).any() or np.isposinf(x).any():
        raise ValueError("log-likelihoods must not be NaN or +inf")
    top = x.max(axis=-1, keepdims=True)
    if np.isneginf(top).any():
        raise ValueError("every candidate has log-likelihood -inf")
    e = np.exp(x - top)
    probs = e / e.sum(axis=-1, keepdims=True)
    expected = probs @ values
    return probs, expected


def number_continuation_ids(token_texts: Sequence[str]) -> np.ndarray:
    """Ids of the tokens whose text starts with an ASCII digit: after a judge has written "1",
    any of them makes a longer number ("10", "15", "1.5" does not: the parser truncates it to
    1, as int() in docs/algorithm.md §2.3 does). `token_texts[i]` is token i decoded on its own.

    Why "no digit follows" rather than "the closing brace follows": the number has ended
    whatever comes next ("}", " }", ",", a newline), and every one of those is parsed as that
    number; a brace rule would also depend on how the tokenizer merges "}" with what follows.
    """
    return np.asarray([i for i, text in enumerate(token_texts) if text[:1] in "0123456789" and text], np.int64)


def logit_candidate_ids(tokenizer: Any, prefix: str = LOGIT_ASSISTANT_PREFIX,
                        candidates: Sequence[str] = LOGIT_CANDIDATES) -> Tuple[Tuple[int, ...], ...]:
    """Token ids of each candidate ("1".."10" by default) as a continuation of `prefix`.

    Taken as encode(prefix + candidate) minus the tokens of encode(prefix) when those are a
    prefix of it (the usual case); otherwise encode(candidate) alone.
    """
    codec = as_codec(tokenizer)
    base = codec.encode(prefix)
    out = []
    for cand in candidates:
        ids = codec.encode(prefix + cand)
        if ids[: len(base)] == base and len(ids) > len(base):
            out.append(tuple(ids[len(base):]))
        else:
            out.append(tuple(codec.encode(cand)))
    return tuple(out)


__all__ = [
    "MODES",
    "JUDGE_PROMPT_TEMPLATE",
    "JUDGE_MAX_PROMPT_TOKENS",
    "LOGIT_ASSISTANT_PREFIX",
    "LOGIT_CANDIDATES",
    "SCORE_PATTERNS",
    "FAITHFUL_FALLBACK_SCORES",
    "TokenCodec",
    "FittedPrompt",
    "as_codec",
    "check_mode",
    "judge_prompt",
    "fit_judge_prompt",
    "parse_score",
    "parse_pair",
    "effective_pair",
    "effective_judgements",
    "logit_expected_score",
    "logit_candidate_ids",
    "number_continuation_ids",
]
