"""The policy model: loading (local directory or hub, LoRA, 4-bit) in policy.py, and tokenizers rebuilt
offline for the model families the presets name (qwen25.py, r1_distill.py, qwen3.py; think_traces.py
nudges their random tiny test models to write `</think>`). docs/models.md lists the supported models."""
