"""Forward Context Influence (FCI): which reasoning steps do later steps attend to? (paper §3.1.1)

For every layer l and head h, token attention A^{l,h} (a T×T row-stochastic matrix over the whole
prompt + response) is averaged into a step-level matrix (docs/algorithm.md §b.2):

    Eq. 4   α^{l,h}[a, b] = (1/|r_a|)(1/|r_b|) Σ_{t∈r_a} Σ_{s∈r_b} A^{l,h}[t, s]     i.e.  Sᴬ = W A Wᵀ

over ranges r_0 = the prompt and r_1 … r_S = the response steps (W[a, t] = 1/|r_a| for t ∈ r_a).
This double mean (over the query tokens of step a and the key tokens of step b) is the official
release's choice: the paper only says the token scores are aggregated "at the step level".
A step's forward influence is the attention that steps at least Δ later pay to it, and the FCI is
its maximum over all layers and heads:

    Eq. 5   y^{l,h}[b] = Σ_{a=b+Δ}^{S} α^{l,h}[a, b]            (Δ = 4; the toy preset uses 1)
    Eq. 6   y[b]       = max_{l,h} y^{l,h}[b]

Index conventions: a and b are *range* indices, 0 = the prompt and b = 1 … S the response steps
numbered from 1. That is the paper's numbering (Eq. 5: y_k = Σ_{j=k+Δ}^{T_k} α_{j,k}, with j = a,
k = b, T_k = S) and the release's. `step_attention_to_fci` then drops range 0, so the vector it
returns is indexed by *response step from 0*, k = b − 1, the convention of steps.py and
branching.py (its docstring shows the formula in both).

The prompt range and the first response step get 0, and so does every step from the one holding
`</think>` on (the release's "after_step_sum" masking): branch points stay inside the thinking part.

How it is computed here — exactly, in one forward, without any [H, T, T] tensor:
  * `fci_attention` is registered with transformers' `AttentionInterface`. It receives the post-RoPE
    q, k, v of every layer. For each block of `query_chunk` query rows it takes the logits against
    all earlier keys (left pads skipped, causal mask on the diagonal block; GQA by grouping the
    query heads over their shared key/value head) and an fp32 softmax over the complete row (so the
    probabilities are exact), then
      (a) returns P @ V as the layer's attention output (the real forward uses the same P), and
      (b) accumulates the query side of Eq. 4, WA[:, a] += W[a, block] · P, into an fp32 [H, S+1, T]
          matrix; after the layer's last block, α = WA · Wᵀ [H, S+1, S+1].
    Peak extra memory is O(H · query_chunk · T + H · S · T) instead of O(H · T²). The logits and
    probabilities of a block live in two buffers reused by every block and layer.
  * After the last block of a layer, Eq. 5 and the masking turn the step matrix into y^{l,h}; a
    running maximum over heads and layers gives Eq. 6 (nothing is stacked).
  * On a GPU (bf16/fp16, Triton installed) `fci_triton.py` computes the same α in two passes
    without any block of probabilities: flash attention for the output and each query's
    log-sum-exp, then a Triton kernel over the scores. `FCIContext.kernel` chooses.
  * The per-sequence step ranges travel to the attention function as a keyword argument
    (`fci_context=`) of the decoder's forward: transformers 5 threads unknown forward kwargs down to
    the attention function, so no global state and no patched transformers file is needed.
  * Without an `fci_context` (e.g. generation, or the PPO update) the function is plain sdpa.

`naive_fci` is the reference: eager attention with `output_attentions=True` (all [H, T, T]
matrices), one unpadded sequence at a time, the same aggregation. Tests check both agree.
"""
from __future__ import annotations

import contextlib
import copy
import functools
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import AttentionInterface
from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask
from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

from attnrl_mini.algorithm.logprobs import decoder_and_head, response_positions, token_logprobs_from_hidden

FCI_ATTENTION = "attnrl_fci"   # the name our attention function is registered under
FCI_KERNELS = ("auto", "torch", "triton")   # see FCIContext.kernel and two_pass_kernel()


