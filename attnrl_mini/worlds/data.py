"""Problems, benchmark files and the prompt template (paper App. A, docs/algorithm.md §j).

A problem is `{id, problem, answer, source}` (+ an optional difficulty `level`). `answer` is the
ground truth: a string, or a list of acceptable strings (75 Minerva items). Files:

- JSONL or JSONL.gz, one problem per line (the format of the bundled files in `attnrl_mini/data/`,
  package data of an installed copy; see attnrl_mini/data/README.md); a bundled file can be named by
  its stem (`math500`, `dapo_math_train`) wherever a problem file is asked for;
- verl-style parquet (the official release's format), when pyarrow is installed: `prompt` = a list
  with one user message, `reward_model.ground_truth`, `data_source`, `extra_info.index`.

The prompt is the paper's: "{problem} Let's think step by step and output the final answer within
\\boxed{}." as the user turn of the model's chat template, with the assistant turn opened
(`add_generation_prompt=True`). Toy problems use the toy tokenizer's own template.
"""
from __future__ import annotations

import gzip
import json
import warnings
import zlib
from pathlib import Path

from attnrl_mini.worlds.problem import Problem

DATA_DIR = Path(__file__).resolve().parents[1] / "data"   # package data: found from any directory

# Benchmark name -> bundled file; the paper's K for Avg@K (Table 1: 32 for the small sets, 4 else).
BENCHMARKS: dict[str, Path] = {
    name: DATA_DIR / f"{name}.jsonl" for name in ("math500", "aime24", "aime25", "amc23", "minerva", "olympiad")
}
DEFAULT_K: dict[str, int] = {"math500": 4, "aime24": 32, "aime25": 32, "amc23": 32, "minerva": 4, "olympiad": 4}
TRAIN_FILE = DATA_DIR / "dapo_math_train.jsonl.gz"
BUNDLED: dict[str, Path] = {**BENCHMARKS, "dapo_math_train": TRAIN_FILE}   # names that stand for a bundled file


def resolve_path(path: str | Path) -> Path:
    """A bundled file's name ("math500", "dapo_math_train") -> its path; any other string is a path."""
    return BUNDLED.get(str(path), Path(path))


INSTRUCTION = "Let's think step by step and output the final answer within \\boxed{}."


class DataError(ValueError):
    """A problem file that cannot be used; the message names the file and, where known, the line or row."""


# ----------------------------------------------------------------------------------------------
# Loading


def _problem_from_record(record, where: str, default_id: str, default_source: str) -> Problem | None:
    """Validate one JSONL record; `where` ("file:line") goes into every error message.

    None for a record whose answer is the empty string: it can never be graded correct, so it is
    skipped (with a warning) rather than failing the whole file (2 rows of the training set).
    """
    if not isinstance(record, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(record).__name__}")
    problem = record.get("problem")
    if not isinstance(problem, str) or not problem.strip():
        raise DataError(f"{where}: field 'problem' must be a non-empty string, got {problem!r:.80}")
    answer = record.get("answer")
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # a bare number is a fine ground truth
    if answer == "" or answer == []:
        return None
    if isinstance(answer, list):
        if not answer or not all(isinstance(a, str) and a.strip() for a in answer):
            raise DataError(f"{where}: field 'answer' is a list, so it must hold non-empty strings, got {answer!r:.80}")
    elif not isinstance(answer, str) or not answer.strip():
        raise DataError(f"{where}: field 'answer' must be a non-empty string or a list of strings, got {answer!r:.80}")
    level = record.get("level")
    if level is not None and (not isinstance(level, int) or isinstance(level, bool)):
        raise DataError(f"{where}: field 'level' must be an integer, got {level!r}")
    return Problem(id=str(record.get("id", default_id)), problem=problem, answer=answer,
                   source=str(record.get("source", default_source)), level=level)


def _strip_instruction(text: str) -> str:
    """The user message of a verl file already holds the instruction: keep the bare problem."""
    text = text.rstrip()
    return text[: -len(INSTRUCTION)].rstrip() if text.endswith(INSTRUCTION) else text


