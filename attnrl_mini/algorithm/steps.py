"""Token-level step segmentation of a response (paper §3.1.1; docs/algorithm.md §a).

The paper splits a response into reasoning steps at "\\n\\n". The official code does it on tokens:
a *separator token* is any vocabulary token whose decoded text contains "\\n\\n" (e.g. "\\n\\n",
".\\n\\n", ")\\n\\n"), and a separator ends its step. So we tokenise once and never re-tokenise text.

Coordinates: steps are response-relative, half-open spans (start, end) that cover [0, R) exactly.
Step 0 is the first response step. (The release also has a "range 0" for the prompt; fci.py adds
it internally where the FCI needs it.)
"""
from __future__ import annotations

import weakref
from dataclasses import dataclass

# tokenizer -> the text of each base-vocabulary id decoded alone. S2 and S1 both read it, and every
# trainer, tool and test that builds them again for the same tokenizer (151,643 ids for Qwen2.5).
_VOCAB_TEXTS: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _vocab_texts(tokenizer) -> list[str]:
    vocab_size = int(tokenizer.vocab_size)
    try:
        texts = _VOCAB_TEXTS.get(tokenizer)
    except TypeError:            # an object that cannot be weakly referenced: decoded every time
        texts = None
    if texts is None or len(texts) != vocab_size:
        # One list of single-id sequences, decoded in one call (much faster than a Python loop of decode).
        texts = tokenizer.batch_decode([[i] for i in range(vocab_size)])
        try:
            _VOCAB_TEXTS[tokenizer] = texts
        except TypeError:
            pass
    return texts


def separator_token_ids(tokenizer, marker: str = "\n\n") -> set[int]:
    """Ids 0 .. tokenizer.vocab_size-1 whose text, decoded alone, contains `marker` (the set S2).

    `vocab_size` counts the base vocabulary only, not added special tokens, as in the release. The
    decoded vocabulary is kept per tokenizer object, so S1 and later calls do not decode it again.
    """
    if not marker:
        raise ValueError("separator marker must be a non-empty string")
    return {i for i, text in enumerate(_vocab_texts(tokenizer)) if marker in text}


def newline_token_ids(tokenizer) -> set[int]:
    """Fallback separator set S1: ids whose decoded text contains a single "\\n"."""
    return separator_token_ids(tokenizer, marker="\n")


def think_end_token_id(tokenizer, think_end: str = "</think>") -> int | None:
    """The id of `</think>` if the tokenizer encodes it as one token, else None.

    The release takes the last id of encode('</think>') unconditionally; for a tokenizer without a
    `</think>` token that id would be '>' and mark every '>' as a think end, so we return None instead.
    """
    ids = tokenizer.encode(think_end, add_special_tokens=False)
    if len(ids) == 1 and tokenizer.decode(ids).strip() == think_end:
        return int(ids[0])
    return None


@dataclass
class StepSegmentation:
    steps: list[tuple[int, int]]  # response-relative half-open spans, cover [0, R) exactly
    think_end_step: int           # index of the step holding the last </think>; -1 if none


def segment_steps(response_ids: list[int], sep_ids: set[int], newline_ids: set[int],
                  think_end_id: int | None = None) -> StepSegmentation:
    """Cut a response into steps at separator tokens (docs/algorithm.md §a.2–3).

    Rules:
      - a separator token ends its step (it belongs to the preceding step);
      - separators are the "\\n\\n" ids; if the response has none, the "\\n" ids; if it has none
        of those either, every token is a step;
      - the text after the last separator is a final step; no empty trailing step;
      - an empty response has no steps.
    """
    # BEGIN SOLUTION B1
    n_tokens = len(response_ids)
    if n_tokens == 0:
        return StepSegmentation(steps=[], think_end_step=-1)

    ends = [i for i, tok in enumerate(response_ids) if tok in sep_ids]
    if not ends:
        ends = [i for i, tok in enumerate(response_ids) if tok in newline_ids]
    if not ends:
        ends = list(range(n_tokens))  # no line breaks at all: token-level steps

    boundaries = [0] + [i + 1 for i in ends]  # separator i ends the step: next step starts at i+1
    if boundaries[-1] != n_tokens:
        boundaries.append(n_tokens)           # text after the last separator is a final step
    steps = list(zip(boundaries[:-1], boundaries[1:]))

    think_end_step = -1
    if think_end_id is not None and think_end_id in response_ids:
        last = n_tokens - 1 - response_ids[::-1].index(think_end_id)
        think_end_step = next(k for k, (start, end) in enumerate(steps) if start <= last < end)
    return StepSegmentation(steps=steps, think_end_step=think_end_step)
    # END SOLUTION B1


__all__ = ["separator_token_ids", "newline_token_ids", "think_end_token_id", "StepSegmentation", "segment_steps"]
