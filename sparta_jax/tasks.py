"""The project's own bundled tasks: simple questions with verifiable answers, no downloads.

Every item is generated from a seed (numpy's PCG64 through `np.random.default_rng`), so a run
can be scored without any data set on disk. The tasks are deliberately easy: the default
tribe member, SmolLM2-135M-Instruct, answers about a fifth of 2-digit arithmetic correctly
(docs/results.md, "Earlier measurements"), and a task only helps a demonstration when the tribe
is sometimes right.

Tasks (`TASK_NAMES`):
- `arithmetic`: 2-digit addition, 2-digit subtraction (never negative), 1-digit x 2-digit
  multiplication. Evaluator "numeric".
- `word_problems`: one-step word problems (buy more, give away, groups of). "numeric".
- `multiple_choice`: four options lettered A-D, either a simple factual / commonsense
  question from a small bundled bank (each used at most once per generated set) or an
  arithmetic question with near-miss distractors. Evaluator "choice"; the answer is a letter.
- `mixed`: each item picks one of the three above uniformly; its "task" field names the
  task it came from, its id starts with "mixed-".
- `case`: rewrite a two-word Title Case phrase in capital or in lowercase letters ("Write this
  phrase in capital letters: Green Apple" -> "GREEN APPLE"). Evaluator "cased" (exact, case
  kept). A verifiable instruction-following task whose check is within a 135M model's reach:
  a judge must read which case was asked and see which case the answer is in (no arithmetic).
  Not part of `mixed`.
- `reverse`: write a two-word Title Case phrase with its words in reverse order ("Write these
  words in reverse order: Green Apple" -> "Apple Green"). Evaluator "cased". Its natural
  mistake, the phrase copied unchanged, is the item's "near_miss" (the audit's and the judge
  examples' wrong answer).
- `rewrite`: each item is a `case` or a `reverse` item, half and half; "task" names the part.
  The specialists tribe's task (configs/specialists.py): experts of one part are weak at the
  other, so the tribe knows what its best member does not.

Item: {"id", "instruction", "answer", "task", "evaluator"}. Within one generated set no two
items share a question stem (the question without its answer instruction or options; in
`mixed`, "What is 3 + 4?" is never both an arithmetic and a multiple-choice item), so
`task_splits` gives disjoint splits. Generation is sequential, so a longer set extends a
shorter one with the same seed (a prefix property the splits rely on: see `task_splits`).
"""
from __future__ import annotations

from typing import Callable, Dict, List, Tuple

import numpy as np

TASK_NAMES = ("arithmetic", "word_problems", "multiple_choice", "mixed", "case", "reverse", "rewrite")

NUMERIC_SUFFIX = "Give the final answer as a number."
CHOICE_SUFFIX = "Answer with the letter (A, B, C or D)."
LETTERS = "ABCD"

# ---------------------------------------------------------------------------------------
# arithmetic


def _arithmetic_question(rng: np.random.Generator) -> Tuple[str, int]:
    """(question without suffix, answer)."""
    op = int(rng.integers(3))
    if op == 0:  # 2-digit + 2-digit
        a, b = int(rng.integers(10, 100)), int(rng.integers(10, 100))
        return f"What is {a} + {b}?", a + b
    if op == 1:  # 2-digit - 2-digit, a > b so the answer is positive
        a = int(rng.integers(11, 100))
        b = int(rng.integers(10, a))
        return f"What is {a} - {b}?", a - b
    a, b = int(rng.integers(2, 10)), int(rng.integers(10, 100))  # 1-digit x 2-digit
    return f"What is {a} * {b}?", a * b


def _arithmetic(rng: np.random.Generator) -> Tuple[str, dict]:
    question, answer = _arithmetic_question(rng)
    return question, {"instruction": f"{question} {NUMERIC_SUFFIX}", "answer": str(answer),
                      "evaluator": "numeric"}


# ---------------------------------------------------------------------------------------
# word problems

_NAMES = ("Tom", "Anna", "Sam", "Maria", "Ben", "Lily", "Omar", "Mei", "Jack", "Sara",
          "Leo", "Nina", "Ravi", "Emma", "Carlos", "Zoe")
_ITEMS = ("apples", "pencils", "marbles", "stickers", "books", "cookies", "coins", "cards",
          "oranges", "balloons", "shells", "toy cars")
_CONTAINERS = ("boxes", "bags", "baskets", "jars", "packs")

