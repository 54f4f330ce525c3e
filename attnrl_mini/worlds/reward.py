"""Outcome reward: is the final answer of a response right? (paper §4.1, docs/algorithm.md §d.1)

The paper grades with "a hybrid of DeepScaleR's verifier and Math-Verify". Here:

1. Take the text after the last `</think>` (the whole text if there is none).
2. The model's answer is the content of the **last** `\\boxed{...}` (or `\\fbox{...}`), found by
   brace matching. No boxed answer -> incorrect (counted as a *parse failure*).
3. Compare with the ground truth (a string, or a list of acceptable strings: any may match):
   a. both sides normalised the way Hendrycks' MATH / DeepScaleR's "mathd" grader does
      (`\\dfrac` -> `\\frac`, no `\\left`/`\\right`, no units, no spaces, ...): equal -> correct;
      both plain decimal numbers but different -> incorrect (no need for sympy);
      a model's `100,200` is a list, not the number 100200 (see "Commas" below);
      a long answer (over LONG_ANSWER_CHARS) that is a polynomial or rational expression, like its
      gold, is decided by an exact identity test (see "Long answers" below);
   b. else Math-Verify: `verify(parse("\\boxed{gold}"), parse("\\boxed{answer}"))` (sympy
      equivalence of numbers, expressions, intervals, sets, matrices, ...).

Step 3b can take very long: sympy happily tries to evaluate `9^{9^{9}}` for minutes. Math-Verify's
own timeout uses `signal.alarm`, which works only on the main thread, and other RL projects have
shipped runs whose every reward silently became 0 (the alarm raised in a thread) or that hung. So:

- `is_correct(text, answer)` is the pure, in-process grading function (no timeout at all);
- `Grader` runs step 3b in worker *processes*, each call with a wall-clock timeout. A call that
  times out counts as incorrect and as a timeout, and its worker is killed (SIGKILL, which no
  sympy loop can ignore) and replaced. Steps 1, 2 and 3a are cheap and run in the caller.

Commas. A gold answer's thousands separators are trusted (datasets write `58,500` for a number). A
model's comma groups are read as one number only where no list reading exists: a later group that
starts with 0 (`10,080`, `1,000`: no list element is written `080`), or LaTeX's number spacing
(`32,\\!348`, `1{,}000`). Otherwise `100,200` is the list 100, 200: it equals a gold written the
same way, never the plain number 100200 (Math-Verify would read it as 100200; the cheap path says
no first). The price: a model writing `2,500` for 2500 is graded wrong.

Long answers. Math-Verify's parse of a 30,000-factor `x*x*...*x` takes seconds and its verify says
"different" already at 1,000 factors, so a long answer equal to its gold would score 0 by a timeout
or a wrong verdict. When the answer or the gold is longer than LONG_ANSWER_CHARS and both are
polynomial or rational expressions (integers, one-letter variables other than e and i, + - * /,
`\\cdot`, `\\times`, `\\frac`, integer powers, brackets, implicit products), they are compared
by evaluating both at 3 fixed pseudo-random points modulo the prime 2^61 - 1: equal expressions
always agree, different ones agree with probability <= (degree / 2^61) per point (Schwartz-Zippel),
so the verdict is exact for any degree a response can write. Anything else still goes to Math-Verify.

Empty or truncated responses are simply incorrect (no boxed answer), never errors. As in the
release, a truncated response that does contain a complete `\\boxed{}` is graded like any other.
"""
from __future__ import annotations

import logging
import multiprocessing
import re
import time
import unicodedata
from collections import deque
from dataclasses import dataclass
from decimal import Decimal
from multiprocessing.connection import Connection, wait

Answer = str | list[str]

# ----------------------------------------------------------------------------------------------
# 1–2. Extraction


