"""The AttnRL training loop (paper §3.3, docs/algorithm.md §f), one-step-stale, on one device.

At step m, with the adapter θ_{m-1} loaded in the generator (docs/design.md, "One training step"):
  1. ONE generation call: G initial responses for each prompt of batch m+1, and T continuations
     for every branch prefix of batch m (chosen one step earlier).
  2. Grade everything.
  3. One no-grad forward over batch m+1's initials: old log-probs, entropies, FCI per step.
     ADS + ATB choose batch m+1's branch prefixes (they go into step m+1's call).
  4. Batch m: trees, advantages (Eq. 2-3), zero-advantage filter, PPO update θ_{m-1} → θ_m,
     prompt-batch controller (Eq. 10).
  5. Save adapter version m; the generator loads it.
`one_step_stale=False` is the on-policy variant: two generation calls per step (initials, then
branches of the same batch). GRPO and TreeRL are the same loop with other switches (config.algo_overrides).

Simplifications (a one-GPU reimplementation, not verl): no Ray, no FSDP; old log-probs are
recomputed by the trainer as in the release; unbranched responses are not trained (switchable).
The schedule around the steps (set-up, resume, held-out evaluation, checkpoints) is run/driver.py.
"""
from __future__ import annotations

import contextlib
import math
import os
import random
import shutil
import time
from dataclasses import dataclass, field

import torch

from attnrl_mini.algorithm import adaptive, branching, packing, tree
from attnrl_mini.algorithm.fci import score_responses
from attnrl_mini.algorithm.logprobs import response_logprobs
from attnrl_mini.algorithm.loss import ppo_loss
from attnrl_mini.algorithm.steps import newline_token_ids, segment_steps, separator_token_ids, think_end_token_id
from attnrl_mini.algorithm.tree import Continuation, Rollout
from attnrl_mini.generation import GenRequest, logprob_mismatch
from attnrl_mini.models import precision
from attnrl_mini.config import Config
from attnrl_mini.worlds.problem import Problem, ProblemStream


# --------------------------------------------------------------------------------------------
# Typed batch state
# --------------------------------------------------------------------------------------------
@dataclass
class BranchRequest:
    """One branch prefix: response `response_idx` of prompt `prompt_idx`, cut at `offset`."""
    prompt_idx: int
    response_idx: int
    point_idx: int
    offset: int


@dataclass
class PromptGroup:
    """One prompt of a batch with its G initial responses (tree.Rollout) and per-step scores."""
    problem: Problem
    prompt_ids: list[int]
    rollouts: list[Rollout]
    steps: list[list[tuple[int, int]]] = field(default_factory=list)   # per response
    fci: list[list[float]] = field(default_factory=list)               # per response, per step
    dropped: bool = False                                              # attention filter dropped it

    @property
    def accuracy(self) -> float:
        return sum(r.reward for r in self.rollouts) / len(self.rollouts)

    @property
    def continuation_rewards(self) -> list[float]:
        return [c.reward for r in self.rollouts for cs in r.continuations for c in cs]


@dataclass
class Batch:
    """A prompt batch on its way through the pipeline."""
    index: int                       # data batch number (1-based)
    groups: list[PromptGroup]
    branches: list[BranchRequest] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# The trainer