# One-step templates per operation; {n} a name, {a} {b} numbers, {x} items, {c} containers.
_ADD_TEMPLATES = (
    "{n} has {a} {x} and buys {b} more. How many {x} does {n} have now?",
    "There are {a} {x} in a basket. {n} puts {b} more {x} in the basket. "
    "How many {x} are in the basket now?",
    "{n} found {a} {x} on Monday and {b} {x} on Tuesday. How many {x} did {n} find in all?",
)
_SUB_TEMPLATES = (
    "{n} has {a} {x} and gives {b} of them to a friend. How many {x} does {n} have left?",
    "{n} had {a} {x} and lost {b} of them. How many {x} does {n} have now?",
    "There are {a} {x} on a table. {n} takes {b} of them away. "
    "How many {x} are left on the table?",
)
_MUL_TEMPLATES = (
    "{n} has {a} {c}. Each of the {c} holds {b} {x}. How many {x} does {n} have in total?",
    "{n} buys {a} {c} of {x}. There are {b} {x} in each of the {c}. "
    "How many {x} does {n} buy?",
)


def _word_problem(rng: np.random.Generator) -> Tuple[str, dict]:
    op = int(rng.integers(3))
    name = _NAMES[int(rng.integers(len(_NAMES)))]
    thing = _ITEMS[int(rng.integers(len(_ITEMS)))]
    if op == 0:
        template = _ADD_TEMPLATES[int(rng.integers(len(_ADD_TEMPLATES)))]
        a, b = int(rng.integers(2, 60)), int(rng.integers(2, 40))
        answer = a + b
    elif op == 1:
        template = _SUB_TEMPLATES[int(rng.integers(len(_SUB_TEMPLATES)))]
        a = int(rng.integers(5, 80))
        b = int(rng.integers(1, a))
        answer = a - b
    else:
        template = _MUL_TEMPLATES[int(rng.integers(len(_MUL_TEMPLATES)))]
        a, b = int(rng.integers(2, 10)), int(rng.integers(2, 13))
        answer = a * b
    container = _CONTAINERS[int(rng.integers(len(_CONTAINERS)))]
    question = template.format(n=name, a=a, b=b, x=thing, c=container)
    return question, {"instruction": f"{question} {NUMERIC_SUFFIX}", "answer": str(answer),
                      "evaluator": "numeric"}


# ---------------------------------------------------------------------------------------
# multiple choice

# (question, correct option, three wrong options). Simple facts a small model may know.
FACT_BANK = (
    ("What is the capital of France?", "Paris", ("London", "Berlin", "Madrid")),
    ("What is the capital of Japan?", "Tokyo", ("Beijing", "Seoul", "Bangkok")),
    ("What is the capital of Italy?", "Rome", ("Milan", "Athens", "Vienna")),
    ("What is the capital of Germany?", "Berlin", ("Munich", "Paris", "Warsaw")),
    ("What is the capital of Spain?", "Madrid", ("Barcelona", "Lisbon", "Rome")),
    ("What is the capital of the United Kingdom?", "London", ("Dublin", "Paris", "Edinburgh")),
    ("What is the capital of Egypt?", "Cairo", ("Nairobi", "Rabat", "Tunis")),
    ("What is the capital of Canada?", "Ottawa", ("Toronto", "Vancouver", "Chicago")),
    ("How many days are in a week?", "7", ("5", "6", "10")),
    ("How many months are in a year?", "12", ("10", "11", "13")),
    ("How many hours are in a day?", "24", ("12", "20", "36")),
    ("How many minutes are in an hour?", "60", ("30", "50", "100")),
    ("How many legs does a spider have?", "8", ("6", "4", "10")),
    ("How many legs does a dog have?", "4", ("2", "6", "8")),
    ("How many sides does a triangle have?", "3", ("4", "5", "6")),
    ("How many sides does a square have?", "4", ("3", "5", "6")),
    ("What color is the sky on a clear day?", "Blue", ("Green", "Red", "Yellow")),
    ("What color is grass?", "Green", ("Blue", "Purple", "Orange")),
    ("What color is a ripe banana?", "Yellow", ("Blue", "Black", "Purple")),
    ("Which animal says \"moo\"?", "Cow", ("Dog", "Cat", "Duck")),
    ("Which animal barks?", "Dog", ("Cow", "Fish", "Horse")),
    ("Which animal is known as the king of the jungle?", "Lion", ("Mouse", "Rabbit", "Goat")),
    ("Which animal can fly?", "Bird", ("Fish", "Cow", "Snake")),
    ("Which animal lives in water and has fins?", "Fish", ("Dog", "Horse", "Cat")),
    ("What do bees make?", "Honey", ("Milk", "Bread", "Cheese")),
    ("What is frozen water called?", "Ice", ("Steam", "Sand", "Glass")),
    ("What gas do people need to breathe to live?", "Oxygen", ("Helium", "Neon", "Argon")),
    ("Which planet do we live on?", "Earth", ("Mars", "Venus", "Jupiter")),
    ("Which planet is known as the Red Planet?", "Mars", ("Venus", "Saturn", "Neptune")),
    ("What is the largest ocean on Earth?", "Pacific Ocean",
     ("Atlantic Ocean", "Indian Ocean", "Arctic Ocean")),
    ("What star is at the center of our solar system?", "The Sun",
     ("The Moon", "Mars", "Polaris")),
    ("What do you use to see?", "Eyes", ("Ears", "Nose", "Hands")),
    ("What do you use to hear?", "Ears", ("Eyes", "Feet", "Knees")),
    ("Which season comes after winter?", "Spring", ("Summer", "Autumn", "Winter")),
    ("Which is the coldest?", "Ice", ("Fire", "Hot soup", "Sunlight")),
    ("Which of these is a fruit?", "Apple", ("Carrot", "Potato", "Onion")),
    ("Which of these is a vegetable?", "Carrot", ("Apple", "Banana", "Grape")),
    ("Which of these is a mammal?", "Whale", ("Shark", "Eagle", "Frog")),
    ("What is the opposite of hot?", "Cold", ("Warm", "Big", "Fast")),
    ("What is the opposite of up?", "Down", ("Left", "High", "Over")),
    ("What is the boiling point of water at sea level in degrees Celsius?", "100",
     ("50", "0", "212")),
    ("What is the freezing point of water in degrees Celsius?", "0", ("10", "32", "100")),
    ("What do plants need from the sun to grow?", "Light", ("Sand", "Noise", "Plastic")),
    ("Which of these is used to write?", "Pencil", ("Spoon", "Shoe", "Pillow")),
    ("Where do fish live?", "In water", ("In trees", "In the desert", "In the sky")),
    ("What is 10 times 10?", "100", ("20", "110", "1000")),
    ("How many letters are in the English alphabet?", "26", ("24", "25", "30")),
    ("Which shape is round?", "Circle", ("Square", "Triangle", "Rectangle")),
)


