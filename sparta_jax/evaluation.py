"""Answer extraction and scoring: pure functions on text, no model, no JAX.

Evaluators (a record's "evaluator" field names one):
- "numeric": GSM8K style. The number after the last "####" if there is one, else the last
  number in the text; compared numerically (so "3.50" == "3.5", "1,234" == "1234").
- "boxed": MATH style. The content of the last \\boxed{...} (nested braces), lightly
  normalised; equal strings, or equal numeric values (integers, decimals, a/b, \\frac{a}{b}).
- "choice": a multiple-choice letter (A-D by default), see `extract_choice`.
- "exact": the stripped, case-folded text without a trailing period equals the reference.
- "cased": the answer written in the reference's own letter case: the text after a leading
  "The answer is" (when there is one), its first line, without surrounding spaces, quotes and a
  trailing period, equals the reference exactly (case-sensitive; the bundled "case" task).

The extractors never raise on any string (a property test checks), and return None when
nothing can be read; `evaluate` counts those as wrong and reports how many there were.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

EVALUATORS = ("numeric", "boxed", "choice", "exact", "cased")

Number = Union[int, float]

# ---------------------------------------------------------------------------------------
# numbers

# A number: optional minus (ASCII or U+2212) not glued to a preceding word or closing
# bracket (so "3-5" reads as 3 and 5), then either thousands groups "1,234,567" or plain
# digits, then an optional decimal part. A number never starts right after a digit.
_NUMBER = re.compile(
    r"(?:(?<![\w)\]])(?P<sign>[-\u2212]))?(?<!\d)"
    r"(?P<int>\d{1,3}(?:,\d{3})+(?!\d)|\d+)(?P<frac>\.\d+)?"
)
_HASHES = re.compile(r"####")


def _to_number(sign: Optional[str], integer: str, frac: Optional[str]) -> Optional[Number]:
    text = ("-" if sign else "") + integer.replace(",", "") + (frac or "")
    try:
        value = Decimal(text)
    except (InvalidOperation, ValueError):
        return None
    if value == value.to_integral_value():
        return int(value)
    return float(value)


def _numbers(text: str):
    for m in _NUMBER.finditer(text):
        value = _to_number(m.group("sign"), m.group("int"), m.group("frac"))
        if value is not None:
            yield value


def extract_number(text: Any) -> Optional[Number]:
    """The final numeric answer of `text`: the first number after the last "####" (GSM8K's
    answer marker) when there is one, else the last number anywhere. Handles negatives,
    thousands commas and decimals; returns an int when the value is integral, a float
    otherwise, None when there is no number (or `text` is not a string)."""
    if not isinstance(text, str) or not text:
        return None
    marks = list(_HASHES.finditer(text))
    if marks:
        for value in _numbers(text[marks[-1].end():]):
            return value
    last = None
    for value in _numbers(text):
        last = value
    return last


def numbers_equal(a: Optional[Number], b: Optional[Number], rel_tol: float = 1e-6) -> bool:
    """Numeric equality with a small relative tolerance (exact for integers)."""
    if a is None or b is None:
        return False
    if isinstance(a, int) and isinstance(b, int):
        return a == b
    try:
        return math.isclose(float(a), float(b), rel_tol=rel_tol, abs_tol=1e-9)
    except (OverflowError, ValueError):
        return False


# ---------------------------------------------------------------------------------------
# \boxed{...}

_BOXED = re.compile(r"\\(?:boxed|fbox)")


def _matching_braces(text: str) -> Dict[int, int]:
    """Index of each "{" -> index of its closing "}" (unclosed ones are absent); O(n)."""
    stack, match = [], {}
    for i, c in enumerate(text):
        if c == "{":
            stack.append(i)
        elif c == "}" and stack:
            match[stack.pop()] = i
    return match


def _boxed_content(text: str, start: int, braces: Dict[int, int]) -> Optional[str]:
    """Content after a \\boxed ending at `start`, or None when unbalanced."""
    i = start
    while i < len(text) and text[i] == " ":
        i += 1
    if i >= len(text):
        return None
    if text[i] != "{":
        # "\boxed 5": the token up to whitespace or "$".
        m = re.match(r"[^\s$]+", text[i:i + 200])
        return m.group(0) if m else None
    end = braces.get(i)
    return None if end is None else text[i + 1:end]


def normalize_math(answer: str) -> str:
    """Light normalisation of a math answer: no whitespace, `$` (or `\\$`), `\\%`,
    `\\left`, `\\right`, `\\!`, `\\,`, `\\;`; `\\dfrac`/`\\tfrac` -> `\\frac`; no
    trailing period."""
    s = answer
    for old, new in (("\\left", ""), ("\\right", ""), ("\\dfrac", "\\frac"),
                     ("\\tfrac", "\\frac"), ("\\!", ""), ("\\,", ""), ("\\;", ""),
                     ("\\$", ""), ("$", ""), ("\\%", "")):
        s = s.replace(old, new)
    s = re.sub(r"\s+", "", s)
    while s.endswith("."):
        s = s[:-1]
    return s


def extract_boxed(text: Any) -> Optional[str]:
    """The normalised content of the last well-formed \\boxed{...} (or \\fbox{...}) in
    `text`, nested braces included; None when there is none or it is empty."""
    if not isinstance(text, str) or not text:
        return None
    commands = list(_BOXED.finditer(text))
    braces = _matching_braces(text) if commands else {}
    for m in reversed(commands):
        content = _boxed_content(text, m.end(), braces)
        if content is None:
            continue
        content = normalize_math(content)
        return content or None
    return None


_FRAC = re.compile(r"^(-?)\\frac\{(-?\d+)\}\{(-?\d+)\}$")
_SLASH = re.compile(r"^(-?\d+)/(-?\d+)$")
_PLAIN = re.compile(r"^-?(?:\d{1,3}(?:,\d{3})+|\d+)?(?:\.\d+)?$")


def math_value(answer: str) -> Optional[Fraction]:
    """Exact value of a normalised answer that is a plain number, a/b or \\frac{a}{b}."""
    try:
        m = _FRAC.match(answer)
        if m:
            value = Fraction(int(m.group(2)), int(m.group(3)))
            return -value if m.group(1) else value
        m = _SLASH.match(answer)
        if m:
            return Fraction(int(m.group(1)), int(m.group(2)))
        if _PLAIN.match(answer) and any(ch.isdigit() for ch in answer):
            return Fraction(Decimal(answer.replace(",", "")))
    except (ZeroDivisionError, ValueError, InvalidOperation, ArithmeticError):
        return None
    return None


# ---------------------------------------------------------------------------------------
# multiple choice

_VERB = r"(?:is|was|would\s+be|will\s+be|should\s+be|must\s+be)"
_CONNECTOR = r"(?:\s*" + _VERB + r")?(?:\s*[:=\-])?\s*"  # may be empty: "Answer (B)"
_CONNECTOR_REQUIRED = r"(?:\s*" + _VERB + r"(?:\s*[:=\-])?|\s*[:=])\s*"
_LETTER = (r"(?:(?:option|choice|letter)\s+)?"
           r"(?:(?P<open>[\(\[])\s*(?P<pl>[A-Za-z])\s*[\)\]]|(?P<bare>[A-Za-z])(?![A-Za-z0-9]))")
# "answer is B", "Answer: (b)", "answer is: B", "final answer would be option C".
_ANSWER_STATEMENT = re.compile(r"\banswer" + _CONNECTOR + _LETTER, re.IGNORECASE)
# "the correct option is B", "my choice: (C)"; a connector is required ("option B is
# wrong" is a mention, not a statement).
_CHOICE_STATEMENT = re.compile(r"\b(?:option|choice)" + _CONNECTOR_REQUIRED + _LETTER,
                               re.IGNORECASE)
# A weaker mention, used only when nothing better is found: "... which is option B".
_MENTION = re.compile(r"\b(?:option|choice|letter)\s+\(?([A-Z])\)?(?![A-Za-z0-9])",
                      re.IGNORECASE)
_BOXED_LETTER = re.compile(r"\\boxed\{\s*(?:\\text\{\s*)?\(?([A-Za-z])\)?\s*\}?\s*\}")
_LEADING = re.compile(r"^\s*(?:[\(\[]\s*(?P<pl>[A-Za-z])\s*[\)\]]|(?P<bare>[A-Z])(?:[\).:]|\s*$))")
_BARE_LINE = re.compile(r"[\(\[]?([A-Za-z])[\)\]]?[.:]?")  # fullmatch on a stripped line
_PAREN = re.compile(r"[\(\[]\s*([A-Z])\s*[\)\]]")


def _statement_letter(m: "re.Match", text: str) -> Optional[str]:
    if m.group("pl"):
        return m.group("pl").upper()
    letter = m.group("bare")
    if letter.islower():
        # A lower-case bare letter is accepted only when it ends the statement, so that
        # "the answer is a bit unclear" is not read as "A".
        rest = text[m.end():]
        if not re.match(r"\s*(?:[.,;:!)\]]|$)", rest):
            return None
    return letter.upper()


def extract_choice(text: Any, n_options: int = 4) -> Optional[str]:
    """The chosen option letter (upper case), or None.

    In order of preference: the last explicit statement ("answer is B", "Answer: b",
    "the correct option is (C)", "\\boxed{D}"); a reply that starts with a letter ("B",
    "(B) 47", "B) 47", "B. 47"); the last line holding only a letter; the last mention
    "option B" / "choice B" / "letter B"; the last "(B)" anywhere. Letters beyond the
    first `n_options` are ignored. "answer is" and friends match in any case; a lower-case
    letter after them counts only at the end of the statement ("answer is a bit" is not
    "A"). Markdown asterisks are ignored ("**Answer: C**").
    """
    if not isinstance(text, str) or not text or n_options < 1:
        return None
    valid = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"[:n_options]
    clean = text.replace("*", "")  # markdown bold around the letter

    found = []
    for pattern in (_ANSWER_STATEMENT, _CHOICE_STATEMENT):
        for m in pattern.finditer(clean):
            letter = _statement_letter(m, clean)
            if letter is not None and letter in valid:
                found.append((m.start(), letter))
    for m in _BOXED_LETTER.finditer(clean):
        letter = m.group(1).upper()
        if letter in valid:
            found.append((m.start(), letter))
    if found:
        return max(found)[1]

    m = _LEADING.match(clean)
    if m:
        letter = (m.group("pl") or m.group("bare")).upper()
        if letter in valid:
            return letter
    lines = []
    for line in clean.splitlines():
        m = _BARE_LINE.fullmatch(line.replace(" ", "").replace("\t", ""))
        if m and m.group(1).upper() in valid:
            lines.append(m.group(1).upper())
    if lines:
        return lines[-1]
    mentions = [m.group(1) for m in _MENTION.finditer(clean)
                if m.group(1).isupper() and m.group(1) in valid]
    if mentions:
        return mentions[-1]
    parens = [m.group(1) for m in _PAREN.finditer(clean) if m.group(1) in valid]
    if parens:
        return parens[-1]
    return None


# ---------------------------------------------------------------------------------------
# scoring


def _normalize_exact(text: str) -> str:
    return _without_final_periods(" ".join(text.strip().split()).casefold())


def _without_final_periods(s: str) -> str:
    while s.endswith("."):
        s = s[:-1].rstrip()
    return s


_ANSWER_IS = re.compile(r"^\s*the answer is:?\s*", re.IGNORECASE)


def extract_cased(text: Any) -> Optional[str]:
    """The answer of a "cased" item as written (case kept): see the module docstring."""
    if not isinstance(text, str):
        return None
    s = _ANSWER_IS.sub("", text.strip(), count=1)
    s = _without_final_periods(s.strip().split("\n", 1)[0].strip()).strip("\"'“” ")
    return " ".join(s.split()) or None


def _reference_choice(reference: Any) -> Tuple[Optional[str], int]:
    ref = str(reference).strip()
    if len(ref) == 1 and ref.isalpha():
        letter = ref.upper()
    else:
        letter = extract_choice(ref, n_options=26)
    n_options = 4 if letter is None else max(4, ord(letter) - ord("A") + 1)
    return letter, n_options


def _reference_boxed(reference: Any) -> Optional[str]:
    ref = str(reference)
    if _BOXED.search(ref):
        return extract_boxed(ref)
    return normalize_math(ref) or None


def parse(prediction_text: Any, evaluator: str, reference: Any = None) -> Any:
    """What `evaluator` reads from a prediction (None when nothing can be read)."""
    if evaluator == "numeric":
        return extract_number(prediction_text)
    if evaluator == "boxed":
        return extract_boxed(prediction_text)
    if evaluator == "choice":
        n = _reference_choice(reference)[1] if reference is not None else 4
        return extract_choice(prediction_text, n_options=n)
    if evaluator == "exact":
        if not isinstance(prediction_text, str):
            return None
        return _normalize_exact(prediction_text) or None
    if evaluator == "cased":
        return extract_cased(prediction_text)
    raise ValueError(f"unknown evaluator {evaluator!r}; known: {', '.join(EVALUATORS)}")


def score(prediction_text: Any, reference: Any, evaluator: str) -> float:
    """1.0 when the prediction's answer matches the reference under `evaluator`, else 0.0.

    The reference may be a bare answer ("42", "B", "\\frac{1}{2}") or a full solution
    (GSM8K's "... #### 42", MATH's "... \\boxed{...}"); it is read with the same extractor.
    """
    got = parse(prediction_text, evaluator, reference)
    if got is None:
        return 0.0
    if evaluator == "numeric":
        if isinstance(reference, (int, float)) and not isinstance(reference, bool):
            ref = reference
        else:
            ref = extract_number(str(reference))
        return 1.0 if numbers_equal(got, ref) else 0.0
    if evaluator == "boxed":
        ref = _reference_boxed(reference)
        if ref is None:
            return 0.0
        if got == ref:
            return 1.0
        a, b = math_value(got), math_value(ref)
        return 1.0 if a is not None and a == b else 0.0
    if evaluator == "choice":
        return 1.0 if got == _reference_choice(reference)[0] else 0.0
    if evaluator == "cased":
        return 1.0 if got == extract_cased(str(reference)) else 0.0
    # exact
    return 1.0 if got == _normalize_exact(str(reference)) else 0.0


def wilson_interval(k: int, n: int, z: float = 1.96) -> Tuple[float, float]:
    """Wilson score interval for a proportion of k successes in n trials ((0, 1) if n=0)."""
    if n < 0 or k < 0 or k > n:
        raise ValueError(f"need 0 <= k <= n, got k={k}, n={n}")
    if n == 0:
        return (0.0, 1.0)
    p = k / n
    z2 = z * z
    denom = 1.0 + z2 / n
    center = (p + z2 / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / denom
    return (max(0.0, center - half), min(1.0, center + half))


def evaluate(predictions: Sequence[Any], records: Sequence[Mapping[str, Any]],
             evaluator: Optional[str] = None) -> Dict[str, Any]:
    """Score predictions against records (each with "answer" and, unless `evaluator` is
    given, "evaluator").

    Returns {"accuracy", "n", "n_correct", "n_unparsed", "ci95": (low, high) Wilson 95%
    interval, "scores": per-item 0/1, "by_task": {task: {"accuracy", "n", "n_correct"}}
    (only when records carry a "task" field)}. Unparsed predictions count as wrong.
    """
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    scores = []
    unparsed = 0
    by_task: Dict[str, list] = {}
    for i, (pred, rec) in enumerate(zip(predictions, records)):
        if "answer" not in rec or rec["answer"] is None:
            raise ValueError(f"record {i} ({rec.get('id', '?')}) has no answer")
        ev = evaluator or rec.get("evaluator")
        if ev is None:
            raise ValueError(f"record {i} ({rec.get('id', '?')}) names no evaluator and "
                             "none was given")
        if parse(pred, ev, rec["answer"]) is None:
            unparsed += 1
        s = score(pred, rec["answer"], ev)
        scores.append(s)
        if "task" in rec:
            by_task.setdefault(str(rec["task"]), []).append(s)
    n = len(scores)
    k = int(sum(scores))
    result: Dict[str, Any] = {
        "accuracy": k / n if n else 0.0,
        "n": n,
        "n_correct": k,
        "n_unparsed": unparsed,
        "ci95": wilson_interval(k, n),
        "scores": scores,
    }
    if by_task:
        result["by_task"] = {t: {"accuracy": sum(v) / len(v), "n": len(v),
                                 "n_correct": int(sum(v))} for t, v in sorted(by_task.items())}
    return result