# ----------------------------------------------------------------------------------------------
# The aggregation math (Eq. 4-6), small enough to check on paper
# ----------------------------------------------------------------------------------------------

def step_ranges(prompt_len: int, steps: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Token ranges of one unpadded sequence: range 0 = the prompt, range k+1 = response step k.

    `steps` are response-relative half-open spans; the prompt's length shifts them.
    """
    return [(0, prompt_len)] + [(prompt_len + s, prompt_len + e) for s, e in steps]


def step_weight_matrix(ranges: list[tuple[int, int]], seq_len: int,
                       device: torch.device | str = "cpu") -> torch.Tensor:
    """W [S+1, T] with W[a, t] = 1/|r_a| for t in range a, else 0 (so W A Wᵀ is Eq. 4's double mean).

    Averaging over both the query and the key tokens of a step is the release's choice; the paper
    leaves the step-level aggregation open (docs/algorithm.md §b.2 item 2).
    """
    # BEGIN SOLUTION C1
    W = torch.zeros(len(ranges), seq_len, dtype=torch.float32, device=device)
    for a, (start, end) in enumerate(ranges):
        W[a, start:end] = 1.0 / (end - start)
    return W
    # END SOLUTION C1


def step_attention_to_fci(step_attention: torch.Tensor, delta: int = 4, think_end_step: int = -1) -> torch.Tensor:
    """Eq. 5 plus the release's masking, for one or many (layer, head) step matrices.

    step_attention: [..., S+1, S+1] step-level attention α[a, b] (query range a, key range b),
                    range 0 = the prompt, range k+1 = response step k.
    Eq. 5 is summed in range indices, f[b] = Σ_{a=b+Δ}^{S} α[a, b]; the result is returned in
    response-step indices, y[k] = f[k+1] (the same formula, shifted by the prompt range):
        y [..., S]:  y[k] = Σ_{a=k+1+Δ}^{S} α[a, k+1]
      with y[0] = 0 (first response step) and y[k] = 0 for k >= think_end_step when think_end_step >= 0.
    (Eq. 6's max over layers/heads is taken by the caller.)
    """
    n_ranges = step_attention.shape[-1]
    if step_attention.shape[-2] != n_ranges:
        raise ValueError(f"step_attention must be square in its last two dims; got {tuple(step_attention.shape)}")
    if delta < 1:
        raise ValueError(f"delta must be >= 1 (a step cannot be its own 'later' step); got {delta}")
    # BEGIN SOLUTION C2
    a = torch.arange(n_ranges, device=step_attention.device)
    later = (a[:, None] - a[None, :]) >= delta                      # [S+1, S+1]: query a is >= Δ after key b
    y = (step_attention * later).sum(dim=-2)                         # [..., S+1]  Eq. 5, per key range b
    y = y[..., 1:].clone()                                           # drop the prompt range -> [..., S]
    y[..., :1] = 0.0                                                 # first response step never branches
    if think_end_step >= 0:
        y[..., think_end_step:] = 0.0                                # nor the </think> step and the answer
    return y
    # END SOLUTION C2


# ----------------------------------------------------------------------------------------------
# Batching: left padding and the per-sequence context that the attention function reads
# ----------------------------------------------------------------------------------------------

@dataclass
class PaddedBatch:
    input_ids: torch.Tensor        # [B, T] left-padded
    attention_mask: torch.Tensor   # [B, T] 1 = real token
    position_ids: torch.Tensor     # [B, T] 0 at each row's first real token (as if unpadded)
    pad_offsets: list[int]         # number of pad tokens at the left of each row


def left_pad(sequences: list[list[int]], pad_id: int = 0, device: torch.device | str = "cpu") -> PaddedBatch:
    T = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), T), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), T), dtype=torch.long)
    offsets = []
    for i, s in enumerate(sequences):
        offsets.append(T - len(s))
        ids[i, T - len(s):] = torch.tensor(s, dtype=torch.long)
        mask[i, T - len(s):] = 1
    positions = (mask.cumsum(-1) - 1).clamp(min=0)   # RoPE positions start at 0 after the pads
    return PaddedBatch(ids.to(device), mask.to(device), positions.to(device), offsets)


@dataclass
class FCIContext:
    """What the attention function needs per batch row, and where it leaves the results.

    Ranges and W are in the row's *unpadded* coordinates (token 0 = first real token); the
    attention function skips the row's `pad_offsets[b]` left pads.
    """
    ranges: list[list[tuple[int, int]]]    # per row: [(start, end)] of range 0 (prompt) .. S (last step)
    step_weights: list[torch.Tensor]       # per row: W [S+1, L] (see step_weight_matrix), L = real tokens
    pad_offsets: list[int]                 # per row: left pads
    think_end_steps: list[int]             # per row, response-step coords, -1 = none
    delta: int = 4
    query_chunk: int = 64
    keep_step_attention: bool = False      # also keep max_{l,h} α (for inspection / plots)
    kernel: str = "auto"                   # "torch" (fci_attention below), "triton" (fci_triton.py), "auto"
    fci: list[torch.Tensor | None] = field(default_factory=list)             # per row: running max y [S]
    step_attention: list[torch.Tensor | None] = field(default_factory=list)  # per row: running max α [S+1, S+1]
    _cache: dict = field(default_factory=dict, repr=False)   # see cached()

    def __post_init__(self):
        if self.query_chunk < 1:
            raise ValueError(f"query_chunk must be >= 1; got {self.query_chunk}")
        if self.kernel not in FCI_KERNELS:
            raise ValueError(f"kernel must be one of {FCI_KERNELS}; got {self.kernel!r}")
        self.fci = [None] * len(self.step_weights)
        self.step_attention = [None] * len(self.step_weights)

    def cached(self, key, make):
        """make(), computed once for this context's forward and reused by every layer."""
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def scratch(self, name: str, numel: int, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
        """A flat buffer of at least `numel` elements, kept for this context's forward.

        Why: the attention function needs a [H, query_chunk, T] block for every query block of every
        layer; allocating a fresh one each time (tens of MB) costs page faults on the CPU.
        """
        buf = self._cache.get(name)
        if buf is None or buf.numel() < numel or buf.dtype != dtype or buf.device != device:
            buf = self._cache[name] = torch.empty(numel, dtype=dtype, device=device)
        return buf

    def add_layer(self, row: int, step_attention: torch.Tensor) -> None:
        """Fold one layer's step matrices [H, S+1, S+1] into the running max (Eq. 6)."""
        # BEGIN SOLUTION C3
        y = step_attention_to_fci(step_attention, self.delta, self.think_end_steps[row]).amax(0)   # [S]
        self.fci[row] = y if self.fci[row] is None else torch.maximum(self.fci[row], y)
        if self.keep_step_attention:
            m = step_attention.amax(0)                                                          # [S+1, S+1]
            prev = self.step_attention[row]
            self.step_attention[row] = m if prev is None else torch.maximum(prev, m)
        # END SOLUTION C3


def make_fci_context(batch: PaddedBatch, prompt_lens: list[int], steps: list[list[tuple[int, int]]],
                     think_end_steps: list[int], delta: int = 4, query_chunk: int = 64,
                     keep_step_attention: bool = False, kernel: str = "auto") -> FCIContext:
    T = batch.input_ids.shape[1]
    ranges = [step_ranges(p, s) for p, s in zip(prompt_lens, steps)]
    weights = [step_weight_matrix(r, T - off, batch.input_ids.device) for r, off in zip(ranges, batch.pad_offsets)]
    return FCIContext(ranges, weights, list(batch.pad_offsets), list(think_end_steps), delta, query_chunk,
                      keep_step_attention, kernel)


# ----------------------------------------------------------------------------------------------
# The attention function (registered with transformers)
# ----------------------------------------------------------------------------------------------

def _check_mask_matches_padding(attention_mask: torch.Tensor | None, pad_offsets: list[int]) -> None:
    """The FCI path masks by the context's pad offsets (+ causality); make sure transformers agrees."""
    if attention_mask is None:      # transformers drops the mask when nothing is padded
        if any(pad_offsets):
            raise ValueError("FCIContext has left padding but the model got no attention mask")
        return
    last_row = attention_mask[:, 0, -1, :]                                    # [B, T] keys the last query sees
    if last_row.dtype != torch.bool:
        last_row = last_row == 0                                              # additive mask: 0 = keep
    pads = torch.tensor(pad_offsets, device=last_row.device)[:, None]
    expected = torch.arange(last_row.shape[-1], device=last_row.device)[None, :] >= pads
    if not torch.equal(last_row.expand_as(expected), expected):
        raise ValueError("the attention mask does not match the FCIContext's left padding")


def fci_attention(module: nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                  attention_mask: torch.Tensor | None, scaling: float, dropout: float = 0.0,
                  fci_context: FCIContext | None = None, **kwargs) -> tuple[torch.Tensor, None]:
    """Exact attention + step-matrix accumulation, one block of query rows at a time.

    query [B, H, T, d] and key/value [B, Hkv, T, d] are post-RoPE. Returns ([B, T, H, d], None) like
    every transformers attention function. Without `fci_context` this is transformers' sdpa.
    """
    if fci_context is None:
        return ALL_ATTENTION_FUNCTIONS["sdpa"](module, query, key, value, attention_mask,
                                               dropout=dropout, scaling=scaling, **kwargs)
    if dropout > 0.0:
        raise ValueError("FCI attention is for the no-grad scoring pass; call model.eval() (dropout must be 0)")
    if key.shape[2] != query.shape[2]:
        raise ValueError(f"FCI needs the whole sequence in one forward (no KV cache); got {query.shape[2]} queries, "
                         f"{key.shape[2]} keys")
    if kwargs.get("sliding_window") is not None:
        raise ValueError("FCI attention does not support sliding-window layers")
    if len(fci_context.step_weights) != query.shape[0]:
        raise ValueError(f"FCIContext has {len(fci_context.step_weights)} rows but the batch has {query.shape[0]}")
    _check_mask_matches_padding(attention_mask, fci_context.pad_offsets)
    two_pass = two_pass_kernel(fci_context.kernel, query)
    if two_pass is not None:     # GPU: flash attention + a Triton pass for Eq. 4 (fci_triton.py)
        return two_pass.fci_attention_two_pass(query, key, value, scaling, fci_context), None
    # BEGIN SOLUTION C10
    B, H, T, d = query.shape
    Hkv = key.shape[1]
    G = H // Hkv                      # GQA: query heads j*G .. j*G+G-1 share key/value head j (as repeat_kv)
    chunk = min(fci_context.query_chunk, T)
    # causal mask of a diagonal block, added to its logits: query i of the block must not see key j > i
    future = torch.full((chunk, chunk), float("-inf"), dtype=query.dtype, device=query.device).triu_(diagonal=1)
    out = query.new_zeros(B, T, H, value.shape[-1])                   # [B, T, H, d]; left pads stay 0
    # Two blocks of memory for the whole forward, reused by every query block and layer: the logits
    # (model dtype) and their fp32 probabilities (the same memory when the model runs in fp32).
    logits_buf = fci_context.scratch("logits", H * chunk * T, query.dtype, query.device)
    probs_buf = logits_buf if query.dtype == torch.float32 else \
        fci_context.scratch("probs", H * chunk * T, torch.float32, query.device)

    for b in range(B):
        pad = fci_context.pad_offsets[b]
        L = T - pad                                   # real tokens of this row; pads are never looked at
        q = (query[b, :, pad:] * scaling).view(Hkv, G, L, d)    # [Hkv, G, L, d]
        k = key[b, :, pad:]                           # [Hkv, L, d]
        v = value[b, :, pad:]                         # [Hkv, L, d]
        W = fci_context.step_weights[b]               # [S+1, L]
        ranges = fci_context.ranges[b]
        # WA[h, a, s] = Σ_t W[a, t] A[t, s]: the mean attention of range a's queries to key token s
        WA = torch.zeros(H, W.shape[0], L, dtype=torch.float32, device=query.device)           # [H, S+1, L]
        for q0 in range(0, L, chunk):
            q1 = min(q0 + chunk, L)
            n = q1 - q0
            # logits of the block's queries against keys 0..q1-1 (later keys are in every row's future)
            logits = logits_buf[:H * n * q1].view(Hkv, G * n, q1)
            torch.bmm(q[:, :, q0:q1].reshape(Hkv, G * n, d), k[:, :q1].transpose(1, 2), out=logits)
            logits.view(Hkv, G, n, q1)[..., q0:].add_(future[:n, :n])
            # fp32 softmax over the complete row: exact (in place when the logits are fp32 already)
            probs = torch.softmax(logits, dim=-1, dtype=torch.float32, out=probs_buf[:H * n * q1].view(Hkv, G * n, q1))
            # (a) the layer's real attention output, from these same probabilities
            pv = torch.bmm(probs.to(v.dtype), v[:, :q1])                                      # [Hkv, G*n, d]
            out[b, pad + q0:pad + q1] = pv.view(H, n, -1).transpose(0, 1)
            # (b) the query side of Eq. 4, block by block: WA[:, a] += Σ_{t in block ∩ r_a} W[a, t] P[t, :].
            #     Only the few ranges a that meet this block have non-zero W[a, block].
            rows = [a for a, (s, e) in enumerate(ranges) if s < q1 and e > q0]
            if rows:
                a0, a1 = rows[0], rows[-1] + 1
                WA[:, a0:a1, :q1] += torch.matmul(W[a0:a1, q0:q1], probs.view(H, n, q1))         # [H, a1-a0, q1]
        fci_context.add_layer(b, torch.matmul(WA, W.T))               # Eq. 4: α = W A Wᵀ  [H, S+1, S+1]

    return out, None
    # END SOLUTION C10


@functools.cache
def _import_fci_triton():
    """(the fci_triton module, None), or (None, the ImportError's text): tried once per process, since
    two_pass_kernel runs for every layer of every forward and a failed import is not cached by Python."""
    try:
        from attnrl_mini.algorithm import fci_triton
    except ImportError as e:
        return None, str(e)
    return fci_triton, None


@functools.cache
def _has_flash_attention(device_index: int | None) -> bool:
    """PyTorch's flash attention (the two-pass path's first pass) needs compute capability >= 8.0."""
    return torch.cuda.get_device_capability(device_index) >= (8, 0)


def two_pass_kernel(kernel: str, query: torch.Tensor):
    """The fci_triton module when the two-pass path should run this layer, else None.

    "auto": on CUDA for bf16/fp16 models when Triton is installed and the GPU has flash attention
    (compute capability >= 8.0: a T4 or V100 gets the chunked PyTorch FCI, the same result); "torch":
    never; "triton": always (an error if Triton is missing; on a CPU it needs TRITON_INTERPRET=1;
    models/precision.check_fci_kernel refuses it on a GPU below 8.0 before the run starts).
    """
    if kernel == "torch" or (kernel == "auto" and not (query.is_cuda and query.dtype in (torch.bfloat16, torch.float16)
                                                       and _has_flash_attention(query.device.index))):
        return None
    fci_triton, missing = _import_fci_triton()
    if fci_triton is None:
        if kernel == "triton":
            raise ValueError(f"fci_kernel 'triton' needs the triton package ({missing}); use 'torch' or 'auto'")
        return None
    if not fci_triton.supports(query):
        if kernel == "triton":
            raise ValueError(f"fci_kernel 'triton' needs a power-of-two head size >= 16; got {query.shape[-1]}")
        return None
    return fci_triton


AttentionInterface.register(FCI_ATTENTION, fci_attention)
# The mask builder for our name: the same bool mask (True = may attend) that sdpa gets; None when
# the batch has no padding. The FCI path only checks it against the context's pad offsets.
ALL_MASK_ATTENTION_FUNCTIONS.register(FCI_ATTENTION, sdpa_mask)


@contextlib.contextmanager
def use_attention(decoder: nn.Module, name: str):
    """Temporarily switch a transformers model's attention implementation (restored on exit)."""
    old = decoder.config._attn_implementation
    if old == name:
        yield
        return
    decoder.set_attn_implementation(name)
    try:
        yield
    finally:
        decoder.set_attn_implementation(old)


# ----------------------------------------------------------------------------------------------
# The scoring pass: log-probs, entropies and FCI in one no-grad forward
# ----------------------------------------------------------------------------------------------

@dataclass
class ScoredResponse:            # output of the no-grad forward for one (prompt, response)
    logprobs: torch.Tensor       # [R] log π(token) under the model (temperature 1)
    entropies: torch.Tensor      # [R] full-distribution entropy at each response position
    fci: torch.Tensor | None     # [S] FCI per response step (None when steps not given)
    step_attention: torch.Tensor | None = None   # [S+1, S+1] max_{l,h} α (only if asked for)


def _check_inputs(prompts, responses, steps, think_end_steps) -> None:
    if len(prompts) != len(responses):
        raise ValueError(f"{len(prompts)} prompts but {len(responses)} responses")
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise ValueError(f"prompt {i} is empty: the first response token needs a prompt token to be predicted from")
    if steps is None:
        return
    if len(steps) != len(responses):
        raise ValueError(f"{len(steps)} step lists for {len(responses)} responses")
    if think_end_steps is not None and len(think_end_steps) != len(responses):
        raise ValueError(f"{len(think_end_steps)} think_end_steps for {len(responses)} responses")
    for i, (r, s) in enumerate(zip(responses, steps)):
        prev_end = 0
        for start, end in s:
            if not (prev_end <= start < end <= len(r)):
                raise ValueError(f"response {i}: step ({start}, {end}) is empty, overlaps the previous one or "
                                 f"lies outside [0, {len(r)}); steps must be ascending half-open spans")
            prev_end = end


def _forward_chunks(n: int, lengths: list[int], batch_size: int) -> list[list[int]]:
    """Index groups of <= batch_size, longest sequences together (less padding)."""
    order = sorted(range(n), key=lambda i: -lengths[i])
    return [order[i:i + batch_size] for i in range(0, n, batch_size)]


@torch.no_grad()
def score_responses(model, prompts: list[list[int]], responses: list[list[int]],
                    steps: list[list[tuple[int, int]]] | None = None, think_end_steps: list[int] | None = None,
                    delta: int = 4, query_chunk: int = 64, batch_size: int = 8, pad_id: int = 0,
                    logprob_chunk: int | None = None, return_step_attention: bool = False,
                    kernel: str = "auto") -> list[ScoredResponse]:
    """One no-grad forward per batch: response log-probs, entropies and (if `steps`) exact FCI (Eq. 4-6).

    Works on a plain transformers causal LM or a peft-wrapped one (adapter active). The model is put
    in eval mode for the pass and restored afterwards. With `steps` the attention runs through
    `fci_attention`; without, through the model's own implementation (sdpa).
    """
    _check_inputs(prompts, responses, steps, think_end_steps)
    if steps is not None and think_end_steps is None:
        think_end_steps = [-1] * len(responses)
    decoder, lm_head = decoder_and_head(model)
    device = next(decoder.parameters()).device
    results: list[ScoredResponse | None] = [None] * len(responses)
    was_training = model.training
    model.eval()   # no LoRA dropout: the scores must be those of the deterministic policy
    try:
        attention = use_attention(decoder, FCI_ATTENTION) if steps is not None else contextlib.nullcontext()
        with attention:
            lengths = [len(p) + len(r) for p, r in zip(prompts, responses)]
            for rows in _forward_chunks(len(responses), lengths, batch_size):
                batch = left_pad([prompts[i] + responses[i] for i in rows], pad_id, device)
                forward_kwargs = {}
                ctx = None
                if steps is not None:
                    ctx = make_fci_context(batch, [len(prompts[i]) for i in rows], [steps[i] for i in rows],
                                           [think_end_steps[i] for i in rows], delta, query_chunk,
                                           keep_step_attention=return_step_attention, kernel=kernel)
                    forward_kwargs["fci_context"] = ctx
                hidden = decoder(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                                 position_ids=batch.position_ids, use_cache=False,
                                 **forward_kwargs).last_hidden_state                     # [B, T, D]
                h, targets, valid = response_positions(hidden, batch.input_ids, [responses[i] for i in rows])
                # only the real response tokens, row after row: [sum R_b, D] and [sum R_b]
                logp, ent = token_logprobs_from_hidden(h[valid], lm_head, targets[valid],
                                                       chunk=logprob_chunk, with_entropy=True)
                logp, ent = logp.float().cpu(), ent.float().cpu()
                start = 0
                for b, i in enumerate(rows):
                    R = len(responses[i])
                    fci = sa = None
                    if ctx is not None:
                        S = len(steps[i])
                        fci = ctx.fci[b].cpu() if ctx.fci[b] is not None else torch.zeros(S)
                        if return_step_attention and ctx.step_attention[b] is not None:
                            sa = ctx.step_attention[b].cpu()
                    results[i] = ScoredResponse(logp[start:start + R], ent[start:start + R], fci, sa)
                    start += R
    finally:
        model.train(was_training)
    return results


# ----------------------------------------------------------------------------------------------
# The naive reference: eager attention, every [H, T, T] matrix materialised
# ----------------------------------------------------------------------------------------------

def eager_copy(model: nn.Module) -> nn.Module:
    """A deep copy of `model` that runs eager attention (own config: the original is not flipped)."""
    clone = copy.deepcopy(model)
    decoder, _ = decoder_and_head(clone)
    decoder.set_attn_implementation("eager")
    return clone


@torch.no_grad()
def naive_fci(model, prompts: list[list[int]], responses: list[list[int]], steps: list[list[tuple[int, int]]],
              think_end_steps: list[int] | None = None, delta: int = 4,
              return_step_attention: bool = False) -> list[torch.Tensor] | list[tuple[torch.Tensor, torch.Tensor]]:
    """Reference FCI: for each unpadded sequence, all A^{l,h} from eager attention, then Eq. 4-6 directly.

    Uses `model` as is if it already runs eager attention, else an eager deep copy of it.
    Returns a list of y [S] (or of (y [S], max_{l,h} α [S+1, S+1]) with return_step_attention).
    """
    # BEGIN REFERENCE C3,C10
    _check_inputs(prompts, responses, steps, think_end_steps)
    if think_end_steps is None:
        think_end_steps = [-1] * len(responses)
    if decoder_and_head(model)[0].config._attn_implementation != "eager":
        model = eager_copy(model)
    decoder, _ = decoder_and_head(model)
    was_training = model.training
    model.eval()
    results = []
    try:
        device = next(decoder.parameters()).device
        for p, r, s, te in zip(prompts, responses, steps, think_end_steps):
            ids = torch.tensor([p + r], dtype=torch.long, device=device)
            attentions = decoder(input_ids=ids, output_attentions=True, use_cache=False).attentions  # L × [1, H, T, T]
            W = step_weight_matrix(step_ranges(len(p), s), ids.shape[1], device)                  # [S+1, T]
            per_layer = [W @ A[0].float() @ W.T for A in attentions]                               # L × [H, S+1, S+1]
            alpha = torch.stack(per_layer)                                                         # [L, H, S+1, S+1]
            y = step_attention_to_fci(alpha, delta, te).flatten(0, 1).amax(0).cpu()               # Eq. 6 -> [S]
            results.append((y, alpha.flatten(0, 1).amax(0).cpu()) if return_step_attention else y)
    finally:
        model.train(was_training)
    return results
    # END REFERENCE C3,C10