def _braced_content(text: str, open_brace: int) -> str | None:
    """Content of the brace group that opens at text[open_brace] == "{", or None if it never closes.

    A backslash escapes the next character, so `\\{` and `\\}` (literal braces in LaTeX sets)
    don't count as grouping braces.
    """
    depth = 0
    i = open_brace
    while i < len(text):
        char = text[i]
        if char == "\\":
            i += 2  # skip the escaped character
            continue
        if char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return text[open_brace + 1 : i]
        i += 1
    return None


_BOXED = re.compile(r"\\(?:boxed|fbox)\s*\{")


def last_boxed(text: str) -> str | None:
    """Content of the last `\\boxed{...}` / `\\fbox{...}` in text; None if there is none or it is unclosed."""
    matches = list(_BOXED.finditer(text))
    if not matches:
        return None
    return _braced_content(text, matches[-1].end() - 1)


def extract_boxed(text: str | None) -> str | None:
    """The model's final answer: the last `\\boxed{}` after the last `</think>` (None if absent).

    >>> extract_boxed("<think>maybe \\\\boxed{1}</think> so \\\\boxed{\\\\frac{1}{2}}.")
    '\\\\frac{1}{2}'
    """
    if not text:
        return None
    answer_part = text.rsplit("</think>", 1)[-1]
    content = last_boxed(answer_part)
    if content is None or not content.strip():
        return None
    return content.strip()


def gold_answers(answer: Answer) -> list[str]:
    """The acceptable ground-truth strings (a gold that itself contains `\\boxed{}` is unwrapped)."""
    golds = [answer] if isinstance(answer, str) else list(answer) if isinstance(answer, (list, tuple)) else []
    if not golds or not all(isinstance(g, str) for g in golds):
        raise ValueError(f"ground truth must be a string or a non-empty list of strings, got {answer!r}")
    unwrapped = []
    for gold in golds:
        boxed = last_boxed(gold) if "\\boxed" in gold or "\\fbox" in gold else None
        unwrapped.append((boxed if boxed is not None else gold).strip())
    return unwrapped


# ----------------------------------------------------------------------------------------------
# 3a. String normalisation (the "mathd" normaliser of Hendrycks' MATH, as DeepScaleR uses it)

_TEXT_COMMANDS = r"\\(?:text|textbf|textrm|mathrm|mbox|operatorname)"


def _unwrap_text(s: str) -> str:
    """`\\text{(C)}` -> `(C)`: unwrap text-like commands (only brace-free contents)."""
    return re.sub(_TEXT_COMMANDS + r"\s*\{([^{}]*)\}", r"\1", s)


# Unicode math symbols a model (or a dataset) may write instead of LaTeX. A command gets a trailing
# space so that "πr" does not become the unknown command "\\pir".
_UNICODE_LATEX = {"√": "\\sqrt", "∛": "\\sqrt[3]", "π": "\\pi ", "∞": "\\infty ", "−": "-", "×": "\\times ",
                  "·": "\\cdot ", "⋅": "\\cdot ", "≤": "\\le ", "≥": "\\ge ", "≠": "\\ne ", "±": "\\pm ",
                  "°": "^\\circ ", "²": "^2", "³": "^3"}


def unicode_math_to_latex(s: str) -> str:
    """`½` -> `\\frac{1}{2}`, `√2` -> `\\sqrt2`, `√(x+1)` -> `\\sqrt{x+1}`, `π` -> `\\pi`, `−` -> `-`, ..."""
    out = []
    for char in s:
        if unicodedata.name(char, "").startswith("VULGAR FRACTION"):   # ½ -> NFKC "1⁄2"
            num, _, den = unicodedata.normalize("NFKC", char).partition("\u2044")
            out.append(f"\\frac{{{num}}}{{{den}}}")
        else:
            out.append(_UNICODE_LATEX.get(char, char))
    s = "".join(out)
    return re.sub(r"\\sqrt(\[3\])?\(([^()]*)\)", r"\\sqrt\1{\2}", s)    # \sqrt(x+1) -> \sqrt{x+1}


