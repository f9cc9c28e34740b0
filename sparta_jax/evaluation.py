"""Answer extraction and scoring: pure functions on text, no model, no JAX.

Evaluators (a record's "evaluator" field names one):
- "numeric": GSM8K style. The number after the last "####" if there is one, else the last
  number in the text; compared numerically (so "3.50" == "3.5", "1,234" == "1234").
- "boxed": MATH style. The content of the last \\boxed{...} (nested braces), normalised the
  way MATH's own equivalence check does (`normalize_math`: \\frac12 = \\frac{1}{2}, \\dfrac,
  spaces, \\left( and \\right), ^\\circ, \\%, \\$, trailing \\text{} units, \\text{X} -> X,
  "x = 5" -> 5); equal strings, or equal numeric values (integers, decimals, a/b,
  \\frac{a}{b}). An answer with no \\boxed at all is read as its last number.
- "choice": a multiple-choice letter (A-D by default), see `extract_choice`.
- "exact": the stripped, case-folded text without a trailing period equals the reference.
- "cased": the answer written in the reference's own letter case: the text after a leading
  "The answer is" (when there is one), its first line, without surrounding spaces, quotes and a
  trailing period, equals the reference exactly (case-sensitive; the bundled "case" task).
- "normad": the Normad authors' keyword rule, see `normad_label` (reference: yes / no / neutral).
- "com2": normalised containment of the gold phrase, see `com2_match`.

Not text evaluators (a record names them, `score` does not take them):
- "likelihood_mc" (TruthfulQA MC1 / MC2): scored from each option's summed log-probability,
  not from generated text; see `mc1_score`, `mc2_score`, `evaluate_likelihood`.
- "judged" (open-ended, Alpaca): a judge model's 1-10 score (`sparta_jax.member_eval`).

The extractors never raise on any string (a property test checks), and return None when
nothing can be read; `evaluate` counts those as wrong and reports how many there were.
"""
from __future__ import annotations

import math
import re
from decimal import Decimal, InvalidOperation
from fractions import Fraction
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Sequence, Tuple, Union

if TYPE_CHECKING:
    import numpy as np

EVALUATORS = ("numeric", "boxed", "choice", "exact", "cased", "normad", "com2")  # text evaluators
LIKELIHOOD = "likelihood_mc"
JUDGED = "judged"

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


_TEXT_COMMAND = r"\\(?:text|textbf|textrm|textnormal|mbox|mathrm)"
# A trailing unit: "5\text{ cm}", "12\mbox{ inches}^2" (after the spaces are gone).
_TRAILING_UNIT = re.compile(_TEXT_COMMAND + r"\{[A-Za-z][A-Za-z.]*\}(?:\^\{?[23]\}?)?$")
_TEXT_WRAPPER = re.compile(_TEXT_COMMAND + r"\{([^{}]*)\}")
# "x=5", "k=\frac{1}{2}", "a_1=3": a one-letter variable named before the value.
_VARIABLE_PREFIX = re.compile(r"^[A-Za-z](?:_\{?\w+\}?)?=(?P<value>[^=]+)$")
_DROPPED = ("\\left", "\\right", "\\displaystyle", "\\!", "\\,", "\\;", "\\:", "\\ ",
            "\\$", "$", "\\%", "%", "^{\\circ}", "^\\circ", "\\circ", "\u00b0")


def _group_end(s: str, start: int) -> int:
    """Index of the "}" closing the "{" at `start`, or -1."""
    depth = 0
    for i in range(start, len(s)):
        depth += {"{": 1, "}": -1}.get(s[i], 0)
        if depth == 0:
            return i
    return -1


def _brace_arguments(s: str, command: str, n_args: int) -> str:
    """Braces around one-character arguments of `command`: \\frac12 -> \\frac{1}{2},
    \\sqrt3 -> \\sqrt{3}. Braced arguments are kept; anything else ends the rewrite."""
    out, i = [], 0
    while True:
        j = s.find(command, i)
        if j < 0:
            out.append(s[i:])
            return "".join(out)
        k = j + len(command)
        out.append(s[i:k])
        for _ in range(n_args):
            if k < len(s) and s[k] == "{":
                end = _group_end(s, k)
                if end < 0:
                    break
                out.append(s[k:end + 1])
                k = end + 1
            elif k < len(s) and s[k].isalnum():
                out.append("{" + s[k] + "}")
                k += 1
            else:
                break
        i = k


