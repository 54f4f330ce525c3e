"""Step segmentation (docs/algorithm.md §a), checked on hand-written token sequences."""
import random

import pytest

from attnrl_mini.algorithm.steps import (newline_token_ids, segment_steps, separator_token_ids,
                               think_end_token_id)

# A tiny vocabulary. id: text
VOCAB = {0: "Let", 1: " x", 2: "\n\n", 3: ".\n\n", 4: "\n", 5: "</think>", 6: " =", 7: "2", 8: "\n\n\n", 9: "a\nb"}


class FakeTokenizer:
    """Just enough of the transformers tokenizer API: vocab_size, batch_decode, decode, encode."""

    def __init__(self, vocab):
        self.vocab = vocab
        self.vocab_size = len(vocab)

    def decode(self, ids):
        return "".join(self.vocab[i] for i in ids)

    def batch_decode(self, seqs):
        return [self.decode(s) for s in seqs]

    def encode(self, text, add_special_tokens=True):  # greedy longest match
        by_len = sorted(self.vocab.items(), key=lambda kv: -len(kv[1]))
        ids = []
        while text:
            i, piece = next((i, p) for i, p in by_len if text.startswith(p))
            ids.append(i)
            text = text[len(piece):]
        return ids


TOK = FakeTokenizer(VOCAB)
SEP = separator_token_ids(TOK)   # {2, 3, 8}
NL = newline_token_ids(TOK)      # {2, 3, 4, 8, 9}


def seg(ids, think=None):
    return segment_steps(ids, SEP, NL, think)


def test_vocabularies_from_decoded_tokens():
    assert SEP == {2, 3, 8}            # "\n\n", ".\n\n", "\n\n\n" contain "\n\n"
    assert NL == {2, 3, 4, 8, 9}       # and "\n", "a\nb" contain "\n"
    assert think_end_token_id(TOK) == 5
    no_think = FakeTokenizer({0: "<", 1: "/", 2: "think", 3: ">"})
    assert think_end_token_id(no_think) is None  # 4 tokens, not one: no think marker


def test_the_vocabulary_is_decoded_once_per_tokenizer():
    class Counting(FakeTokenizer):
        calls = 0

        def batch_decode(self, seqs):
            Counting.calls += 1
            return super().batch_decode(seqs)
    tok = Counting(VOCAB)
    assert (separator_token_ids(tok), newline_token_ids(tok), separator_token_ids(tok)) == (SEP, NL, SEP)
    assert Counting.calls == 1
    other = Counting({0: "a", 1: "\n\n"})   # another tokenizer object has its own vocabulary
    assert separator_token_ids(other) == {1} and Counting.calls == 2


def test_vocabularies_from_a_real_transformers_tokenizer():
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    vocab = {"[UNK]": 0, "a": 1, "\n\n": 2, ".\n\n": 3, "\n": 4, "</think>": 5}
    tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")))
    assert separator_token_ids(tok) == {2, 3}
    assert newline_token_ids(tok) == {2, 3, 4}
    assert think_end_token_id(tok) == 5


def test_three_steps_separator_ends_its_step():
    # "Let x.\n\n" | " = 2\n\n" | " x 2"
    s = seg([0, 1, 3, 6, 7, 2, 1, 7])
    assert s.steps == [(0, 3), (3, 6), (6, 8)]
    assert s.think_end_step == -1


def test_back_to_back_separators_give_one_token_steps():
    assert seg([0, 2, 2, 1]).steps == [(0, 2), (2, 3), (3, 4)]
    assert seg([2, 8, 3]).steps == [(0, 1), (1, 2), (2, 3)]


def test_no_empty_trailing_step():
    assert seg([0, 1, 2]).steps == [(0, 3)]
    assert seg([0, 2, 1, 3]).steps == [(0, 2), (2, 4)]


def test_fallback_to_single_newlines_then_tokens():
    assert seg([0, 4, 1, 4, 7]).steps == [(0, 2), (2, 4), (4, 5)]   # no "\n\n": cut at "\n"
    assert seg([0, 9, 1]).steps == [(0, 2), (2, 3)]                   # "a\nb" counts as a newline token
    assert seg([0, 1, 7]).steps == [(0, 1), (1, 2), (2, 3)]           # no line break: every token a step
    # a "\n\n" anywhere switches the single "\n" off
    assert seg([0, 4, 1, 2, 7]).steps == [(0, 4), (4, 5)]


def test_empty_response():
    s = seg([])
    assert s.steps == [] and s.think_end_step == -1


def test_think_end_step_is_the_step_of_the_last_think_end():
    # steps: [5, 2] | [0, 2] | [5, 7]  -> the last </think> (position 4) is in step 2
    s = seg([5, 2, 0, 2, 5, 7], think=5)
    assert s.steps == [(0, 2), (2, 4), (4, 6)]
    assert s.think_end_step == 2
    assert seg([0, 2, 5, 1, 2, 7], think=5).think_end_step == 1
    assert seg([0, 2, 1], think=5).think_end_step == -1       # no </think> in the response
    assert seg([5, 2, 1], think=None).think_end_step == -1    # tokenizer without a </think> token


def test_segmentation_properties_on_random_responses():
    rng = random.Random(0)
    for _ in range(200):
        ids = [rng.randrange(len(VOCAB)) for _ in range(rng.randrange(1, 30))]
        steps = seg(ids).steps
        # contiguous, non-empty, cover [0, R) exactly
        assert steps[0][0] == 0 and steps[-1][1] == len(ids)
        assert all(a < b for a, b in steps)
        assert all(steps[k][1] == steps[k + 1][0] for k in range(len(steps) - 1))
        # naive reference: the marked tokens are exactly the last tokens of all steps but maybe the last
        marks = SEP if any(t in SEP for t in ids) else NL if any(t in NL for t in ids) else set(VOCAB)
        ends = [i for i, t in enumerate(ids) if t in marks]
        step_lasts = [b - 1 for _, b in steps]
        assert step_lasts[:len(ends)] == ends
        assert len(steps) == len(ends) + (0 if ends and ends[-1] == len(ids) - 1 else 1)


def test_empty_marker_is_rejected():
    with pytest.raises(ValueError, match="marker"):
        separator_token_ids(TOK, marker="")
