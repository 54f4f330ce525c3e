"""Planted bugs: plausible student mistakes, each a one-place text change inside an exercise's
solution region. `assignment check` plants each one and requires that exercise's graded tests to
catch it. Instructor-only: a student copy does not include this file (it holds solution text).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class PlantedBug:
    exercise: str
    what: str      # the mistake, in words
    old: str       # text inside the reference region (must occur exactly once)
    new: str       # what the mistake writes instead


PLANTED: list[PlantedBug] = [
    # A1 token log-probs and entropies
    PlantedBug("A1", "sign flip in the entropy", "entropy = -(logp_all.exp() * logp_all)", "entropy = (logp_all.exp() * logp_all)"),
    PlantedBug("A1", "raw logits instead of log-probs", "logp = logp_all.gather(", "logp = logits.gather("),
    PlantedBug("A1", "softmax over the positions, not the vocabulary", "F.log_softmax(logits, dim=-1)", "F.log_softmax(logits, dim=0)"),
    # A2 response log-probs
    PlantedBug("A2", "R taken from the first response, not the longest", "R = max(len(r) for r in responses)", "R = len(responses[0])"),
    PlantedBug("A2", "no shift: hidden state t scored against token t", "h = hidden[:, L - R - 1:L - 1, :]", "h = hidden[:, L - R:L, :]"),
    PlantedBug("A2", "padding mask left-aligned", "valid[i, R - len(r):] = True", "valid[i, :len(r)] = True"),
    # A3 GRPO advantages
    PlantedBug("A3", "population std (n) instead of unbiased (n - 1)", "/ (n - 1))", "/ n)"),
    PlantedBug("A3", "Dr. GRPO switch ignored", "if not scale_by_std:", "if False:"),
    PlantedBug("A3", "a group of one normalised by its own mean", "mean, std = 0.0, 1.0", "mean, std = rewards[0], 1.0"),
    # A4 PPO loss
    PlantedBug("A4", "ε_low and ε_high swapped", "torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)",
               "torch.clamp(ratio, 1.0 - clip_high, 1.0 + clip_low)"),
    PlantedBug("A4", "padding mask forgotten", "loss = ((pg + kl_coef * kl) * mask).sum() / denom", "loss = (pg + kl_coef * kl).sum() / denom"),
    PlantedBug("A4", "no dual clip", "pg = torch.where(advantages < 0, loss_dual, loss_clip)", "pg = loss_clip"),
    PlantedBug("A4", "symmetric clip (no clip-higher)", "1.0 + clip_high", "1.0 + clip_low"),
    PlantedBug("A4", "min instead of max (optimistic clip)", "loss_clip = torch.maximum(", "loss_clip = torch.minimum("),
    PlantedBug("A4", "k3 with the log-ratio the wrong way round", "d = torch.clamp(ref_logprobs.to(logprobs.dtype) - logprobs",
               "d = torch.clamp(logprobs - ref_logprobs.to(logprobs.dtype)"),
    PlantedBug("A4", "mean of per-sequence means instead of the token-mean",
               "loss = ((pg + kl_coef * kl) * mask).sum() / denom",
               "loss = (((pg + kl_coef * kl) * mask).sum(-1) / mask.sum(-1).clamp_min(1.0)).mean()"),
    # B1 step segmentation
    PlantedBug("B1", "\\n used together with \\n\\n, not as a fallback",
               "ends = [i for i, tok in enumerate(response_ids) if tok in sep_ids]",
               "ends = [i for i, tok in enumerate(response_ids) if tok in sep_ids or tok in newline_ids]"),
    PlantedBug("B1", "</think> step found off by one at a step boundary", "if start <= last < end", "if start < last <= end"),
    PlantedBug("B1", "a separator starts the next step", "[i + 1 for i in ends]", "[i for i in ends]"),
    PlantedBug("B1", "no newline fallback", "ends = [i for i, tok in enumerate(response_ids) if tok in newline_ids]", "ends = []"),
    PlantedBug("B1", "the first </think> instead of the last", "last = n_tokens - 1 - response_ids[::-1].index(think_end_id)",
               "last = response_ids.index(think_end_id)"),
    # B2 tree building
    PlantedBug("B2", "continuations hang off the node that starts at the offset", "node_ending_at[end] = node", "node_ending_at[start] = node"),
    PlantedBug("B2", "equal offsets not shared", "cuts = sorted(set(r.branch_points))", "cuts = sorted(r.branch_points)"),
    PlantedBug("B2", "continuations get the initial response's reward", "reward=float(c.reward)", "reward=float(r.reward)"),
    # B3 values and advantages
    PlantedBug("B3", "divided by |L(s)|, not its square root", "/ math.sqrt(child.n_leaves)", "/ child.n_leaves"),
    PlantedBug("B3", "local advantage against the root instead of the parent", "(child.value - node.value)", "(child.value - root.value)"),
    PlantedBug("B3", "global term dropped", "((child.value - root.value) + (child.value - node.value))", "(2 * (child.value - node.value))"),
    # B4 training sequences
    PlantedBug("B4", "a path's reward from its first node", "reward=path[-1].reward))", "reward=path[0].reward))"),
    PlantedBug("B4", "unbranched responses trained", "if len(path) == 1 and not train_unbranched:", "if False:"),
    PlantedBug("B4", "the leaf's advantage on every token", "advantages += [node.advantage] * len(node.tokens)",
               "advantages += [path[-1].advantage] * len(node.tokens)"),
    # B5 entropy branch points
    PlantedBug("B5", "torch.topk's tie order instead of the stable sort",
               "order = torch.sort(window, descending=True, stable=True).indices.tolist()",
               "order = torch.topk(window, window.numel()).indices.tolist()"),
    PlantedBug("B5", "the last token may be chosen", "entropies.detach().reshape(-1)[:-1]", "entropies.detach().reshape(-1)"),
    PlantedBug("B5", "lowest entropy instead of highest", "descending=True", "descending=False"),
    PlantedBug("B5", "not sorted by position", "return sorted(picks)", "return picks"),
    # C1 Eq. 4
    PlantedBug("C1", "weights 1/T instead of 1/|r_a|", "= 1.0 / (end - start)", "= 1.0 / seq_len"),
    PlantedBug("C1", "a sum instead of a mean over the range", "= 1.0 / (end - start)", "= 1.0"),
    PlantedBug("C1", "range end included (off by one)", "W[a, start:end]", "W[a, start:end + 1]"),
    # C2 Eq. 5
    PlantedBug("C2", "only the </think> step zeroed, not every later one", "y[..., think_end_step:] = 0.0", "y[..., think_end_step] = 0.0"),
    PlantedBug("C2", "Eq. 5 off by one (> Δ instead of >= Δ)", ">= delta", "> delta"),
    PlantedBug("C2", "attention paid by the step instead of to it", "(step_attention * later).sum(dim=-2)", "(step_attention * later.T).sum(dim=-1)"),
    PlantedBug("C2", "first response step not zeroed", "y[..., :1] = 0.0", "pass"),
    PlantedBug("C2", "the </think> step itself kept", "y[..., think_end_step:] = 0.0", "y[..., think_end_step + 1:] = 0.0"),
    # C3 Eq. 6
    PlantedBug("C3", "max over heads taken before Eq. 5's sum",
               "y = step_attention_to_fci(step_attention, self.delta, self.think_end_steps[row]).amax(0)",
               "y = step_attention_to_fci(step_attention.amax(0), self.delta, self.think_end_steps[row])"),
    PlantedBug("C3", "kept α not a running max over layers", "self.step_attention[row] = m if prev is None else torch.maximum(prev, m)",
               "self.step_attention[row] = m"),
    PlantedBug("C3", "mean instead of max over heads", "self.think_end_steps[row]).amax(0)", "self.think_end_steps[row]).mean(0)"),
    PlantedBug("C3", "the last layer overwrites the running max", "torch.maximum(self.fci[row], y)", "y"),
    # C4 Eq. 7 candidates
    PlantedBug("C4", "τ = 0 falls back to the largest score", "tau = y[y > 0].min().item()", "tau = y.max().item()"),
    PlantedBug("C4", "step 0 can be a candidate", "for k in range(1, y.numel())", "for k in range(0, y.numel())"),
    PlantedBug("C4", "strict > τ", "y[k].item() >= tau", "y[k].item() > tau"),
    PlantedBug("C4", "no fallback when τ = 0", "if tau == 0 and bool((y > 0).any()):", "if False:"),
    # C5 ATB
    PlantedBug("C5", "highest FCI first instead of earliest", "for k in fci_candidate_steps(fci, quantile):",
               "for k in sorted(fci_candidate_steps(fci, quantile), key=lambda k: -float(fci[k])):"),
    PlantedBug("C5", "spacing and start rules ignored", "if far_enough(k, accepted):", "if True:"),
    PlantedBug("C5", "a step starting exactly at min_start rejected", "if prompt_len + start < min_start:",
               "if prompt_len + start <= min_start:"),
    PlantedBug("C5", "no fallback", "offsets = _fallback_steps(len(steps), [starts[k] for k in accepted], starts, n)",
               "offsets = [starts[k] for k in accepted]"),
    # C6 Eq. 9
    PlantedBug("C6", "Python's banker's round for the paper's half up", "return _round_half_up(x)", "return round(x)"),
    PlantedBug("C6", "e^(+a) instead of e^(-a)", "math.exp(-accuracy)", "math.exp(accuracy)"),
    PlantedBug("C6", "ceil rule rounds", "return math.ceil(x)", "return round(x)"),
    # C7 choosing responses
    PlantedBug("C7", "the majority sampled with replacement", "extra = rng.sample(majority,", "extra = rng.choices(majority, k="),
    PlantedBug("C7", "attention filter not strict (>=)", "if not mean_fci > running_mean.mean:", "if not mean_fci >= running_mean.mean:"),
    PlantedBug("C7", "majority branched first", "(wrong, correct) if accuracy >= 0.5 else (correct, wrong)",
               "(correct, wrong) if accuracy >= 0.5 else (wrong, correct)"),
    PlantedBug("C7", "drop_easy ignored", "if drop_easy:", "if False:"),
    # C8 zero-advantage filter
    PlantedBug("C8", "sequences regrouped by prompt (input order lost)", "return [s for s in seqs if len(rewards_of[s.prompt_index]) > 1]",
               "return sorted([s for s in seqs if len(rewards_of[s.prompt_index]) > 1], key=lambda s: s.prompt_index)"),
    PlantedBug("C8", "keeps single-outcome prompts", "len(rewards_of[s.prompt_index]) > 1", "len(rewards_of[s.prompt_index]) >= 1"),
    PlantedBug("C8", "drops the wrong sequences instead of single-outcome prompts", "if len(rewards_of[s.prompt_index]) > 1]", "if s.reward > 0]"),
    # C9 Eq. 10
    PlantedBug("C9", "release target with / instead of //", "(prev_prompts * self.target_sequences) // n_sequences",
               "(prev_prompts * self.target_sequences) / n_sequences"),
    PlantedBug("C9", "no rounding that absorbs float noise", "new = math.ceil(round((1 - self.lam) * target + self.lam * prev_prompts, 9))",
               "new = math.ceil((1 - self.lam) * target + self.lam * prev_prompts)"),
    PlantedBug("C9", "λ on the target instead of on B_prev", "(1 - self.lam) * target + self.lam * prev_prompts",
               "self.lam * target + (1 - self.lam) * prev_prompts"),
    PlantedBug("C9", "no clamp to max_prompts", "max(1, min(self.max_prompts, new))", "max(1, new)"),
    # C10 the chunked FCI attention (text of the current implementation; update with it)
    PlantedBug("C10", "the full [H, T, T] attention in one block (the memory rule)", "chunk = min(fci_context.query_chunk, T)", "chunk = T"),
    PlantedBug("C10", "no 1/sqrt(d) scaling", "(query[b, :, pad:] * scaling)", "(query[b, :, pad:])"),
    PlantedBug("C10", "causal mask off by one (a query sees the next key)", "triu_(diagonal=1)", "triu_(diagonal=2)"),
    # D1 the pooled ratio and its bootstrap interval over prompts
    PlantedBug("D1", "single forks resampled, not prompts",
               "resample = [per_prompt[rng.randrange(len(per_prompt))] for _ in per_prompt]",
               "resample = [[rng.choice([f for fs in per_prompt for f in fs])] for fs in per_prompt for _ in fs]"),
    PlantedBug("D1", "prompts drawn without replacement", "resample = [per_prompt[rng.randrange(len(per_prompt))] for _ in per_prompt]",
               "resample = rng.sample(per_prompt, len(per_prompt))"),
    PlantedBug("D1", "the range of the draws instead of the 2.5% and 97.5% ones",
               "draws[int(0.025 * len(draws))], draws[min(len(draws) - 1, int(0.975 * len(draws)))]", "draws[0], draws[-1]"),
    PlantedBug("D1", "a resample without mixed forks counted as 0", "        if v is not None:\n            draws.append(v)",
               "        draws.append(v if v is not None else 0.0)"),
    PlantedBug("D1", "the mean of the prompts' ratios instead of the pooled ratio", "value = pooled_ratio(per_prompt, num, den)",
               "value = sum(pooled_ratio([fs], num, den) or 0.0 for fs in per_prompt) / len(per_prompt)"),
    PlantedBug("D1", "the mean of the draws as the ratio", "return value, draws[int(", "return sum(draws) / len(draws), draws[int("),
]