def normalize_math(answer: str) -> str:
    """A math answer in one canonical spelling, so that spellings MATH's own equivalence check
    treats as equal compare equal as strings: no whitespace, `$`, `\\%`, `\\left`, `\\right`,
    `\\!`, `\\,`, `\\;`, `^\\circ`; `\\dfrac`/`\\tfrac` -> `\\frac`; `\\frac12` ->
    `\\frac{1}{2}`, `\\sqrt3` -> `\\sqrt{3}`; `1{,}000` -> `1,000`; a trailing
    `\\text{...}` unit after a number dropped, other `\\text{X}` -> `X`; a leading one-letter
    `x=` dropped; no trailing period. Applied until nothing changes, so it is idempotent
    (one rewrite can expose another: "\\{,}" -> "\\," -> "")."""
    s = answer
    for _ in range(8):  # a handful of passes reach the fixed point on any real answer
        once = _normalize_math_once(s)
        if once == s:
            break
        s = once
    return s


def _normalize_math_once(answer: str) -> str:
    s = answer.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac")
    for old in _DROPPED:
        s = s.replace(old, "")
    while "{,}" in s:  # "{{,}}" -> "{,}" -> ","
        s = s.replace("{,}", ",")
    s = re.sub(r"\s+", "", s).rstrip(".")  # "5\text{ cm}." ends in a unit, too
    unit = _TRAILING_UNIT.search(s)
    if unit and re.search(r"\d", s[:unit.start()]):
        s = s[:unit.start()]
    while True:  # innermost first: \text{\textbf{x}}
        unwrapped = _TEXT_WRAPPER.sub(lambda m: m.group(1), s)
        if unwrapped == s:
            break
        s = unwrapped
    s = _brace_arguments(_brace_arguments(s, "\\frac", 2), "\\sqrt", 1)
    prefixed = _VARIABLE_PREFIX.match(s)
    if prefixed:
        s = prefixed.group("value")
    return s.rstrip(".")


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


def _last_number_text(text: str) -> Optional[str]:
    """The last number of `text` as written, without thousands commas ("-1,234.5" -> "-1234.5")."""
    last = None
    for last in _NUMBER.finditer(text):
        pass
    if last is None:
        return None
    return ("-" if last.group("sign") else "") + last.group("int").replace(",", "") + (last.group("frac") or "")


def extract_math_answer(text: Any) -> Optional[str]:
    """What the "boxed" evaluator reads: `extract_boxed`, or, when the text has no \\boxed
    at all, its last number (a chat model often ends "... so the answer is 17.")."""
    if not isinstance(text, str) or not text:
        return None
    if _BOXED.search(text):
        return extract_boxed(text)
    return _last_number_text(text)


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
# Normad: the authors' keyword rule

# Checked in this order, as plain substrings of the lower-cased answer (so "eyes" reads as
# "yes" and "not" or "know" as "no": the authors' rule, kept as it is).
NORMAD_LABELS = ("neutral", "yes", "no")


def normad_label(text: Any) -> Optional[str]:
    """The Normad label of an answer: "neutral" if the lower-cased text contains "neutral",
    else "yes" if it contains "yes", else "no" if it contains "no", else "neutral" (an answer
    with none of the three counts as neutral). None only for a non-string."""
    if not isinstance(text, str):
        return None
    lower = text.lower()
    for label in NORMAD_LABELS:
        if label in lower:
            return label
    return "neutral"


def _reference_normad(reference: Any) -> Optional[str]:
    """A reference label must be exactly yes / no / neutral (any case, a final period)."""
    label = _without_final_periods(str(reference).strip().lower())
    return label if label in NORMAD_LABELS else None


# ---------------------------------------------------------------------------------------
# COM2: normalised containment of the gold phrase

COM2_MAX_TOKENS = 64  # only the start of an answer counts, so a long list of guesses is not credited
_CONTRACTIONS = (("won't", "will not"), ("can't", "can not"), ("cannot", "can not"), ("n't", " not"))
_ARTICLES = frozenset(("a", "an", "the"))
_NEGATIONS = frozenset(("not", "no", "never"))


def com2_tokens(text: str) -> list:
    """Lower-cased words and numbers, contractions spelled out, without articles."""
    s = text.lower().replace("\u2019", "'").replace("`", "'")
    for old, new in _CONTRACTIONS:
        s = s.replace(old, new)
    return [w for w in re.findall(r"[a-z0-9]+", s) if w not in _ARTICLES]


