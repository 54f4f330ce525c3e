"""Held-out evaluation: sample K responses per problem, grade them, report Avg@K and Pass@K.

For N problems with K samples each and c_ij = 1 if sample j of problem i is correct:

    Avg@K  = 1/N Σ_i  1/K Σ_j c_ij     (the paper's "Pass@1", Table 1; verl's mean@K)
    Pass@K = 1/N Σ_i  max_j c_ij       (verl's pass@K: some sample of the K is correct)

The paper uses K = 32 for AIME24/AIME25/AMC23 and K = 4 for MATH-500/Minerva/OlympiadBench, and the
headline number is the mean of the benchmarks' Avg@K. `evaluate_problems` is what both `eval.py`
and the trainer's periodic held-out evaluation call.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Callable

from attnrl_mini.worlds.data import Problem, encode_prompt
from attnrl_mini.generation import GenRequest
from attnrl_mini.worlds.reward import Grader, extract_boxed


@dataclass
class EvalRecord:                   # one graded sample
    problem_id: str
    sample: int                     # j in 0..K-1
    text: str                       # the decoded response (special tokens skipped)
    extracted: str | None           # the last \boxed{} after the last </think> (None: no answer)
    gold: str | list[str]
    correct: bool
    finish_reason: str              # "stop" | "length" (truncated)
    n_tokens: int
    level: int | None = None


@dataclass
class EvalResult:
    avg_at_k: float
    pass_at_k: float
    n: int                                          # problems
    k: int                                          # samples per problem
    per_level: dict[int, float] = field(default_factory=dict)   # Avg@K per difficulty level (if known)
    records: list[EvalRecord] = field(default_factory=list)

    def summary(self) -> dict:
        """The numbers without the records (what eval.py writes to its JSON)."""
        return {"avg_at_k": self.avg_at_k, "pass_at_k": self.pass_at_k, "n": self.n, "k": self.k,
                **({"per_level": {str(level): acc for level, acc in self.per_level.items()}} if self.per_level else {})}


def avg_and_pass_at_k(correct: list[list[bool]]) -> tuple[float, float]:
    """(Avg@K, Pass@K) of a [N][K] table of verdicts (see the module docstring)."""
    if not correct or any(len(row) == 0 for row in correct):
        raise ValueError("avg_and_pass_at_k needs at least one problem and one sample per problem")
    avg = sum(sum(row) / len(row) for row in correct) / len(correct)
    pass_ = sum(max(row) for row in correct) / len(correct)
    return float(avg), float(pass_)


def evaluate_problems(generator, tokenizer, problems: list[Problem], k: int = 1, temperature: float = 1.0,
                      max_new_tokens: int = 1024, grader: Grader | None = None, seed: int = 0,
                      batch_size: int = 256, encode: Callable[[Problem], list[int]] | None = None,
                      progress: Callable[[int], None] | None = None) -> EvalResult:
    """Sample k responses per problem with `generator`, grade them, and compute Avg@k / Pass@k.

    batch_size: samples (problems x k) per generate() call; `progress(n_samples_done)` is called
    after each call. encode(problem) -> prompt ids (default: data.encode_prompt with the chat
    template). A grader is created (and closed) when none is given.
    """
    if not problems:
        raise ValueError("evaluate_problems got no problems")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    encode = encode or (lambda problem: encode_prompt(tokenizer, problem))
    own_grader = grader is None
    grader = grader or Grader()
    problems_per_call = max(1, batch_size // k)
    records: list[EvalRecord] = []
    try:
        for call, start in enumerate(range(0, len(problems), problems_per_call)):
            chunk = problems[start:start + problems_per_call]
            requests = [GenRequest(prompt_ids=encode(p), n=k, max_new_tokens=max_new_tokens) for p in chunk]
            completions = generator.generate(requests, temperature=temperature, seed=seed + call)
            if len(completions) != len(chunk) or any(len(cs) != k for cs in completions):
                raise RuntimeError(f"generator {getattr(generator, 'name', '?')} returned {[len(cs) for cs in completions]} "
                                   f"completions for {len(chunk)} requests of n={k}")
            texts = [tokenizer.decode(c.token_ids, skip_special_tokens=True) for cs in completions for c in cs]
            rewards = grader.grade(texts, [p.answer for p in chunk for _ in range(k)])
            flat = [(p, j, c) for p, cs in zip(chunk, completions) for j, c in enumerate(cs)]
            for (problem, j, completion), text, reward in zip(flat, texts, rewards):
                records.append(EvalRecord(problem_id=problem.id, sample=j, text=text, extracted=extract_boxed(text),
                                          gold=problem.answer, correct=reward == 1.0,
                                          finish_reason=completion.finish_reason,
                                          n_tokens=len(completion.token_ids), level=problem.level))
            if progress is not None:
                progress(len(flat))
    finally:
        if own_grader:
            grader.close()

    table = [[r.correct for r in records[i * k:(i + 1) * k]] for i in range(len(problems))]
    avg, pass_ = avg_and_pass_at_k(table)
    per_level: dict[int, float] = {}
    for level in sorted({p.level for p in problems if p.level is not None}):
        rows = [row for p, row in zip(problems, table) if p.level == level]
        per_level[level] = avg_and_pass_at_k(rows)[0]
    return EvalResult(avg_at_k=avg, pass_at_k=pass_, n=len(problems), k=k, per_level=per_level, records=records)


def record_to_json(record: EvalRecord, benchmark: str) -> dict:
    """One line of the generations JSONL written by eval.py."""
    return {"benchmark": benchmark, **asdict(record)}