def problem_from_verl_row(row: dict, where: str, default_id: str) -> Problem | None:
    """One row of a verl-style parquet file (prompt / reward_model / data_source / extra_info)."""
    prompt = row.get("prompt")
    if hasattr(prompt, "tolist"):  # numpy arrays, when read through pandas
        prompt = prompt.tolist()
    if not isinstance(prompt, list) or len(prompt) != 1 or not isinstance(prompt[0], dict) \
            or not isinstance(prompt[0].get("content"), str):
        raise DataError(f"{where}: 'prompt' must be a list with one message {{'role', 'content'}}, got {prompt!r:.80}")
    reward_model = row.get("reward_model")
    if not isinstance(reward_model, dict) or "ground_truth" not in reward_model:
        raise DataError(f"{where}: 'reward_model.ground_truth' is missing")
    answer = reward_model["ground_truth"]
    if hasattr(answer, "tolist"):
        answer = answer.tolist()
    extra = row.get("extra_info") or {}
    index = extra.get("index") if isinstance(extra, dict) else None
    source = row.get("data_source") or "unknown"
    record = dict(problem=_strip_instruction(prompt[0]["content"]), answer=answer, source=source,
                  id=f"{source}-{index}" if index is not None else default_id)
    return _problem_from_record(record, where, default_id, source)


def load_problems(path: str | Path) -> list[Problem]:
    """Problems of a .jsonl / .jsonl.gz file, or of a verl-style .parquet file (needs pyarrow).

    A malformed row or file raises DataError (a ValueError) naming the file, the line (row) and what is wrong.
    """
    path = resolve_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no problem file at {path}")
    name = path.name
    if name.endswith(".parquet"):
        try:
            import pyarrow.parquet as pq
        except ImportError as error:
            raise ImportError(f"reading {path} needs pyarrow (pip install pyarrow), "
                              "or convert it to JSONL") from error
        try:
            table = pq.read_table(path)
        except Exception as error:  # pyarrow's ArrowInvalid / OSError for a file that is not parquet
            raise DataError(f"{path}: not a readable parquet file ({str(error).splitlines()[0]})") from None
        missing = [c for c in ("prompt", "reward_model") if c not in table.column_names]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; a verl-style file has prompt, "
                            f"reward_model, data_source, extra_info (this one has {', '.join(table.column_names)})")
        rows = table.to_pylist()
        problems = [problem_from_verl_row(row, f"{path}: row {i}", default_id=f"{path.stem}-{i}")
                    for i, row in enumerate(rows)]
        return _drop_empty_answers(problems, path, "rows", list(range(len(rows))))
    if name.endswith(".jsonl.gz"):
        opener = lambda: gzip.open(path, "rt", encoding="utf-8")  # noqa: E731
        stem = name[: -len(".jsonl.gz")]
    elif name.endswith(".jsonl"):
        opener = lambda: open(path, encoding="utf-8")  # noqa: E731
        stem = name[: -len(".jsonl")]
    else:
        raise DataError(f"{path}: unknown problem file type; use .jsonl, .jsonl.gz or .parquet")
    problems, line_numbers = [], []
    line_number = 0
    try:
        with opener() as f:
            for line_number, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                where = f"{path}: line {line_number}"
                try:
                    record = json.loads(line)
                except json.JSONDecodeError as error:
                    raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
                problems.append(_problem_from_record(record, where, default_id=f"{stem}-{line_number - 1}",
                                                     default_source=stem))
                line_numbers.append(line_number)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not UTF-8 text, at or after line {line_number + 1} ({error.reason})") from None
    except (OSError, EOFError, zlib.error) as error:  # a corrupt or truncated .gz
        raise DataError(f"{path}: after line {line_number}: cannot be decompressed ({error})") from None
    return _drop_empty_answers(problems, path, "lines", line_numbers)