def com2_match(answer: Any, gold: Any) -> bool:
    """Whether the gold phrase's words appear, in order and next to each other, among the
    first COM2_MAX_TOKENS words of the answer (both through `com2_tokens`), and not right
    after "not" / "no" / "never" unless the gold itself starts with one of them."""
    if not isinstance(answer, str) or gold is None:
        return False
    want = com2_tokens(str(gold))
    have = com2_tokens(answer)[:COM2_MAX_TOKENS]
    if not want:
        return False
    gold_negated = want[0] in _NEGATIONS
    for i in range(len(have) - len(want) + 1):
        if have[i:i + len(want)] == want and (gold_negated or i == 0 or have[i - 1] not in _NEGATIONS):
            return True
    return False


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


def _check_text_evaluator(evaluator: str) -> None:
    if evaluator in (LIKELIHOOD, JUDGED):
        raise ValueError(f"evaluator {evaluator!r} does not score text answers "
                         f"(text evaluators: {', '.join(EVALUATORS)})")
    if evaluator not in EVALUATORS:
        raise ValueError(f"unknown evaluator {evaluator!r}; known: {', '.join(EVALUATORS)}")


def parse(prediction_text: Any, evaluator: str, reference: Any = None) -> Any:
    """What `evaluator` reads from a prediction (None when nothing can be read)."""
    _check_text_evaluator(evaluator)
    if evaluator == "numeric":
        return extract_number(prediction_text)
    if evaluator == "boxed":
        return extract_math_answer(prediction_text)
    if evaluator == "choice":
        n = _reference_choice(reference)[1] if reference is not None else 4
        return extract_choice(prediction_text, n_options=n)
    if evaluator == "normad":
        return normad_label(prediction_text)
    if evaluator == "cased":
        return extract_cased(prediction_text)
    if not isinstance(prediction_text, str):
        return None
    if evaluator == "com2":
        return " ".join(com2_tokens(prediction_text)[:COM2_MAX_TOKENS]) or None
    return _normalize_exact(prediction_text) or None  # exact


def reference_value(reference: Any, evaluator: str) -> Any:
    """What `evaluator` reads from a reference answer; None when it is missing or unreadable.

    The reference may be a bare answer ("42", "B", "\\frac{1}{2}", "yes") or a full
    solution (GSM8K's "... #### 42", MATH's "... \\boxed{...}")."""
    _check_text_evaluator(evaluator)
    if reference is None:
        return None
    if evaluator == "numeric":
        if isinstance(reference, (int, float)) and not isinstance(reference, bool):
            return reference
        return extract_number(str(reference))
    if evaluator == "boxed":
        return _reference_boxed(reference)
    if evaluator == "choice":
        return _reference_choice(reference)[0]
    if evaluator == "normad":
        return _reference_normad(reference)
    if evaluator == "cased":
        return extract_cased(str(reference))
    if evaluator == "com2":
        return " ".join(com2_tokens(str(reference))) or None
    return _normalize_exact(str(reference)) or None  # exact


def score(prediction_text: Any, reference: Any, evaluator: str) -> float:
    """1.0 when the prediction's answer matches the reference under `evaluator`, else 0.0
    (also when the reference cannot be read: see `reference_status`)."""
    got = parse(prediction_text, evaluator, reference)
    ref = reference_value(reference, evaluator)
    if got is None or ref is None:
        return 0.0
    if evaluator == "numeric":
        return 1.0 if numbers_equal(got, ref) else 0.0
    if evaluator == "boxed":
        if got == ref:
            return 1.0
        a, b = math_value(got), math_value(ref)
        return 1.0 if a is not None and a == b else 0.0
    if evaluator == "com2":
        return 1.0 if com2_match(prediction_text, reference) else 0.0
    return 1.0 if got == ref else 0.0


REFERENCE_OK, REFERENCE_MISSING, REFERENCE_UNPARSEABLE = "ok", "missing", "unparseable"


def reference_status(record: Mapping[str, Any]) -> str:
    """"ok", "missing" (no answer, or no MC targets) or "unparseable" (an answer its
    evaluator cannot read, or no text evaluator to read it) for one record. Open-ended
    ("judged") records need no reference and are always "ok"."""
    evaluator = record.get("evaluator")
    if evaluator == JUDGED:
        return REFERENCE_OK
    if evaluator == LIKELIHOOD:
        return _targets_status(record)
    answer = record.get("answer")
    if answer is None or (isinstance(answer, str) and not answer.strip()):
        return REFERENCE_MISSING
    if evaluator not in EVALUATORS:
        return REFERENCE_UNPARSEABLE
    return REFERENCE_OK if reference_value(answer, evaluator) is not None else REFERENCE_UNPARSEABLE


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


