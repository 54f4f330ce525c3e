"""Exact FCI on the GPU in two passes, without materialising any block of probabilities (§b).

`fci.fci_attention` (the readable reference, and the CPU path) computes every block of softmax
probabilities in PyTorch and reuses them for P·V and for Eq. 4. On a GPU those [H, chunk, T] fp32
blocks cost far more memory traffic than the fused flash kernel of a plain forward (the FCI forward
ran 1.4-1.6x the plain one at the 1.5B shape). Here instead, per row and layer:

  pass 1  flash attention (the same kernel sdpa uses) returns the attention output *and* each query's
          log-sum-exp  lse[t] = log Σ_{s<=t} exp(q_t·k_s·scale);
  pass 2  a Triton kernel recomputes the scores tile by tile and turns them into the exact
          probabilities  A[t, s] = exp(q_t·k_s·scale - lse[t])  (the softmax, without a second
          normalisation pass), then sums them over the queries of one range:

              WA[h, a, s] = (1/|r_a|) Σ_{t∈r_a} A^{h}[t, s]            [H, S+1, L]

          and  α = WA Wᵀ  (Eq. 4's double mean,  Sᴬ = W A Wᵀ)  is one small matmul afterwards.

Each Triton program takes one tile of at most BLOCK_M queries that all belong to one range a (a
step longer than BLOCK_M is split into several tiles; their sums meet in WA by atomic adds) and
walks over the keys in BLOCK_N blocks: only those Eq. 5 reads (query ranges a >= 2 + Δ against the
keys of ranges 2 .. a − Δ: no prompt keys, no prompt or early-step queries), or every earlier key
when the whole α is kept (`keep_step_attention`). Nothing of size T×T is ever stored.

Used by `fci_attention` for bf16/fp16 models on CUDA when Triton is installed (`kernel="auto"`),
or when asked for (`kernel="triton"`; on a CPU that needs TRITON_INTERPRET=1, which the tests use).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK_M = 64    # queries per tile (all from one range)
BLOCK_N = 64    # keys per inner step


@triton.jit
def _range_column_sums(Q, K, LSE, WA, TILE_START, TILE_END, TILE_RANGE, KEY_START, KEY_END, INV_LEN,
                       stride_qh, stride_qt, stride_kh, stride_kt, stride_lh, stride_lt, stride_wh, stride_wa,
                       scale, G: tl.constexpr, D: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """WA[h, a, s] += (1/|r_a|) Σ_{t in tile} exp(q_t·k_s·scale - lse[t]) for the tile's range a and
    keys s in [KEY_START, KEY_END) of the tile (rounded out to whole BLOCK_N blocks)."""
    tile = tl.program_id(0)
    h = tl.program_id(1)
    t0 = tl.load(TILE_START + tile)
    t1 = tl.load(TILE_END + tile)                      # the tile's queries are t0 .. t1-1, all in range a
    a = tl.load(TILE_RANGE + tile)
    k0 = tl.load(KEY_START + tile)
    k1 = tl.load(KEY_END + tile)                       # <= t1: later keys are every query's future
    inv_len = tl.load(INV_LEN + a)
    rows = t0 + tl.arange(0, BLOCK_M)
    row_ok = rows < t1
    dims = tl.arange(0, D)
    q = tl.load(Q + h * stride_qh + rows[:, None] * stride_qt + dims[None, :], mask=row_ok[:, None], other=0.0)
    lse = tl.load(LSE + h * stride_lh + rows * stride_lt, mask=row_ok, other=0.0)      # [BLOCK_M]
    kv_head = h // G                                   # GQA: query heads h share key head h // G
    for n0 in range((k0 // BLOCK_N) * BLOCK_N, k1, BLOCK_N):
        cols = n0 + tl.arange(0, BLOCK_N)
        k = tl.load(K + kv_head * stride_kh + cols[:, None] * stride_kt + dims[None, :],
                    mask=(cols < k1)[:, None], other=0.0)
        scores = tl.dot(q, tl.trans(k), input_precision="ieee") * scale   # [BLOCK_M, BLOCK_N], fp32 accumulation (no tf32)
        probs = tl.exp(scores - lse[:, None])          # exact softmax probabilities A[t, s]
        probs = tl.where(row_ok[:, None] & (cols[None, :] <= rows[:, None]), probs, 0.0)   # causal
        tl.atomic_add(WA + h * stride_wh + a * stride_wa + cols, tl.sum(probs, axis=0) * inv_len, mask=cols < k1)


def range_tiles(ranges: list[tuple[int, int]], device, delta: int | None = None) -> tuple[torch.Tensor, ...]:
    """Tiles of <= BLOCK_M queries inside one range each: (start, end, range index, key start, key end)
    int32 [n_tiles], and 1/|r_a| fp32 [S+1]. Ranges are in unpadded coordinates, as in FCIContext.

    delta=None: every query against every earlier key (the whole α). With Δ: only what Eq. 5 reads
    (as in fci.fci_attention): query ranges a >= 2 + Δ against the keys of ranges 2 .. a - Δ.
    """
    starts, ends, which, key_starts, key_ends = [], [], [], [], []
    for a, (s, e) in enumerate(ranges):
        if delta is not None and a < 2 + delta:
            continue
        for t in range(s, e, BLOCK_M):
            starts.append(t)
            ends.append(min(t + BLOCK_M, e))
            which.append(a)
            key_starts.append(0 if delta is None else ranges[2][0])
            key_ends.append(ends[-1] if delta is None else ranges[a - delta][1])
    as_int = lambda xs: torch.tensor(xs, dtype=torch.int32, device=device)   # noqa: E731
    inv_len = torch.tensor([1.0 / (e - s) for s, e in ranges], dtype=torch.float32, device=device)
    return as_int(starts), as_int(ends), as_int(which), as_int(key_starts), as_int(key_ends), inv_len


def supports(query: torch.Tensor) -> bool:
    """Can the two-pass path take this layer? (tl.arange needs a power-of-two head size.)"""
    d = query.shape[-1]
    return d >= 16 and d & (d - 1) == 0


def flash_attention_with_lse(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float):
    """Causal attention of one unpadded row, q/k/v [1, H, L, d] (k, v repeated for GQA):
    output [1, H, L, d] and log-sum-exp [1, H, >= L] (fp32) from PyTorch's fused attention kernels."""
    if q.is_cuda and q.dtype in (torch.bfloat16, torch.float16):
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention(q, k, v, 0.0, True, False, scale=scale)[:2]
    elif q.is_cuda:   # fp32: the flash kernel takes only half precision; the memory-efficient one takes fp32
        out, lse = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0, True,
                                                                          scale=scale)[:2]
    else:   # only with TRITON_INTERPRET=1 (tests)
        out, lse = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, True, scale=scale)
    return out, lse