def _drop_empty_answers(problems: list[Problem | None], path: Path, unit: str, positions: list[int]) -> list[Problem]:
    skipped = [pos for problem, pos in zip(problems, positions) if problem is None]
    if skipped:
        warnings.warn(f"{path}: skipped {len(skipped)} problem(s) whose answer is empty ({unit} "
                      f"{', '.join(map(str, skipped[:10]))}{', ...' if len(skipped) > 10 else ''})", stacklevel=3)
    kept = [problem for problem in problems if problem is not None]
    if not kept:
        raise DataError(f"{path}: no problems in the file")
    return kept


def load_benchmark(name: str) -> list[Problem]:
    """A bundled benchmark by name (see BENCHMARKS)."""
    if name not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {name!r}; bundled: {', '.join(BENCHMARKS)}")
    return load_problems(BENCHMARKS[name])


# ----------------------------------------------------------------------------------------------
# Prompts


def math_prompt(problem_text: str) -> str:
    """The paper's user message (App. A, Table 4)."""
    return f"{problem_text} {INSTRUCTION}"


_warned_no_chat_template = False


TOY_SOURCES = ("toy", "toy-plan", "early", "late")   # the built-in worlds' problems use their own prompt template


def prompts_that_fit(tokenizer, problems: list[Problem], max_tokens: int) -> list[Problem]:
    """The problems with len(encode_prompt(tokenizer, problem)) <= max_tokens, in their order.

    Exact, and cheap enough for every start (the release filters overlong prompts up front too):
    each prompt's template is rendered as text; every token of a byte-level BPE tokenizer (Qwen2.5's,
    the toy worlds') spans at least one byte, so a prompt of at most `max_tokens` bytes fits without
    tokenising; the rest are tokenised in one batched call of the Rust tokenizer instead of one
    `apply_chat_template` each (20,000 toy prompts: about 1.3 s -> 0.4 s per start).
    """
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None or not getattr(tokenizer, "chat_template", None):
        return [p for p in problems if len(encode_prompt(tokenizer, p)) <= max_tokens]
    texts = [_render_prompt(tokenizer, p) for p in problems]
    byte_level = type(backend.decoder).__name__ == "ByteLevel"
    fits = [byte_level and len(t.encode("utf-8")) <= max_tokens for t in texts]
    unsure = [i for i, ok in enumerate(fits) if not ok]
    # the ids apply_chat_template(tokenize=True) returns: the rendered text, no special tokens added
    for i, enc in zip(unsure, backend.encode_batch([texts[i] for i in unsure], add_special_tokens=False)):
        fits[i] = len(enc.ids) <= max_tokens
    return [p for p, ok in zip(problems, fits) if ok]


def _render_prompt(tokenizer, problem: Problem) -> str:
    """The text encode_prompt tokenises (a tokenizer with a chat template)."""
    content = problem.problem if problem.source in TOY_SOURCES else math_prompt(problem.problem)
    return tokenizer.apply_chat_template([{"role": "user", "content": content}], add_generation_prompt=True,
                                         tokenize=False)


def encode_prompt(tokenizer, problem: Problem) -> list[int]:
    """Prompt token ids: the chat template with the assistant turn opened; toy problems: the toy template."""
    if problem.source in TOY_SOURCES:        # the built-in worlds (attnrl_mini/worlds/__init__.py)
        from attnrl_mini.worlds.toy import toy_prompt_ids  # lazy: the toy module imports this one
        return list(toy_prompt_ids(tokenizer, problem))
    text = math_prompt(problem.problem)
    if getattr(tokenizer, "chat_template", None):
        encoded = tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                                add_generation_prompt=True, tokenize=True)
        # transformers 5 returns a BatchEncoding (a dict); older versions a plain list of ids.
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(t) for t in ids]
    global _warned_no_chat_template
    if not _warned_no_chat_template:
        warnings.warn("the tokenizer has no chat template: prompts are the raw text "
                      f"\"{{problem}} {INSTRUCTION}\" without any chat formatting", stacklevel=2)
        _warned_no_chat_template = True
    return [int(t) for t in tokenizer(text)["input_ids"]]
