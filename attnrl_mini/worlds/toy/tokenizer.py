"""A tiny Qwen2-style tokenizer for the toy world, built offline (no training, no download).

It is a real `Qwen2Tokenizer`: byte-level BPE behind Qwen2's pre-tokenizer regex. It has to be:
transformers' AutoTokenizer (and so vLLM) loads every `model_type: qwen2` checkpoint as a
Qwen2Tokenizer, which rebuilds exactly that pipeline from the saved vocabulary and merges, so any
other pipeline would be silently replaced. Only the vocabulary is ours (about 330 tokens):

- Qwen's special tokens <|endoftext|> (pad), <|im_start|>, <|im_end|> (eos) at ids 0, 1, 2;
- the 256 byte symbols, so every text can be encoded and decode(encode(text)) == text;
- merges (below) that make the toy world's words whole tokens and "\\n\\n" ONE token (the step
  separator). Qwen's regex keeps every digit a separate piece, so numbers are always spelled digit
  by digit, as in Qwen2.5-Math.

Saved as a standard transformers tokenizer directory with Qwen's chat template (no system turn):
    <|im_start|>user\\n{problem}<|im_end|>\\n<|im_start|>assistant\\n
eos = <|im_end|> (the end of an assistant turn), pad = <|endoftext|>, padding on the left.
"""
from __future__ import annotations

from transformers import Qwen2Tokenizer

PAD, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
SPECIAL_TOKENS = [PAD, IM_START, IM_END]

# Pieces (as Qwen's regex cuts them) that become single tokens, in merge priority order.
WORDS = [
    "\n\n", ".\n",                                    # step separator first: ".\n\n" -> "." + "\n\n"
    "Start", " with", " Add", " Subtract", " Multiply", " by", "What", " is", " the", " result",
    "(a", "(b", "(c", "(d", "(e", "\\boxed",
    "user", "assistant", "system",
]

CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's byte -> printable character table used by byte-level BPE (" " -> "Ġ", "\\n" -> "Ċ")."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    table, extra = {}, 0
    for b in range(256):
        if b in printable:
            table[b] = chr(b)
        else:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def vocab_and_merges(words: list[str] = WORDS) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """Specials, the 256 byte symbols, then each word built left to right by merges."""
    byte_symbol = bytes_to_unicode()
    vocab = {token: i for i, token in enumerate(SPECIAL_TOKENS)}
    for b in range(256):
        vocab[byte_symbol[b]] = len(vocab)
    merges = []
    for word in words:
        symbols = "".join(byte_symbol[b] for b in word.encode("utf-8"))
        for end in range(2, len(symbols) + 1):       # "Sta" = "St" + "a", "Star" = "Sta" + "r", ...
            left, right = symbols[:end - 1], symbols[end - 1]
            if symbols[:end] not in vocab:
                vocab[symbols[:end]] = len(vocab)
                merges.append((left, right))
    return vocab, merges


def build_tokenizer(words: list[str] = WORDS) -> Qwen2Tokenizer:
    """The toy tokenizer (or another world's, with its own whole-token words); deterministic ids."""
    vocab, merges = vocab_and_merges(words)
    return Qwen2Tokenizer(
        vocab=vocab, merges=merges, unk_token=None, bos_token=None, eos_token=IM_END, pad_token=PAD,
        additional_special_tokens=[IM_START],
        padding_side="left",          # saved only when passed to the constructor
        chat_template=CHAT_TEMPLATE, model_max_length=256,
        clean_up_tokenization_spaces=False,
    )


def toy_prompt_ids(tokenizer, problem) -> list[int]:
    """Chat-template prompt ids for a toy problem (or its text), ending in "<|im_start|>assistant\\n"."""
    text = problem.problem if hasattr(problem, "problem") else problem
    messages = [{"role": "user", "content": text}]
    encoded = tokenizer.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
    return list(encoded["input_ids"] if hasattr(encoded, "keys") else encoded)