MISSING_REFERENCE_MODES = ("raise", "wrong")


def evaluate(predictions: Sequence[Any], records: Sequence[Mapping[str, Any]],
             evaluator: Optional[str] = None, missing_reference: str = "raise") -> Dict[str, Any]:
    """Score predictions against records (each with "answer" and, unless `evaluator` is
    given, "evaluator").

    Returns {"accuracy", "n", "n_correct", "n_unparsed", "n_no_reference", "ci95": (low,
    high) Wilson 95% interval, "scores": per-item 0/1, "by_task": {task: {"accuracy", "n",
    "n_correct"}} (only when records carry a "task" field)}. Unparsed predictions count as
    wrong. A record without an answer raises ValueError, or with missing_reference="wrong"
    counts as wrong; either way an item whose reference cannot be read counts as wrong, and
    "n_no_reference" counts those items (they stay in "n": never dropped).
    """
    if missing_reference not in MISSING_REFERENCE_MODES:
        raise ValueError(f"missing_reference must be one of {MISSING_REFERENCE_MODES}, "
                         f"got {missing_reference!r}")
    if len(predictions) != len(records):
        raise ValueError(f"{len(predictions)} predictions for {len(records)} records")
    scores = []
    unparsed = no_reference = 0
    by_task: Dict[str, list] = {}
    for i, (pred, rec) in enumerate(zip(predictions, records)):
        ev = evaluator or rec.get("evaluator")
        status = reference_status({**rec, "evaluator": ev})
        if status == REFERENCE_MISSING and missing_reference == "raise":
            raise ValueError(f"record {i} ({rec.get('id', '?')}) has no answer")
        if ev is None and missing_reference == "raise":
            raise ValueError(f"record {i} ({rec.get('id', '?')}) names no evaluator and "
                             "none was given")
        if ev is not None:
            _check_text_evaluator(ev)  # a judged or likelihood item has no text answer to score
        if status != REFERENCE_OK:
            no_reference += 1
            s = 0.0
        else:
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
        "n_no_reference": no_reference,
        "ci95": wilson_interval(k, n),
        "scores": scores,
    }
    if by_task:
        result["by_task"] = {t: {"accuracy": sum(v) / len(v), "n": len(v),
                                 "n_correct": int(sum(v))} for t, v in sorted(by_task.items())}
    return result


# ---------------------------------------------------------------------------------------
# multiple choice by log-likelihood (TruthfulQA MC1 / MC2)
#
# A record with evaluator "likelihood_mc" carries "mc1_targets" and "mc2_targets", each
# {"choices": [option texts], "labels": [1 true / 0 false per option]} as the public
# TruthfulQA data does. The model scores each option by the log-probability of its tokens
# after the prompt, summed (not length-normalised); these functions do the rest.

MC_TARGETS = ("mc1_targets", "mc2_targets")


def _options(logprobs: Sequence[float], labels: Sequence[Any]) -> Tuple[list, list]:
    """Checked (log-probs as floats, labels as bools)."""
    lp = [float(x) for x in logprobs]
    truth = [bool(x) for x in labels]
    if len(lp) != len(truth) or not lp:
        raise ValueError(f"{len(lp)} log-probabilities for {len(truth)} options")
    if any(math.isnan(x) or x == math.inf for x in lp):
        raise ValueError(f"log-probabilities must be numbers <= 0 or -inf, got {lp}")
    if max(lp) == -math.inf:
        raise ValueError("every option has log-probability -inf")
    if not any(truth):
        raise ValueError("no option is labelled true")
    return lp, truth


def mc1_score(logprobs: Sequence[float], labels: Sequence[Any]) -> float:
    """1.0 when the option with the highest summed log-probability is a true one (the first
    of equal maxima, as an argmax over the listed order: TruthfulQA lists its true option
    first), else 0.0."""
    lp, truth = _options(logprobs, labels)
    best = max(range(len(lp)), key=lambda i: (lp[i], -i))
    return 1.0 if truth[best] else 0.0


def mc2_score(logprobs: Sequence[float], labels: Sequence[Any]) -> float:
    """The probability mass on the true options, normalised over all options:
    sum_true exp(lp) / sum_all exp(lp) (computed shifted by the maximum, so it never
    overflows)."""
    lp, truth = _options(logprobs, labels)
    top = max(lp)
    weights = [math.exp(x - top) for x in lp]
    return sum(w for w, t in zip(weights, truth) if t) / sum(weights)


