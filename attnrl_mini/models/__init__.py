"""The policy model: loading (local directory or hub, LoRA, 4-bit) in policy.py, and tokenizers rebuilt
offline for the model families the presets name (qwen25.py)."""