def _format_choice(question: str, options: List[str]) -> str:
    lines = [question] + [f"{LETTERS[i]}) {opt}" for i, opt in enumerate(options)]
    return "\n".join(lines + [CHOICE_SUFFIX])


def _arithmetic_distractors(rng: np.random.Generator, answer: int) -> List[int]:
    """Three distinct near misses (off by 1, 2 or 10 either way; never negative)."""
    candidates = [answer + d for d in (-10, -2, -1, 1, 2, 10) if answer + d >= 0]
    picked = rng.permutation(len(candidates))[:3]
    return [candidates[int(i)] for i in picked]


def _multiple_choice_factory() -> Callable[[np.random.Generator], Tuple[str, dict]]:
    """A generator with its own record of which bank questions it has used."""
    unused = list(range(len(FACT_BANK)))

    def make(rng: np.random.Generator) -> Tuple[str, dict]:
        use_fact = bool(rng.random() < 0.3) and bool(unused)
        if use_fact:
            pick = unused.pop(int(rng.integers(len(unused))))
            stem, correct, wrong = FACT_BANK[pick]
            options = [correct] + list(wrong)
        else:
            stem, answer = _arithmetic_question(rng)
            options = [str(answer)] + [str(d) for d in _arithmetic_distractors(rng, answer)]
        order = rng.permutation(4)
        shuffled = [options[int(i)] for i in order]
        letter = LETTERS[int(np.flatnonzero(order == 0)[0])]
        instruction = _format_choice(stem, shuffled)
        return stem, {"instruction": instruction, "answer": letter, "evaluator": "choice"}

    return make


# ---------------------------------------------------------------------------------------
# case

_ADJECTIVES = ("Green", "Small", "Happy", "Quiet", "Bright", "Cold", "Warm", "Old", "Young", "Fast",
               "Slow", "Tall", "Short", "Soft", "Hard", "Sweet", "Dark", "Light", "Empty", "Full",
               "Brave", "Calm", "Clean", "Wild", "Gentle", "Heavy", "Golden", "Silver", "Round", "Sharp",
               "Lucky", "Busy", "Sunny", "Rainy", "Little", "Giant", "Purple", "Yellow", "Blue", "Red")
_NOUNS = ("Apple", "River", "Garden", "Window", "Mountain", "Bridge", "Candle", "Forest", "Pencil", "Horse",
          "Basket", "Castle", "Button", "Cloud", "Dragon", "Engine", "Feather", "Guitar", "Island", "Jacket",
          "Kettle", "Ladder", "Market", "Needle", "Orange", "Pillow", "Rabbit", "Saddle", "Tiger", "Violin",
          "Wagon", "Whistle", "Bottle", "Carpet", "Dolphin", "Flower", "Hammer", "Lemon", "Mirror", "Planet",
          "Rocket", "Shadow", "Teacup", "Tunnel", "Blanket", "Cookie", "Harbor", "Lantern", "Meadow", "Pebble")
CASE_INSTRUCTIONS = {"upper": "Write this phrase in capital letters: {phrase}",
                     "lower": "Write this phrase in lowercase letters: {phrase}"}