# --------------------------------------------------------------------------------------------
class Trainer:
    def __init__(self, cfg: Config, model, tokenizer, generator, grader, train_problems: list[Problem],
                 encode_prompt, log=print):
        """`encode_prompt(problem) -> prompt ids` (the toy template or the paper's, through the chat template)."""
        self.cfg, self.model, self.tok, self.generator, self.grader = cfg, model, tokenizer, generator, grader
        self.encode_prompt, self.log = encode_prompt, log
        self.device = next(model.parameters()).device
        self.pad_id = tokenizer.pad_token_id
        self.logprob_chunk = cfg.logprob_chunk_tokens or None   # 0: logprobs.default_chunk picks it
        self.stream = ProblemStream(train_problems, cfg.seed)
        self.rng = random.Random(cfg.seed)
        trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(trainable, lr=cfg.lr, weight_decay=cfg.weight_decay, betas=(0.9, 0.999))
        self.scaler = precision.grad_scaler(model, self.device)   # loss scaling for an fp16 model, else a pass-through
        self.running_fci = adaptive.RunningMean(kind=cfg.running_mean, alpha=cfg.running_mean_ema)
        self.batch_ctl = adaptive.BatchSizeController(
            cfg.prompts_per_step, cfg.target_sequences, lam=cfg.batch_lambda, max_prompts=cfg.max_prompts_per_step)
        self.prompt_batch_size = cfg.prompts_per_step
        self.step = 0                    # policy updates done
        self.batches_sampled = 0
        self.pending: Batch | None = None  # stale mode: batch with initials + chosen branches, awaiting continuations
        self.cumulative_tokens = 0
        self.nonfinite_skipped = 0
        self.sep_ids, self.nl_ids, self.think_id = (separator_token_ids(tokenizer), newline_token_ids(tokenizer),
                                                    think_end_token_id(tokenizer))
        self._adapter_dir: str | None = None   # tmpfs folder of the adapter versions sent to the sidecar
        self._last_dumps: list[dict] = []

    # ---- one step: the paper's algorithm box ---------------------------------------------------
    def train_step(self) -> dict:
        """One policy update θ_{m-1} → θ_m (docs/design.md, "One training step").

        The two schedules differ only in when batch m's continuations are sampled. One-step-stale: in
        the same generation call as batch m+1's initials (batch m's branch prefixes were chosen one step
        earlier). On-policy: in a second call, right after batch m's own initials were scored.
        """
        cfg, m = self.cfg, self.step + 1
        secs: dict[str, float] = {}
        # 1-3. sample, grade, score (old log-probs, entropies, FCI) and choose branch prefixes (Eq. 7-9)
        if cfg.one_step_stale:
            batch = self.pending
            nxt = None if m == cfg.steps else self._new_batch()
            comps, plan = self._rollout(nxt, batch, self._gen_seed(m), secs)
            self.pending = nxt
        else:
            batch = self._new_batch()
            comps, plan = self._rollout(batch, None, self._gen_seed(m), secs)
            if batch.branches:
                comps += self._rollout(None, batch, self._gen_seed(m) + 1, secs)[0]

        # 4. trees, advantages (Eq. 2-3), zero-advantage filter, PPO update θ_{m-1} → θ_m, batch size (Eq. 10)
        with _phase(secs, "train"):
            seqs, self._last_dumps = self._training_sequences(batch)
            n_built = len(seqs)
            # valid samples: sequences of prompts whose leaves do not all share one reward (§e.2), whether
            # or not the filter then drops the others
            n_valid = len(with_signal := adaptive.drop_zero_advantage_prompts(seqs))
            if cfg.zero_adv_filter:
                seqs = with_signal
            update_stats = self._update(seqs) if seqs else {"optimizer_steps": 0}
            if cfg.dynamic_batch:
                self.prompt_batch_size = self.batch_ctl.next_batch_size(self.prompt_batch_size, len(seqs))

        # 5. the generator samples θ_m from now on
        with _phase(secs, "publish"):
            self.step = m
            self._publish_adapter()
        return {**plan, **self._step_metrics(batch, comps, seqs, n_built, n_valid, update_stats, secs)}

    def warmup(self) -> dict:
        """Stale mode's first generation call: batch 1's initials and branch prefixes, nothing to train."""
        secs: dict[str, float] = {}
        batch = self._new_batch()
        self._rollout(batch, None, self._gen_seed(0), secs)
        self.pending = batch
        return secs

    def _rollout(self, initials_of: Batch | None, continuations_of: Batch | None, seed: int,
                 secs: dict[str, float]) -> tuple[list, dict]:
        """Steps 1-3 for ONE generation call: G initial responses for every prompt of `initials_of` and T
        continuations for every branch prefix of `continuations_of`; grade them all; score the new
        initials and choose their branch prefixes; attach the continuations. Returns (completions, the
        scoring's metrics)."""
        init_reqs = self._initial_requests(initials_of) if initials_of else []
        branch_reqs = self._branch_requests(continuations_of) if continuations_of else []
        with _phase(secs, "generate"):
            comps = self.generator.generate(init_reqs + branch_reqs, temperature=self.cfg.temperature, seed=seed)
        self.cumulative_tokens += _count_tokens(comps)
        init_comps, branch_comps = comps[:len(init_reqs)], comps[len(init_reqs):]
        with _phase(secs, "grade"):
            texts_i, ans_i = self._texts(initials_of, init_comps, branch=False) if initials_of else ([], [])
            texts_b, ans_b = self._texts(continuations_of, branch_comps, branch=True) if continuations_of else ([], [])
            rewards = self.grader.grade(texts_i + texts_b, ans_i + ans_b)
        plan = {}
        with _phase(secs, "score"):
            if initials_of:
                self._attach_initials(initials_of, init_comps, rewards[:len(texts_i)])
                plan = self._score_and_plan(initials_of)
            if continuations_of:
                self._attach_continuations(continuations_of, branch_comps, rewards[len(texts_i):])
        return comps, plan

    def _step_metrics(self, batch: Batch, comps, seqs, n_built: int, n_valid: int, update_stats: dict,
                      secs: dict[str, float]) -> dict:
        """One metrics.jsonl record (docs/usage.md lists the fields)."""
        accs = [g.accuracy for g in batch.groups]
        cont_rewards = [x for g in batch.groups for x in g.continuation_rewards]
        return {
            "step": self.step,
            "train_accuracy": sum(accs) / len(accs),
            "reward": sum(accs) / len(accs),
            "continuation_accuracy": (sum(cont_rewards) / len(cont_rewards)) if cont_rewards else None,
            "prompts": len(batch.groups),
            "next_prompt_batch": self.prompt_batch_size,
            "sequences_built": n_built,
            "sequences_trained": len(seqs),
            "trained_tokens": sum(len(s.response_ids) for s in seqs),
            "valid_ratio": n_valid / n_built if n_built else 0.0,
            "trained_valid_ratio": n_valid / len(seqs) if seqs else 0.0,   # 1.0 whenever the zero-adv filter is on
            "prompt_valid_ratio": _prompt_valid_ratio(batch),
            "generated_tokens": _count_tokens(comps),
            "cumulative_generated_tokens": self.cumulative_tokens,
            "nonfinite_skipped": self.nonfinite_skipped,
            "generator": self.generator.name,
            **update_stats,
            **{f"seconds_{k}": round(v, 3) for k, v in secs.items()},
            "branch_stats": _branch_stats(batch),
        }

    # ---- steps 1-3: requests, grading, scoring and planning -----------------------------------
    def _new_batch(self) -> Batch:
        self.batches_sampled += 1
        problems = self.stream.take(self.prompt_batch_size)
        groups = [PromptGroup(p, self.encode_prompt(p), []) for p in problems]
        return Batch(self.batches_sampled, groups)

    def _initial_requests(self, batch: Batch) -> list[GenRequest]:
        return [GenRequest(g.prompt_ids, self.cfg.n_initial, self.cfg.max_response_tokens) for g in batch.groups]

    def _branch_requests(self, batch: Batch) -> list[GenRequest]:
        reqs = []
        for b in batch.branches:
            g = batch.groups[b.prompt_idx]
            prefix = g.rollouts[b.response_idx].response_ids[:b.offset]
            # per-request max tokens = response budget − prefix length (a departure, docs/algorithm.md §c.3)
            reqs.append(GenRequest(g.prompt_ids + prefix, self.cfg.n_continuations,
                                   max(1, self.cfg.max_response_tokens - b.offset)))
        return reqs

    def _texts(self, batch: Batch, completions, branch: bool) -> tuple[list[str], list]:
        """Texts to grade and their answers. Continuations are graded on prefix + continuation."""
        texts, answers = [], []
        if not branch:
            for g, comps in zip(batch.groups, completions):
                for c in comps:
                    texts.append(self.tok.decode(c.token_ids, skip_special_tokens=True))
                    answers.append(g.problem.answer)
        else:
            for b, comps in zip(batch.branches, completions):
                g = batch.groups[b.prompt_idx]
                prefix = g.rollouts[b.response_idx].response_ids[:b.offset]
                for c in comps:
                    texts.append(self.tok.decode(prefix + c.token_ids, skip_special_tokens=True))
                    answers.append(g.problem.answer)
        return texts, answers

    def _attach_initials(self, batch: Batch, completions, rewards: list[float]) -> None:
        k = 0
        for g, comps in zip(batch.groups, completions):
            for c in comps:
                g.rollouts.append(Rollout(response_ids=list(c.token_ids), old_logprobs=list(c.logprobs), reward=rewards[k]))
                k += 1

    def _score_and_plan(self, batch: Batch) -> dict:
        """Step 3: old log-probs + entropies + FCI in one no-grad forward; then ADS + ATB (Eq. 7-9)."""
        cfg = self.cfg
        flat = [(gi, ri) for gi, g in enumerate(batch.groups) for ri in range(len(g.rollouts))]
        prompts = [batch.groups[gi].prompt_ids for gi, _ in flat]
        responses = [batch.groups[gi].rollouts[ri].response_ids for gi, ri in flat]
        segs = [segment_steps(r, self.sep_ids, self.nl_ids, self.think_id) for r in responses]
        # FCI for ATB's branch points, and for Eq. 8's attention filter whatever selects the branch points
        want_fci = cfg.branch_selector in branching.NEEDS_FCI or (cfg.attention_filter and cfg.branch_selector != "none")
        self.model.eval()
        scored = score_responses(
            self.model, prompts, responses,
            steps=[s.steps for s in segs] if want_fci else None,
            think_end_steps=[s.think_end_step for s in segs] if want_fci else None,
            delta=cfg.fci_delta, query_chunk=cfg.fci_query_chunk, pad_id=self.pad_id,
            batch_size=cfg.score_batch_size, logprob_chunk=self.logprob_chunk, kernel=cfg.fci_kernel)
        sampler_lp = [batch.groups[gi].rollouts[ri].old_logprobs for gi, ri in flat]
        trainer_lp = [s.logprobs.tolist() for s in scored]
        mismatch = logprob_mismatch(sampler_lp, trainer_lp)
        entropies = {}
        for (gi, ri), s, seg in zip(flat, scored, segs):
            g = batch.groups[gi]
            g.rollouts[ri].old_logprobs = s.logprobs.tolist()  # importance ratios use the trainer's recompute (§f)
            g.steps.append(seg.steps)
            g.fci.append(s.fci.tolist() if s.fci is not None else [0.0] * len(seg.steps))
            entropies[(gi, ri)] = s.entropies

        # ADS: which responses of each prompt get branched; the all-correct filter (Eq. 8-9).
        if cfg.branch_selector == "none":
            return {"logprob_abs_diff": mismatch["mean_abs_diff"], "logprob_kl": mismatch["kl_estimate"]}
        mean_fci = [adaptive.prompt_mean_fci([torch.tensor(f) for f in g.fci]) for g in batch.groups]
        chosen = adaptive.choose_for_batch(
            [[r.reward for r in g.rollouts] for g in batch.groups], mean_fci, self.running_fci, self.rng,
            rule=cfg.branch_count_rule, attention_filter=cfg.attention_filter, G=cfg.n_initial,
            drop_easy=cfg.drop_easy)
        n_dropped = 0
        for gi, (g, idx) in enumerate(zip(batch.groups, chosen)):
            if idx is None:
                g.dropped, n_dropped = True, n_dropped + 1
                continue
            for ri in idx:
                points = branching.select_branch_points(
                    cfg.branch_selector, fci=torch.tensor(g.fci[ri]), entropies=entropies[(gi, ri)],
                    steps=g.steps[ri], prompt_len=len(g.prompt_ids), n=cfg.n_branch_points,
                    quantile=cfg.fci_quantile, min_gap=cfg.min_branch_gap, min_start=cfg.min_branch_start, rng=self.rng)
                g.rollouts[ri].branch_points = list(points)
                g.rollouts[ri].continuations = [[] for _ in points]
                batch.branches += [BranchRequest(gi, ri, pi, off) for pi, off in enumerate(points)]
        return {"logprob_abs_diff": mismatch["mean_abs_diff"], "logprob_kl": mismatch["kl_estimate"],
                "prompts_filtered": n_dropped, "branch_prefixes": len(batch.branches)}

    def _attach_continuations(self, batch: Batch, completions, rewards: list[float]) -> None:
        """Old log-probs of continuation tokens are recomputed with the weights that sampled them (§f)."""
        prompts, responses, where = [], [], []
        k = 0
        for b, comps in zip(batch.branches, completions):
            g = batch.groups[b.prompt_idx]
            r = g.rollouts[b.response_idx]
            for c in comps:
                cont = Continuation(token_ids=list(c.token_ids), logprobs=list(c.logprobs), reward=rewards[k])
                r.continuations[b.point_idx].append(cont)
                prompts.append(g.prompt_ids + r.response_ids[:b.offset])
                responses.append(cont.token_ids)
                where.append(cont)
                k += 1
        if where:
            self.model.eval()
            scored = score_responses(self.model, prompts, responses, pad_id=self.pad_id,
                                     batch_size=self.cfg.score_batch_size, logprob_chunk=self.logprob_chunk)
            for cont, s in zip(where, scored):
                cont.logprobs = s.logprobs.tolist()

    # ---- step 4: trees, advantages, the update ------------------------------------------------
    def _training_sequences(self, batch: Batch) -> tuple[list[tree.TrainSequence], list[dict]]:
        """Step 4: trees and advantages (Eq. 2-3), or GRPO's group-normalised advantage."""
        seqs, dumps = [], []
        for gi, g in enumerate(batch.groups):
            if g.dropped:
                continue
            if self.cfg.branch_selector == "none":  # GRPO: one sequence per response, constant advantage
                seqs += tree.grpo_sequences(g.rollouts, g.prompt_ids, gi, scale_by_std=not self.cfg.dr_grpo)
                continue
            root = tree.build_prompt_tree(g.rollouts)
            tree.assign_values_and_advantages(root)
            seqs += tree.training_sequences(root, g.prompt_ids, gi, train_unbranched=self.cfg.train_unbranched)
            if len(dumps) < self.cfg.dump_trees:
                dumps.append(self._tree_dump(g, root))
        return seqs, dumps

    def _tree_dump(self, g: PromptGroup, root) -> dict:
        d = tree.tree_to_dict(root)

        def decode(node):
            node["text"] = self.tok.decode(node.pop("tokens"), skip_special_tokens=False)
            for ch in node.get("children", []):
                decode(ch)
        decode(d)
        return {"problem": g.problem.problem, "answer": g.problem.answer,
                "responses": [{"fci": f, "steps": s, "branch_points": r.branch_points, "reward": r.reward}
                              for f, s, r in zip(g.fci, g.steps, g.rollouts)], "tree": d}

    def _update(self, seqs: list[tree.TrainSequence]) -> dict:
        """PPO with clip-higher + dual clip + k3 KL, a true token-mean per mini-batch (docs/algorithm.md §g;
        the release averages per-micro-batch token-means instead: a departure).

        The reference form (update_packing="per_path", as the release): every root-to-leaf path is its
        own row. "shared" packs each prompt's paths of a mini-batch into one token trie (packing.py), so
        a branch prefix is computed once; the loss is still computed on the per-path tensors gathered
        from it, so its value, gradient and statistics are the per-path update's.
        """
        cfg = self.cfg
        stats_acc: dict[str, float] = {}
        n_updates = computed = 0
        for mini in self._mini_batches(seqs):
            n_tokens = sum(len(s.response_ids) for s in mini)
            if n_tokens == 0:
                continue
            self.model.train()
            self.optimizer.zero_grad(set_to_none=True)
            for micro, packed in self._micro_batches(mini):
                responses = [s.response_ids for s in micro]
                R = max(len(r) for r in responses)
                old, adv, mask = (_right_aligned([s.old_logprobs for s in micro], R, self.device),
                                  _right_aligned([s.advantages for s in micro], R, self.device),
                                  _right_aligned([[1.0] * len(r) for r in responses], R, self.device))
                ref = None
                if cfg.kl_coef > 0:
                    with torch.no_grad(), self.model.disable_adapter():
                        ref = self._path_logprobs(micro, packed)
                logp = self._path_logprobs(micro, packed)
                loss, stats = ppo_loss(logp, old, ref, adv, mask, clip_low=cfg.clip_low, clip_high=cfg.clip_high,
                                       clip_c=cfg.clip_c, kl_coef=cfg.kl_coef, n_tokens=n_tokens)
                self.scaler.scale(loss).backward()
                computed += sum(t.n_response_tokens for t in packed) if packed else int(mask.sum().item())
                w = mask.sum().item() / n_tokens
                for k, v in stats.items():
                    stats_acc[k] = stats_acc.get(k, 0.0) + w * float(v)
            params = [p for p in self.model.parameters() if p.requires_grad]
            self.scaler.unscale_(self.optimizer)   # fp16: true gradients before the clip
            grad_norm = torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
            if not torch.isfinite(grad_norm):  # skip and count, as verl does
                self.nonfinite_skipped += 1
                self.scaler.update()   # fp16: the overflow halves the loss scale
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.scaler.step(self.optimizer)
            self.scaler.update()
            n_updates += 1
            stats_acc["grad_norm"] = stats_acc.get("grad_norm", 0.0) + float(grad_norm)
        n_mb = max(1, math.ceil(len(seqs) / cfg.mini_batch_sequences))
        out = {k: v / n_mb for k, v in stats_acc.items()}
        out["optimizer_steps"] = n_updates
        if self.scaler.is_enabled():   # fp16: the loss scale after this step's updates
            out["loss_scale"] = self.scaler.get_scale()
        out["update_computed_tokens"] = computed   # response tokens run through the model (< trained when shared)
        return out

    def _mini_batches(self, seqs: list[tree.TrainSequence]) -> list[list[tree.TrainSequence]]:
        """Shuffle, then cut into mini-batches of mini_batch_sequences (one optimiser step each).

        The batch arrives ordered originals-then-branches. per_path and shared shuffle the paths (the
        release); shared_trees shuffles whole prompt trees and concatenates them, so the paths of a
        tree share a mini-batch (and their prefixes get computed once) except where a cut splits it.
        """
        if self.cfg.update_packing == "shared_trees":
            by_prompt: dict[int, list[tree.TrainSequence]] = {}
            for s in seqs:
                by_prompt.setdefault(s.prompt_index, []).append(s)
            trees = list(by_prompt.values())
            self.rng.shuffle(trees)
            seqs = [s for t in trees for s in t]
        else:
            seqs = list(seqs)
            self.rng.shuffle(seqs)
        n = self.cfg.mini_batch_sequences
        return [seqs[i:i + n] for i in range(0, len(seqs), n)]

    def _micro_batches(self, mini: list[tree.TrainSequence]):
        """Yield (paths, packed trees or None): per path, rows of at most micro_batch_tokens padded tokens;
        shared, the packed trees of each prompt's paths (packing.pack_groups), so many per micro-batch."""
        max_tokens = self.cfg.micro_batch_tokens
        if self.cfg.update_packing == "per_path":
            for micro in _greedy_by_padded_size(mini, lambda s: len(s.prompt_ids) + len(s.response_ids), max_tokens):
                yield micro, None
            return
        packed = packing.pack_groups([s.prompt_ids for s in mini], [s.response_ids for s in mini], max_tokens)
        for group in _greedy_by_padded_size(packed, lambda tm: len(tm[0].input_ids), max_tokens):
            yield [mini[i] for _, members in group for i in members], [t for t, _ in group]

    def _path_logprobs(self, micro: list[tree.TrainSequence], packed) -> torch.Tensor:
        """log π of each path's response tokens, right-aligned [len(micro), R_max], per path or packed."""
        if packed is None:
            return response_logprobs(self.model, [s.prompt_ids for s in micro], [s.response_ids for s in micro],
                                     self.pad_id, self.logprob_chunk)
        return packing.gather_paths(packing.packed_token_logprobs(self.model, packed, self.logprob_chunk), packed)

    # ---- step 5: publish the adapter ---------------------------------------------------------
    def _publish_adapter(self) -> None:
        """Step 5: the generator samples θ_m from now on (only the LoRA adapter travels)."""
        if self.generator.name == "hf":  # the HF backend samples from this very model
            self.generator.load_adapter("", self.step)
            return
        if self._adapter_dir is None:
            from attnrl_mini.generation import adapter_scratch_dir
            self._adapter_dir = adapter_scratch_dir()
        path = os.path.join(self._adapter_dir, f"v{self.step}")
        self.model.save_pretrained(path)
        self.generator.load_adapter(path, self.step)
        shutil.rmtree(os.path.join(self._adapter_dir, f"v{self.step - 1}"), ignore_errors=True)  # loaded by now

    def close(self) -> None:
        if self._adapter_dir is not None:
            shutil.rmtree(self._adapter_dir, ignore_errors=True)

    def _gen_seed(self, m: int) -> int:
        return self.cfg.seed * 7919 + m * 2