def fci_attention_two_pass(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, scaling: float,
                           fci_context) -> torch.Tensor:
    """The body of `fci.fci_attention` on the two-pass path: returns the attention output [B, T, H, d]
    and folds each row's [H, S+1, S+1] step matrix into the context (add_layer), like the reference."""
    B, H, T, d = query.shape
    G = H // key.shape[1]
    out = query.new_zeros(B, T, H, value.shape[-1])                    # [B, T, H, d]; left pads stay 0
    delta = None if fci_context.keep_step_attention else fci_context.delta   # None: the whole α (range_tiles)
    for b in range(B):
        pad = fci_context.pad_offsets[b]
        L = T - pad
        q, k, v = query[b:b + 1, :, pad:], key[b:b + 1, :, pad:], value[b:b + 1, :, pad:]   # [1, H(kv), L, d]
        attn, lse = flash_attention_with_lse(q, k.repeat_interleave(G, 1), v.repeat_interleave(G, 1), scaling)
        out[b, pad:] = attn[0].transpose(0, 1)
        W = fci_context.step_weights[b]                                  # [S+1, L]
        WA = torch.zeros(H, W.shape[0], L, dtype=torch.float32, device=query.device)   # [H, S+1, L]
        starts, ends, which, key_starts, key_ends, inv_len = fci_context.cached(("tiles", b), lambda: range_tiles(
            fci_context.ranges[b], query.device, delta))
        q2, k2, lse2 = q[0], k[0], lse[0]
        if q2.stride(-1) != 1 or k2.stride(-1) != 1:
            q2, k2 = q2.contiguous(), k2.contiguous()
        if starts.numel():               # none when no query range is Δ steps after a branchable one
            _range_column_sums[(starts.numel(), H)](
                q2, k2, lse2, WA, starts, ends, which, key_starts, key_ends, inv_len,
                q2.stride(0), q2.stride(1), k2.stride(0), k2.stride(1), lse2.stride(0), lse2.stride(1),
                WA.stride(0), WA.stride(1), scaling, G=G, D=d, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)
        fci_context.add_layer(b, torch.matmul(WA, W.T))                  # Eq. 4: α = W A Wᵀ  [H, S+1, S+1]
    return out
