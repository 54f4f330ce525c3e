"""Qwen3's tokenizer and vocabulary shape, rebuilt offline (the hybrid thinking models, e.g. Qwen3-1.7B).

Qwen3 keeps Qwen2.5's 151,643 BPE ranks, pre-tokeniser and NFC normalisation (qwen25.py) and its 22
added tokens, then adds four more: 151665 <tool_response>, 151666 </tool_response>, 151667 <think>,
151668 </think> (151,669 tokens; 151,936 output rows). EOS is <|im_end|> (151645), pad <|endoftext|>.

The chat template switches thinking on and off at the generation prompt:
    thinking on (the default):  ...<|im_start|>assistant\\n              (the model writes <think> ... </think>)
    enable_thinking=False:      ...<|im_start|>assistant\\n<think>\\n\\n</think>\\n\\n   (an empty thinking part)
`data.encode_prompt` renders the default (thinking on), as the release does when no
`apply_chat_template_kwargs` are given; with `enable_thinking=True` passed there, the release appends
"<think>\\n" = [151667, 198] itself (verl/utils/dataset/rl_dataset.py:246-249).

Sources (data only, no code copied), checked again in tests/test_reasoning_models.py:
- added tokens, their `special` flags, eos/pad, and the template body: the tokenizer_config.json
  quoted in akougkas/warpio-cli, folder warpio-docs/ai-docs/model_cards/, the markdown card `qwen3:4b`
  (Qwen3-4B; its template
  always opens <think>); the hybrid generation-prompt tail of Qwen3-0.6B/1.7B/...: quoted verbatim
  in public code (a SkyRL-based agent's "Qwen-3 chat templates", search index id 13313934896);
- <think> = 151667 and "\\n" = 198: the release itself (RyanLiu112/AttnRL rl_dataset.py:248);
  </think> = 151668: max1vol/emo-survaval-bot llm/llm.py ("rindex finding 151668 (</think>)",
  after the Qwen3 model card);
- the model: Qwen3ForCausalLM, vocab_size 151,936, tied embeddings (0.6B-4B), bos 151643, eos 151645.

    python -m attnrl_mini.models.qwen3 OUT_DIR                 # the tokenizer directory
    python -m attnrl_mini.models.qwen3 OUT_DIR --tiny-model    # + a random tiny Qwen3 of the real shape
"""
from __future__ import annotations

import os

from attnrl_mini.models.qwen25 import ADDED_TOKENS as QWEN25_ADDED_TOKENS
from attnrl_mini.models.qwen25 import N_BPE, OUTPUT_ROWS, reasoning_family_main, tiny_dims, write_tokenizer_dir

ADDED_TOKENS = QWEN25_ADDED_TOKENS + [("<tool_response>", False), ("</tool_response>", False),
                                      ("<think>", False), ("</think>", False)]
N_TOKENS = N_BPE + len(ADDED_TOKENS)    # 151,669 = len(tokenizer)
ENDOFTEXT_ID, IM_END_ID, THINK_ID, THINK_END_ID = 151643, 151645, 151667, 151668