def _phrase(rng: np.random.Generator) -> str:
    return f"{_ADJECTIVES[int(rng.integers(len(_ADJECTIVES)))]} {_NOUNS[int(rng.integers(len(_NOUNS)))]}"


def _case(rng: np.random.Generator) -> Tuple[str, dict]:
    phrase = _phrase(rng)
    case = ("upper", "lower")[int(rng.integers(2))]
    instruction = CASE_INSTRUCTIONS[case].format(phrase=phrase)
    answer = phrase.upper() if case == "upper" else phrase.lower()
    return instruction, {"instruction": instruction, "answer": answer, "evaluator": "cased"}


REVERSE_INSTRUCTION = "Write these words in reverse order: {phrase}"


def _reverse(rng: np.random.Generator) -> Tuple[str, dict]:
    phrase = _phrase(rng)
    instruction = REVERSE_INSTRUCTION.format(phrase=phrase)
    answer = " ".join(reversed(phrase.split()))
    return instruction, {"instruction": instruction, "answer": answer, "evaluator": "cased", "near_miss": phrase}


def wrong_forms(item: dict) -> List[str] | None:
    """Every wrong rewrite of a `case` or `reverse` item's phrase: its two words in either order,
    each in capital, lowercase or Title Case letters, less the right answer (five forms). These are
    the mistakes members of a `rewrite` tribe make (a reverse expert asked for capitals writes the
    words reversed; a case expert asked to reverse writes them in another case), where the item's
    single near miss is only one of them. None for items of other tasks."""
    if item.get("task") not in ("case", "reverse"):
        return None
    words = item["instruction"].split(": ", 1)[1].split()
    forms = [f(" ".join(order)) for order in (words, words[::-1]) for f in (str.upper, str.lower, str.title)]
    return [f for f in dict.fromkeys(forms) if f != item["answer"]]


# ---------------------------------------------------------------------------------------


def _generators(name: str) -> Callable[[np.random.Generator], Tuple[str, str, dict]]:
    """A stateful item maker for `name` returning (task, question stem, item); the stem
    (the question without answer instructions or options) is what must not repeat."""
    if name == "arithmetic":
        return lambda rng: ("arithmetic", *_arithmetic(rng))
    if name == "word_problems":
        return lambda rng: ("word_problems", *_word_problem(rng))
    if name == "multiple_choice":
        mc = _multiple_choice_factory()
        return lambda rng: ("multiple_choice", *mc(rng))
    if name == "mixed":
        parts = [_generators(n) for n in ("arithmetic", "word_problems", "multiple_choice")]
        return lambda rng: parts[int(rng.integers(len(parts)))](rng)
    if name == "case":
        return lambda rng: ("case", *_case(rng))
    if name == "reverse":
        return lambda rng: ("reverse", *_reverse(rng))
    if name == "rewrite":
        parts = [_generators(n) for n in ("case", "reverse")]
        return lambda rng: parts[int(rng.integers(len(parts)))](rng)
    raise ValueError(f"unknown task {name!r}; known tasks: {', '.join(TASK_NAMES)}")


def generate_task(name: str, n: int, seed: int = 0) -> List[dict]:
    """`n` distinct items of task `name`, deterministic from `seed`.

    Items are drawn one at a time from one random stream and a repeat of an earlier
    question is skipped, so `generate_task(name, k, s)` is a prefix of
    `generate_task(name, n, s)` for k <= n. Raises ValueError when `n` is more than the
    task can produce (a few thousand distinct questions at least for every task).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    make = _generators(name)
    rng = np.random.default_rng(seed)
    seen = set()
    items: List[dict] = []
    misses = 0
    while len(items) < n:
        task, key, item = make(rng)
        if key in seen:
            misses += 1
            if misses > 1000 + 20 * n:
                raise ValueError(f"task {name!r} ran out of distinct questions after "
                                 f"{len(items)} items (asked for {n})")
            continue
        seen.add(key)
        items.append({"id": f"{name}-s{seed}-{len(items):06d}",
                      "instruction": item["instruction"], "answer": item["answer"],
                      "task": task, "evaluator": item["evaluator"],
                      **({"near_miss": item["near_miss"]} if "near_miss" in item else {})})
    return items


def task_splits(name: str, *, train: int, dev: int, test: int,
                seed: int = 0) -> Dict[str, List[dict]]:
    """Disjoint train / dev / test splits of a bundled task.

    One set of `test + dev + train` distinct items is generated and cut in that order
    (test first), so test and dev stay the same when only the train size changes.
    """
    for label, size in (("train", train), ("dev", dev), ("test", test)):
        if size < 0:
            raise ValueError(f"{label} size must be >= 0, got {size}")
    items = generate_task(name, train + dev + test, seed)
    return {"train": items[test + dev:], "dev": items[test:test + dev], "test": items[:test]}