@contextlib.contextmanager
def _phase(secs: dict[str, float], name: str):
    """Adds the block's wall-clock seconds to secs[name] (the seconds_* fields of metrics.jsonl)."""
    t0 = time.time()
    yield
    secs[name] = secs.get(name, 0.0) + time.time() - t0


def _count_tokens(comps) -> int:
    return sum(len(c.token_ids) for cs in comps for c in cs)


def _right_aligned(rows: list[list[float]], R: int, device) -> torch.Tensor:
    out = torch.zeros(len(rows), R, dtype=torch.float32)
    for i, r in enumerate(rows):
        if r:
            out[i, R - len(r):] = torch.tensor(r, dtype=torch.float32)
    return out.to(device)


def _greedy_by_padded_size(items, size, max_tokens: int):
    """Greedy packing by padded size (rows × longest row), so no group exceeds max_tokens
    (an item larger than max_tokens goes alone)."""
    cur, longest = [], 0
    for it in items:
        n = size(it)
        if cur and max(longest, n) * (len(cur) + 1) > max_tokens:
            yield cur
            cur, longest = [], 0
        cur.append(it)
        longest = max(longest, n)
    if cur:
        yield cur


def _branch_stats(batch: Batch) -> dict:
    """Where branch points fall and what forking there bought (issue #7).

    at_step_start / mean_relative_position: where in the response the fork is.
    mixed_outcome: fraction of branch points whose continuations and the original response do not all
    share one reward, i.e. forking there produced contrasting outcomes, which is what gives the tree
    a non-zero advantage (the per-branch analogue of the paper's Fig. 6 solve-all / solve-none ratios).
    """
    n = at_start = mixed = 0
    rel = 0.0
    for b in batch.branches:
        g = batch.groups[b.prompt_idx]
        r = g.rollouts[b.response_idx]
        starts = {s for s, _ in g.steps[b.response_idx]}
        n += 1
        at_start += b.offset in starts
        rel += b.offset / max(1, len(r.response_ids))
        mixed += len({r.reward} | {c.reward for c in r.continuations[b.point_idx]}) > 1
    if not n:
        return {"n": 0, "at_step_start": None, "mean_relative_position": None, "mixed_outcome": None}
    return {"n": n, "at_step_start": at_start / n, "mean_relative_position": rel / n, "mixed_outcome": mixed / n}


def _prompt_valid_ratio(batch: Batch) -> float:
    """Fraction of the sampled prompts whose leaves (initial responses + continuations) are not all
    correct or all wrong: the paper's prompt valid ratio (Fig. 6), before any filter drops a prompt."""
    mixed = [len({r.reward for r in g.rollouts} | set(g.continuation_rewards)) > 1 for g in batch.groups]
    return sum(mixed) / len(mixed)