_VARIABLE = re.compile(r"[A-Za-z][A-Za-z0-9]?")   # the left side of "x = 5" (not "1 = 5")


def normalize_answer(answer: str, thousands: bool = False) -> str:
    """Canonical string form of an answer, used for the cheap exact-match test.

    Only transformations that never make two different answers equal, up to the conventions of
    MATH answers: units, degree and percent signs, a short `x =` and thousands separators are not
    part of the value. Comma groups are dropped where they can only be separators ("10,080",
    "32,\\!348" -> digits); `thousands=True` (a gold answer) drops them always ("58,500" -> 58500),
    while a model's "100,200" stays a list (module docstring, "Commas").
    """
    s = unicode_math_to_latex(answer).strip()
    # LaTeX's number spacing says a comma groups digits: "32,\!348", "1{,}000" (kept as a mark until below)
    s = re.sub(r"(?<=\d),\\!\s*(?=\d{3})|(?<=\d)\{,\}(?=\d{3})", "\x00", s)
    s = s.replace("\n", "").replace("\\!", "").replace("\\,", "").replace("\\;", "")
    s = re.sub(r"(?<!\\)\\ |~", " ", s)                         # "\ " and "~" are spaces
    s = re.sub(r"\\[td]frac", r"\\frac", s)                      # \dfrac, \tfrac -> \frac
    s = s.replace("\\left.", "").replace("\\right.", "")
    s = re.sub(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])", "", s)   # \left( -> (
    s = re.sub(r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ", "", s)       # 90^\circ -> 90
    s = s.replace("\\$", "").replace("$", "")
    s = s.replace("\\%", "").replace("%", "")
    s = re.sub(_TEXT_COMMANDS + r"\s*\{\s+[^{}]*\}\s*(\^\s*\{?-?\d\}?)?$", "", s)  # "10\text{ cm}^2" -> "10"
    s = _unwrap_text(s)
    s = s.strip().rstrip(".").strip()                              # "...\}$." -> "...\}"
    if s.count("=") == 1 and _VARIABLE.fullmatch(s.split("=")[0].strip()):   # "x = 5" -> "5"
        s = s.split("=")[1]
    s = re.sub(r"\\sqrt\s*(\w)", r"\\sqrt{\1}", s)                 # \sqrt2 -> \sqrt{2}
    s = s.replace(" ", "")
    s = re.sub(r"\\frac(\d)(\d)", r"\\frac{\1}{\2}", s)            # \frac12 -> \frac{1}{2}
    s = re.sub(r"\\frac(\d)\{", r"\\frac{\1}{", s)                 # \frac1{2} -> \frac{1}{2}
    s = re.sub(r"\\frac\{([^{}]*)\}(\d)", r"\\frac{\1}{\2}", s)    # \frac{1}2 -> \frac{1}{2}
    if re.fullmatch(r"-?\d+/\d+", s):                              # 3/4 -> \frac{3}{4}
        sign, (num, den) = ("-" if s[0] == "-" else ""), s.lstrip("-").split("/")
        s = f"{sign}\\frac{{{num}}}{{{den}}}"
    if re.fullmatch(r"-?\d{1,3}([,\x00]\d{3})+(\.\d+)?", s) and (
            thousands or "\x00" in s or re.search(r"[,\x00]0", s)):    # 10,080 -> 10080; 100,200 stays a list
        s = s.replace(",", "").replace("\x00", "")
    s = s.replace("\x00", ",")
    if s.startswith("."):                                          # .5 -> 0.5
        s = "0" + s
    return s


# ----------------------------------------------------------------------------------------------
# 3b. Math-Verify (slow; run it through Grader for a timeout)

# Our timeout is the worker process's; Math-Verify's signal-based one is switched off, and so is its
# warning that says so.
logging.getLogger("math_verify").setLevel(logging.ERROR)


def math_verify_equal(pred: str, gold: str) -> bool:
    """Math-Verify's verdict on `pred` against `gold` (both bare answers, no `\\boxed`). No timeout."""
    from math_verify import parse, verify  # imported here: the Grader's parent process never needs it

    pred, gold = unicode_math_to_latex(pred), unicode_math_to_latex(gold)
    # Math-Verify compares only the right side of an equation with a gold that is none, so "1 = 5"
    # would answer 5. Unless the left side is a variable ("x = 5"), both sides must equal the gold.
    if pred.count("=") == 1 and "=" not in gold and not _VARIABLE.fullmatch(pred.split("=")[0].strip()):
        lhs, rhs = pred.split("=")
        return math_verify_equal(lhs, gold) and math_verify_equal(rhs, gold)
    gold_parsed = parse("\\boxed{" + gold + "}", parsing_timeout=None)
    pred_parsed = parse("\\boxed{" + pred + "}", parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def _verify_any(pred: str, golds: list[str]) -> bool:
    return any(math_verify_equal(pred, gold) for gold in golds)


_PLAIN_NUMBER = re.compile(r"-?\d+(\.\d+)?")


_COMMA_LIST = re.compile(r"-?\d{1,3}(,\d{3})+")
LONG_ANSWER_CHARS = 300     # longer answers (or golds) may be settled by the identity test


def decide_without_math_verify(pred: str, golds: list[str]) -> bool | None:
    """The cheap path: True if the normalised strings match; False if the answer and every gold
    are plain decimal numbers that differ (AIME-style integers: no sympy needed), or the answer is a
    comma list like "100,200" and every gold a plain number; a long polynomial answer by the identity
    test; else None."""
    normalized = normalize_answer(pred)
    normalized_golds = [form for gold in golds for form in {normalize_answer(gold, thousands=True),
                                                            normalize_answer(gold)}]
    if normalized in normalized_golds:
        return True
    plain_golds = [g for g in normalized_golds if _PLAIN_NUMBER.fullmatch(g)]
    if _PLAIN_NUMBER.fullmatch(normalized) and len(plain_golds) == len(normalized_golds):
        return any(Decimal(normalized) == Decimal(gold) for gold in normalized_golds)  # "2.0" == "2"
    if _COMMA_LIST.fullmatch(normalized) and len(plain_golds) == len(normalized_golds):
        return False   # "100,200" is a list of two numbers, not 100200 (Math-Verify would drop the comma)
    if max(len(pred), *map(len, golds)) > LONG_ANSWER_CHARS:
        verdicts = [identical_polynomials(normalized, gold) for gold in normalized_golds]
        if True in verdicts:
            return True
        if verdicts and all(v is False for v in verdicts):
            return False
    return None


# ----------------------------------------------------------------------------------------------
# The identity test for long polynomial answers (module docstring, "Long answers")

_PRIME = 2**61 - 1
_POINTS = 3
_TOKEN = re.compile(r"\d+|\\(?:cdot|times|frac)(?![A-Za-z])|[A-Za-z]|[-+*/^(){}]")


class _NotPolynomial(Exception):
    pass


def _tokens(s: str) -> list[str]:
    tokens, at = [], 0
    while at < len(s):
        m = _TOKEN.match(s, at)
        if m is None or m.group() in ("e", "i"):   # anything else (\pi, ".", "=", ",", e, i): not this test's
            raise _NotPolynomial
        tokens.append({"\\cdot": "*", "\\times": "*"}.get(m.group(), m.group()))
        at = m.end()
    return tokens


def _evaluate(tokens: list[str], point: dict[str, int]) -> int:
    """The expression's value modulo _PRIME with each variable set to point[letter]; recursive descent
    with loops for sums and products (30,000 factors need no deep recursion)."""
    pos = 0

    def peek():
        return tokens[pos] if pos < len(tokens) else None

    def take(expected=None):
        nonlocal pos
        token = peek()
        if token is None or (expected is not None and token != expected):
            raise _NotPolynomial
        pos += 1
        return token

    def group(depth):   # "{...}" or "(...)"
        closing = {"{": "}", "(": ")"}.get(take())
        if closing is None:
            raise _NotPolynomial
        value = expression(depth + 1)
        take(closing)
        return value

    def atom(depth):
        if depth > 100:
            raise _NotPolynomial
        token = peek()
        if token is None:
            raise _NotPolynomial
        if token.isdigit():
            return int(take()) % _PRIME
        if token.isalpha():
            return point.setdefault(take(), 0)
        if token == "\\frac":
            take()
            num, den = group(depth), group(depth)
            if den == 0:
                raise _NotPolynomial
            return num * pow(den, -1, _PRIME) % _PRIME
        return group(depth)

    def exponent() -> int:   # an integer literal: "^2", "^{30000}", "^{-1}"
        if peek() == "{":
            take()
            sign = -1 if peek() == "-" and take() else 1
            digits = take()
            take("}")
        else:
            sign, digits = 1, take()
            if len(digits) > 1:   # LaTeX's x^23 is x^2 * 3: ambiguous, not this test's
                raise _NotPolynomial
        if not digits.isdigit():
            raise _NotPolynomial
        return sign * int(digits)

    def power(depth):
        base = atom(depth)
        if peek() == "^":
            take()
            e = exponent()
            if e < 0 and base == 0:
                raise _NotPolynomial
            base = pow(base, e, _PRIME) if e >= 0 else pow(pow(base, -1, _PRIME), -e, _PRIME)
        return base

    def term(depth):
        sign = 1
        while peek() in ("-", "+"):
            sign = -sign if take() == "-" else sign
        value = power(depth) * sign % _PRIME
        while peek() is not None and peek() not in ("+", "-", ")", "}"):
            if peek() in ("*", "/"):
                op = take()
                factor = power(depth)
            else:   # an implicit product: 2x, x(y+1)
                op, factor = "*", power(depth)
            if op == "/":
                if factor == 0:
                    raise _NotPolynomial
                factor = pow(factor, -1, _PRIME)
            value = value * factor % _PRIME
        return value

    def expression(depth):
        value = term(depth)
        while peek() in ("+", "-"):
            sign = 1 if take() == "+" else -1
            value = (value + sign * term(depth)) % _PRIME
        return value

    value = expression(0)
    if pos != len(tokens):
        raise _NotPolynomial
    return value


def identical_polynomials(a: str, b: str) -> bool | None:
    """Are two normalised answers the same polynomial / rational expression? None when either is
    not one (module docstring, "Long answers": exact up to probability degree / 2^61 per point)."""
    import random

    try:
        ta, tb = _tokens(a), _tokens(b)
        letters = sorted({t for t in ta + tb if t.isalpha()})
        rng = random.Random(20240927)   # fixed points: the same verdict every time
        for _ in range(_POINTS):
            point = {x: rng.randrange(2, _PRIME) for x in letters}
            if _evaluate(ta, point) != _evaluate(tb, point):
                return False
        return True
    except _NotPolynomial:
        return None


def is_correct(response_text: str | None, answer: Answer) -> bool:
    """Is the final `\\boxed{}` answer of response_text equal to the ground truth? In-process, no timeout."""
    golds = gold_answers(answer)
    pred = extract_boxed(response_text)
    if pred is None:
        return False
    verdict = decide_without_math_verify(pred, golds)
    return verdict if verdict is not None else _verify_any(pred, golds)


# ----------------------------------------------------------------------------------------------
# The Grader: step 3b in worker processes, each call with a timeout.


def _worker_main(conn: Connection) -> None:
    """Worker process loop: receive (task_id, pred, golds), send back ("result", (task_id, verdict)).

    Messages to the parent: ("startup_error", why) | ("ready", None) | ("result", (task_id, verdict)).
    """
    try:
        math_verify_equal("1", "1")  # import sympy / the LaTeX parser before saying "ready"
    except Exception as error:  # e.g. math-verify not installed
        conn.send(("startup_error", repr(error)))
        return
    conn.send(("ready", None))
    while True:
        message = conn.recv()
        if message is None:  # shut down
            return
        task_id, pred, golds = message
        try:
            verdict = _verify_any(pred, golds)
        except Exception:  # a Math-Verify bug on odd input is a wrong answer, not a crash
            verdict = False
        conn.send(("result", (task_id, verdict)))


@dataclass
class _Worker:
    process: multiprocessing.Process
    conn: Connection
    ready: bool = False
    task_id: int | None = None   # the task it is working on
    deadline: float = 0.0        # time.monotonic() by which it must answer


class Grader:
    """Grades responses in a pool of worker processes, with a timeout per Math-Verify call.

        with Grader(workers=2, timeout=5.0) as grader:
            rewards = grader.grade(["... \\\\boxed{\\\\frac12}"], ["0.5"])   # [1.0]

    stats(): graded, correct, timeouts (calls cut off: counted as incorrect), parse_failures (no
    boxed answer), fast_path (settled without Math-Verify: equal normalised strings, or two
    different plain numbers), worker_calls (Math-Verify calls), errors (a worker died, e.g. out of
    memory: counted as incorrect).
    `fast_path=False` sends every answer to Math-Verify (used to test Math-Verify on the gold answers).
    """

    STARTUP_TIMEOUT = 120.0  # seconds for a fresh worker to import sympy and Math-Verify

    def __init__(self, workers: int = 2, timeout: float = 5.0, fast_path: bool = True):
        if workers < 1:
            raise ValueError(f"Grader needs at least 1 worker process, got workers={workers}")
        if timeout <= 0:
            raise ValueError(f"Grader timeout must be positive, got {timeout}")
        self.n_workers = workers
        self.timeout = timeout
        self.fast_path = fast_path
        # spawn: a fresh interpreter (safe after CUDA / vLLM started) that imports this module, and
        # the main script too: scripts that grade need an `if __name__ == "__main__":` guard.
        self._ctx = multiprocessing.get_context("spawn")
        self._workers: list[_Worker] = []
        self._counts = dict(graded=0, correct=0, timeouts=0, parse_failures=0, fast_path=0,
                            worker_calls=0, errors=0)

    # -- public API --------------------------------------------------------------------------------

    def grade(self, texts: list[str | None], answers: list[Answer]) -> list[float]:
        """Reward in {0.0, 1.0} for each (response text, ground truth) pair."""
        if len(texts) != len(answers):
            raise ValueError(f"grade() got {len(texts)} texts but {len(answers)} answers")
        rewards = [0.0] * len(texts)
        slow_tasks: list[tuple[int, str, list[str]]] = []   # (index, pred, golds) for Math-Verify
        for i, (text, answer) in enumerate(zip(texts, answers)):
            golds = gold_answers(answer)
            pred = extract_boxed(text)
            if pred is None:
                self._counts["parse_failures"] += 1
            elif self.fast_path and (verdict := decide_without_math_verify(pred, golds)) is not None:
                self._counts["fast_path"] += 1
                rewards[i] = float(verdict)
            else:
                slow_tasks.append((i, pred, golds))
        if slow_tasks:
            for i, verdict in self._run_in_workers(slow_tasks).items():
                rewards[i] = 1.0 if verdict else 0.0
        self._counts["graded"] += len(texts)
        self._counts["correct"] += int(sum(rewards))
        return rewards

    def stats(self) -> dict[str, int]:
        return dict(self._counts)

    def close(self) -> None:
        for worker in self._workers:
            self._stop(worker, gracefully=True)
        self._workers = []

    def __enter__(self) -> "Grader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass

    # -- the pool ----------------------------------------------------------------------------------

    def _start_worker(self) -> _Worker:
        parent_conn, child_conn = self._ctx.Pipe()
        process = self._ctx.Process(target=_worker_main, args=(child_conn,), daemon=True,
                                    name="attnrl-grader")
        process.start()
        child_conn.close()  # the parent keeps only its end: EOF is then seen when the worker dies
        worker = _Worker(process, parent_conn, deadline=time.monotonic() + self.STARTUP_TIMEOUT)
        return worker

    def _stop(self, worker: _Worker, gracefully: bool) -> None:
        if gracefully and worker.process.is_alive() and worker.ready and worker.task_id is None:
            try:
                worker.conn.send(None)
                worker.process.join(timeout=2.0)
            except OSError:  # already gone
                pass
        if worker.process.is_alive():
            worker.process.kill()  # SIGKILL: a stuck sympy call cannot ignore it
        worker.process.join(timeout=5.0)
        worker.conn.close()

    def _replace(self, worker: _Worker) -> None:
        self._stop(worker, gracefully=False)
        self._workers[self._workers.index(worker)] = self._start_worker()

    def _run_in_workers(self, tasks: list[tuple[int, str, list[str]]]) -> dict[int, bool]:
        """Run `_verify_any` for every task; a task past its deadline is False and kills its worker."""
        for worker in list(self._workers):
            if worker.task_id is not None:  # left busy by an interrupted call (Ctrl-C): its answer is stale
                self._replace(worker)
        while len(self._workers) < self.n_workers:
            self._workers.append(self._start_worker())
        pending = deque(tasks)
        inputs = {index: (pred, golds) for index, pred, golds in tasks}
        results: dict[int, bool] = {}
        while len(results) < len(tasks):
            # Hand a task to every idle worker.
            for worker in self._workers:
                if worker.ready and worker.task_id is None and pending:
                    index, pred, golds = pending.popleft()
                    try:
                        worker.conn.send((index, pred, golds))
                    except OSError:  # it died while idle (killed from outside): replace it, retry the task
                        pending.appendleft((index, pred, golds))
                        self._replace(worker)
                        continue
                    worker.task_id, worker.deadline = index, time.monotonic() + self.timeout
                    self._counts["worker_calls"] += 1
            # Wait for an answer, a "ready", or the nearest deadline.
            busy = [w for w in self._workers if not w.ready or w.task_id is not None]
            nearest = min(w.deadline for w in busy)
            for conn in wait([w.conn for w in busy], timeout=max(0.0, nearest - time.monotonic())):
                worker = next(w for w in busy if w.conn is conn)
                try:
                    kind, value = conn.recv()
                except (EOFError, OSError):  # the worker died (out of memory, segfault, ...)
                    if not worker.ready:
                        raise RuntimeError("a grader worker process died while starting")
                    results[worker.task_id] = False
                    self._counts["errors"] += 1
                    self._replace(worker)
                    continue
                if kind == "startup_error":
                    raise RuntimeError(f"a grader worker could not start: {value} "
                                       "(is math-verify installed? pip install math-verify)")
                if kind == "ready":
                    worker.ready = True
                elif kind == "result":
                    task_id, verdict = value
                    results[task_id] = verdict
                    worker.task_id = None
            # Kill whatever is past its deadline.
            now = time.monotonic()
            for worker in list(self._workers):
                if worker.task_id is not None and now > worker.deadline:
                    results[worker.task_id] = False
                    self._counts["timeouts"] += 1
                    logging.getLogger(__name__).warning(
                        "grader: Math-Verify call timed out after %.1f s (answer %.80r); worker replaced",
                        self.timeout, inputs[worker.task_id][0])
                    self._replace(worker)
                elif not worker.ready and now > worker.deadline:
                    raise RuntimeError(f"a grader worker did not start within {self.STARTUP_TIMEOUT:.0f} s")
        return results