CHAT_TEMPLATE = """{%- if tools %}
    {{- '<|im_start|>system\\n' }}
    {%- if messages[0].role == 'system' %}
        {{- messages[0].content + '\\n\\n' }}
    {%- endif %}
    {{- "# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}
    {%- for tool in tools %}
        {{- "\\n" }}
        {{- tool | tojson }}
    {%- endfor %}
    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}
{%- else %}
    {%- if messages[0].role == 'system' %}
        {{- '<|im_start|>system\\n' + messages[0].content + '<|im_end|>\\n' }}
    {%- endif %}
{%- endif %}
{%- set ns = namespace(multi_step_tool=true, last_query_index=messages|length - 1) %}
{%- for message in messages[::-1] %}
    {%- set index = (messages|length - 1) - loop.index0 %}
    {%- if ns.multi_step_tool and message.role == "user" and message.content is string and not(message.content.startswith('<tool_response>') and message.content.endswith('</tool_response>')) %}
        {%- set ns.multi_step_tool = false %}
        {%- set ns.last_query_index = index %}
    {%- endif %}
{%- endfor %}
{%- for message in messages %}
    {%- if message.content is string %}
        {%- set content = message.content %}
    {%- else %}
        {%- set content = '' %}
    {%- endif %}
    {%- if (message.role == "user") or (message.role == "system" and not loop.first) %}
        {{- '<|im_start|>' + message.role + '\\n' + content + '<|im_end|>' + '\\n' }}
    {%- elif message.role == "assistant" %}
        {%- set reasoning_content = '' %}
        {%- if message.reasoning_content is string %}
            {%- set reasoning_content = message.reasoning_content %}
        {%- else %}
            {%- if '</think>' in content %}
                {%- set reasoning_content = content.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') %}
                {%- set content = content.split('</think>')[-1].lstrip('\\n') %}
            {%- endif %}
        {%- endif %}
        {%- if loop.index0 > ns.last_query_index %}
            {%- if loop.last or (not loop.last and reasoning_content) %}
                {{- '<|im_start|>' + message.role + '\\n<think>\\n' + reasoning_content.strip('\\n') + '\\n</think>\\n\\n' + content.lstrip('\\n') }}
            {%- else %}
                {{- '<|im_start|>' + message.role + '\\n' + content }}
            {%- endif %}
        {%- else %}
            {{- '<|im_start|>' + message.role + '\\n' + content }}
        {%- endif %}
        {%- if message.tool_calls %}
            {%- for tool_call in message.tool_calls %}
                {%- if (loop.first and content) or (not loop.first) %}
                    {{- '\\n' }}
                {%- endif %}
                {%- if tool_call.function %}
                    {%- set tool_call = tool_call.function %}
                {%- endif %}
                {{- '<tool_call>\\n{"name": "' }}
                {{- tool_call.name }}
                {{- '", "arguments": ' }}
                {%- if tool_call.arguments is string %}
                    {{- tool_call.arguments }}
                {%- else %}
                    {{- tool_call.arguments | tojson }}
                {%- endif %}
                {{- '}\\n</tool_call>' }}
            {%- endfor %}
        {%- endif %}
        {{- '<|im_end|>\\n' }}
    {%- elif message.role == "tool" %}
        {%- if loop.first or (messages[loop.index0 - 1].role != "tool") %}
            {{- '<|im_start|>user' }}
        {%- endif %}
        {{- '\\n<tool_response>\\n' }}
        {{- content }}
        {{- '\\n</tool_response>' }}
        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}
            {{- '<|im_end|>\\n' }}
        {%- endif %}
    {%- endif %}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|im_start|>assistant\\n' }}
    {%- if enable_thinking is defined and enable_thinking is false %}
        {{- '<think>\\n\\n</think>\\n\\n' }}
    {%- endif %}
{%- endif %}"""


def build_tokenizer_dir(out_dir: str | os.PathLike) -> str:
    """Write Qwen3's tokenizer files into `out_dir`; returns it."""
    return write_tokenizer_dir(out_dir, ADDED_TOKENS, CHAT_TEMPLATE, eos_token="<|im_end|>",
                               pad_token="<|endoftext|>", model_max_length=131072,
                               additional_special_tokens=[t for t, s in ADDED_TOKENS[1:] if s])


def build_tiny_model_dir(out_dir: str | os.PathLike, *, hidden_size: int = 64, num_layers: int = 2,
                         think_sft_steps: int = 0, seed: int = 0) -> str:
    """The tokenizer + a random Qwen3ForCausalLM (per-head q/k RMS norms) with Qwen3-1.7B's vocabulary
    shape (151,936 rows, tied embeddings, bos 151643, eos 151645), tiny depth and width.

    think_sft_steps > 0: a short SFT on synthetic `<think> ... </think> answer` traces (think_traces.py).
    """
    import torch
    from transformers import GenerationConfig, Qwen3Config, Qwen3ForCausalLM

    out = build_tokenizer_dir(out_dir)
    config = Qwen3Config(vocab_size=OUTPUT_ROWS, **tiny_dims(hidden_size, num_layers), max_position_embeddings=4096,
                         rope_theta=1000000.0, rms_norm_eps=1e-6, tie_word_embeddings=True,
                         bos_token_id=ENDOFTEXT_ID, eos_token_id=IM_END_ID, use_sliding_window=False)
    torch.manual_seed(seed)
    model = Qwen3ForCausalLM(config)
    if think_sft_steps:
        from attnrl_mini.models.policy import load_tokenizer
        from attnrl_mini.models.think_traces import nudge_to_think
        nudge_to_think(model, load_tokenizer(out), steps=think_sft_steps, opens_think=True, seed=seed)
    model.save_pretrained(out)
    # Qwen3's generation_config.json stops on both <|im_end|> and <|endoftext|>.
    GenerationConfig(bos_token_id=ENDOFTEXT_ID, eos_token_id=[IM_END_ID, ENDOFTEXT_ID], pad_token_id=ENDOFTEXT_ID,
                     do_sample=True, temperature=0.6, top_p=0.95, top_k=20, max_new_tokens=2048).save_pretrained(out)
    return out


def main(argv=None) -> None:
    reasoning_family_main(argv, __doc__, "Qwen3", build_tokenizer_dir, build_tiny_model_dir)


if __name__ == "__main__":
    main()