def mc_continuations(record: Mapping[str, Any]) -> Dict[str, list]:
    """{"mc1": [...], "mc2": [...]}: the text whose summed log-probability scores each
    option, after the record's "instruction" ("Q: ...\nA:"): the option with a leading space."""
    return {key[:3]: [" " + c for c in record[key]["choices"]] for key in MC_TARGETS}


def _targets_status(record: Mapping[str, Any]) -> str:
    for key in MC_TARGETS:
        targets = record.get(key)
        if targets is None:
            return REFERENCE_MISSING
        try:
            choices, labels = list(targets["choices"]), list(targets["labels"])
        except (TypeError, KeyError):
            return REFERENCE_UNPARSEABLE
        if (len(choices) < 2 or len(choices) != len(labels) or not any(labels) or all(labels)
                or not all(isinstance(c, str) for c in choices)):
            return REFERENCE_UNPARSEABLE
    return REFERENCE_OK


def mean_interval(values: Sequence[float], z: float = 1.96) -> Tuple[float, float]:
    """Normal-approximation interval of a mean of values in [0, 1], clipped to [0, 1]."""
    n = len(values)
    if n < 2:
        return (0.0, 1.0)
    mean = sum(values) / n
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = z * sd / math.sqrt(n)
    return (max(0.0, mean - half), min(1.0, mean + half))


def evaluate_likelihood(logprobs: Sequence[Mapping[str, Sequence[float]]],
                        records: Sequence[Mapping[str, Any]]) -> Dict[str, Any]:
    """MC1 and MC2 of a split: logprobs[i] = {"mc1": [...], "mc2": [...]}, the summed
    log-probability of each option of records[i]'s mc1_targets / mc2_targets, in order.

    Returns {"accuracy" (= MC1), "n", "n_correct", "ci95" (Wilson), "scores" (MC1 0/1),
    "mc2", "mc2_ci95" (normal approximation), "mc2_scores"}. Raises ValueError on a record
    without valid targets or a list of the wrong length."""
    if len(logprobs) != len(records):
        raise ValueError(f"{len(logprobs)} log-probability entries for {len(records)} records")
    mc1, mc2 = [], []
    for i, (lp, rec) in enumerate(zip(logprobs, records)):
        if _targets_status(rec) != REFERENCE_OK:
            raise ValueError(f"record {i} ({rec.get('id', '?')}) has no valid mc1/mc2 targets")
        try:
            mc1.append(mc1_score(lp["mc1"], rec["mc1_targets"]["labels"]))
            mc2.append(mc2_score(lp["mc2"], rec["mc2_targets"]["labels"]))
        except (KeyError, TypeError) as e:
            raise ValueError(f"record {i} ({rec.get('id', '?')}): log-probabilities need "
                             f"'mc1' and 'mc2' lists ({e})") from None
        except ValueError as e:
            raise ValueError(f"record {i} ({rec.get('id', '?')}): {e}") from None
    n, k = len(mc1), int(sum(mc1))
    return {"accuracy": k / n if n else 0.0, "n": n, "n_correct": k, "ci95": wilson_interval(k, n),
            "scores": mc1, "mc2": sum(mc2) / n if n else 0.0, "mc2_ci95": mean_interval(mc2),
            "mc2_scores": mc2}


# ---------------------------------------------------------------------------------------
# near misses: wrong answers of the reference's own form (the judge audit, judge examples)

NUMERIC_OFFSETS = (1, -1, 2, -2, 10, -10)


def near_miss(record: dict, rng: np.random.Generator) -> str | None:
    """A wrong answer close to the reference, in the reference's own form; None when the
    evaluator has no near miss this module can write (exact strings, math expressions)."""
    from sparta_jax.tasks import LETTERS

    answer, evaluator = record.get("answer"), record.get("evaluator")
    if record.get("near_miss") is not None:  # the task's own natural mistake (tasks.py `reverse`)
        return str(record["near_miss"])
    if evaluator == "numeric":
        value = extract_number(str(answer))
        if value is None:
            return None
        offsets = [o for o in NUMERIC_OFFSETS if not (value >= 0 > value + o)]  # keep the sign
        wrong = value + offsets[int(rng.integers(len(offsets)))]
        return str(int(wrong)) if float(wrong).is_integer() else str(wrong)
    if evaluator == "choice":
        others = [x for x in LETTERS if x != str(answer).strip().upper()[:1]]
        return others[int(rng.integers(len(others)))]
    if evaluator == "cased":  # the same words in another letter case
        text = str(answer)
        others = [v for v in (text.upper(), text.lower(), text.title()) if v != text]
        return others[int(rng.integers(len(others)))] if others else None
    return None
