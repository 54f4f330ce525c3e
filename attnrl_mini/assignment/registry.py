"""The exercise registry: what a student writes, where, for how many points, graded by which tests.

Each exercise is the body of one real function of the package, between `# BEGIN SOLUTION <id>` and
`# END SOLUTION <id>`. A student copy replaces the inside of that region by
`raise NotImplementedError("Exercise <id> (<equation>): ...")` (the markers stay: grading takes only
what is between them). Graded tests live in tests/graded/
and are named after their exercise: test_c2_... counts for C2 (hidden tests in an overlay too).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Part:
    letter: str
    title: str
    algo: str          # the train.py --algo its end-to-end check runs


PARTS = {
    "A": Part("A", "GRPO", "grpo"),
    "B": Part("B", "Tree rollouts", "treerl"),
    "C": Part("C", "AttnRL", "attnrl"),
    "D": Part("D", "An empirical question: which forks buy contrast?", ""),   # optional; no end-to-end run
}
DEFAULT_PARTS = "A,B,C"      # what build and grade use unless --parts says otherwise (D is the instructor's option)


@dataclass(frozen=True)
class Exercise:
    id: str                       # "C2"; the part is its first letter
    title: str
    module: str                   # "attnrl_mini.algorithm.fci"
    function: str                 # qualified name in the module: "step_attention_to_fci", "FCIContext.add_layer"
    points: int
    equation: str                 # "Eq. 5", or "" when the paper has none for it
    section: str                  # docs/algorithm.md section letter(s): "§b"
    tests: tuple[str, ...]        # graded test function names, in the test file of its part
    handout: str                  # what to write, for the handout
    depends_on: tuple[str, ...] = ()   # exercises its reference calls (its graded tests patch in plain versions)
    challenge: bool = False

    @property
    def part(self) -> str:
        return self.id[0]

    @property
    def test_file(self) -> str:
        return "/".join(("tests", "graded", f"test_part_{self.part.lower()}.py"))

    @property
    def node_ids(self) -> list[str]:
        return [f"{self.test_file}::{t}" for t in self.tests]

    @property
    def message(self) -> str:
        """The text of the student copy's NotImplementedError."""
        eq = f" ({self.equation})" if self.equation else ""
        return f"Exercise {self.id}{eq}: {self.title} - implement {self.function} in {self.module}, see the handout"


EXERCISES: list[Exercise] = [
    # ---- Part A: GRPO ---------------------------------------------------------------------------------
    Exercise("A1", "token log-probs and entropies", "attnrl_mini.algorithm.logprobs", "_chunk_logprobs", 5, "", "§g",
             ("test_a1_logprobs_and_entropy_by_hand", "test_a1_gradient_path_matches"),
             "Apply the LM head to one chunk of hidden states, take an fp32 log-softmax over the vocabulary, "
             "pick log π(target) and, when asked, the entropy H = -Σ_v π(v) log π(v) of the full distribution."),
    Exercise("A2", "response log-probs of a left-padded batch", "attnrl_mini.algorithm.logprobs", "response_positions", 5, "",
             "§g", ("test_a2_response_logprobs_against_full_logits", "test_a2_longest_response_not_first"),
             "Given the decoder's hidden states of left-padded prompt+response rows, pair every response "
             "token with the hidden state that predicts it, right-aligned in [B, R_max] with a mask that is "
             "False on padding (response_logprobs and fci.score_responses score the tokens from these). "
             "The hidden state at position t predicts token t+1: get the shift right.",
             depends_on=("A1",)),
    Exercise("A3", "group-normalised advantages (GRPO, Dr. GRPO)", "attnrl_mini.algorithm.tree", "grpo_advantages", 5,
             "GRPO advantage", "§d",
             ("test_a3_grpo_unbiased_std_by_hand", "test_a3_grpo_edge_groups", "test_a3_dr_grpo_mean_only"),
             "Â_i = (r_i - mean(r)) / (std(r) + eps) with the unbiased (n-1) std; a group of one uses mean 0 "
             "and std 1 (as verl). With scale_by_std=False return Dr. GRPO's mean-only r_i - mean(r)."),
    Exercise("A4", "PPO loss: clip-higher, dual clip, k3 KL, token-mean", "attnrl_mini.algorithm.loss", "ppo_loss", 10, "",
             "§g", ("test_a4_clip_higher_and_dual_clip_by_hand", "test_a4_asymmetric_clip_one_token_at_a_time",
                    "test_a4_padding_positions_ignored", "test_a4_k3_kl_by_hand",
                    "test_a4_token_mean_not_sequence_mean"),
             "Compute the per-token loss of the module docstring and define the names the statistics below "
             "the region use: log_ratio, ratio, loss_unclipped, loss_clipped, loss_clip, pg, kl and loss "
             "(a true token-mean: divide by denom)."),
    # ---- Part B: tree rollouts ---------------------------------------------------------------------------
    Exercise("B1", "step segmentation", "attnrl_mini.algorithm.steps", "segment_steps", 5, "", "§a",
             ("test_b1_separator_ends_its_step", "test_b1_fallbacks", "test_b1_newline_is_only_a_fallback",
              "test_b1_think_end_on_a_step_boundary", "test_b1_think_end_is_the_last_one"),
             "Cut a response into half-open token spans at separator tokens (a separator ends its step), "
             "falling back to newline tokens, then to one token per step; find the step holding the last </think>."),
    Exercise("B2", "building a prompt's rollout tree", "attnrl_mini.algorithm.tree", "build_prompt_tree", 5, "", "§c",
             ("test_b2_tree_shape_by_hand", "test_b2_equal_branch_points_share_a_node"),
             "Cut every initial response at its distinct branch offsets into a chain of nodes under the root; "
             "hang each continuation off the node that ends at its branch offset; leaves carry rewards."),
    Exercise("B3", "Monte-Carlo values and tree advantages", "attnrl_mini.algorithm.tree", "assign_values_and_advantages",
             10, "Eq. 2-3", "§d",
             ("test_b3_values_and_advantages_by_hand", "test_b3_deeper_tree_uses_parent_and_root"),
             "V(s) = mean reward of the leaves under s (Eq. 2); Â(s) = [(V(s) - V(R)) + (V(s) - V(parent))] / "
             "sqrt(|L(s)|) (Eq. 3); fill value, n_leaves and advantage of every node, the root's advantage is 0."),
    Exercise("B4", "training sequences from a tree", "attnrl_mini.algorithm.tree", "training_sequences", 5, "", "§d",
             ("test_b4_one_sequence_per_branched_path", "test_b4_train_unbranched_switch"),
             "One TrainSequence per root-to-leaf path: concatenated tokens, each token with its segment's "
             "advantage and old log-prob; skip one-segment paths unless train_unbranched."),
    Exercise("B5", "entropy branch points (TreeRL)", "attnrl_mini.algorithm.branching", "entropy_branch_points", 5, "",
             "§h", ("test_b5_highest_entropy_positions", "test_b5_ties_in_a_long_window", "test_b5_short_responses_cycle"),
             "The n highest-entropy positions among 0 .. R-2 (ties to the earlier one), cycled when there are "
             "fewer, returned sorted."),
    # ---- Part C: AttnRL ----------------------------------------------------------------------------------
    Exercise("C1", "Eq. 4's step-averaging matrix", "attnrl_mini.algorithm.fci", "step_weight_matrix", 5, "Eq. 4", "§b",
             ("test_c1_step_weight_matrix_by_hand", "test_c1_double_mean"),
             "W [S+1, T] with W[a, t] = 1/|r_a| for t in range a, so that W A Wᵀ is Eq. 4's double mean."),
    Exercise("C2", "forward context influence of each step", "attnrl_mini.algorithm.fci", "step_attention_to_fci", 5,
             "Eq. 5", "§b", ("test_c2_eq5_by_hand", "test_c2_think_end_and_batch_dims", "test_c2_think_end_zeroes_every_later_step"),
             "y[k] = Σ over ranges a at least Δ after step k's range of α[a, range of k]; zero the first "
             "response step and every step from the </think> step on. Works on any leading dims."),
    Exercise("C3", "max over heads and layers", "attnrl_mini.algorithm.fci", "FCIContext.add_layer", 5, "Eq. 6", "§b",
             ("test_c3_running_max_over_heads_and_layers", "test_c3_heads_differ_on_shared_entries"),
             "Fold one layer's [H, S+1, S+1] step matrices into the row's running FCI: Eq. 5 per head, then "
             "the max over heads and over the layers seen so far (and the same for the kept α when asked).",
             depends_on=("C2",)),
    Exercise("C4", "Eq. 7 candidate steps", "attnrl_mini.algorithm.branching", "fci_candidate_steps", 5, "Eq. 7", "§c",
             ("test_c4_quantile_threshold_by_hand", "test_c4_step0_excluded_and_zero_threshold",
              "test_c4_zero_threshold_takes_the_smallest_positive"),
             "τ = the 0.8 quantile (linear interpolation) of all S step scores; candidates are steps k >= 1 "
             "with y_k >= τ; if τ = 0 while some y_k > 0, τ is the smallest positive y_k."),
    Exercise("C5", "ATB branch points", "attnrl_mini.algorithm.branching", "fci_branch_points", 5, "Eq. 7", "§c",
             ("test_c5_earliest_candidates_not_highest", "test_c5_spacing_and_start_rules",
              "test_c5_fallback_cycles", "test_c5_spacing_both_ways_and_absolute_start"),
             "Scan the candidates earliest first, accept a step if it starts late enough and is min_gap tokens "
             "from every accepted step; short of n, use the fallback; return sorted offsets.",
             depends_on=("C4",)),
    Exercise("C6", "branch counts", "attnrl_mini.algorithm.adaptive", "branch_count", 5, "Eq. 8-9", "§e",
             ("test_c6_branch_counts_g6", "test_c6_other_g", "test_c6_exact_half_rounds_up"),
             "M(a) = ceil(G·e^(-a)) (release), Round(G·e^(-a)) half up (paper) or G (uniform)."),
    Exercise("C7", "which responses to branch; the attention filter", "attnrl_mini.algorithm.adaptive",
             "choose_responses_to_branch", 5, "Eq. 8-9", "§e",
             ("test_c7_minority_first", "test_c7_attention_filter_is_strict", "test_c7_distinct_majority_sample"),
             "a = 0: all responses; 0 < a < 1: the minority outcome plus random majority ones up to M(a); "
             "a = 1: dropped (drop_easy) or kept only if the prompt's mean FCI beats the running mean.",
             depends_on=("C6",)),
    Exercise("C8", "the zero-advantage filter", "attnrl_mini.algorithm.adaptive", "drop_zero_advantage_prompts", 5, "",
             "§e", ("test_c8_drop_prompts_without_contrast", "test_c8_keeps_the_input_order"),
             "Drop every sequence of a prompt whose trained leaves all have one reward."),
    Exercise("C9", "the batch-size controller", "attnrl_mini.algorithm.adaptive", "BatchSizeController.next_batch_size", 5,
             "Eq. 10", "§e", ("test_c9_release_rule_by_hand", "test_c9_paper_rule_by_hand", "test_c9_floor_noise_and_clamps",
              "test_c9_paper_rule_half_up_and_clamps"),
             "The next number of prompts from the last one and the surviving sequences B'': the release's "
             "floor/ceil rule or the paper's Eq. 10, clamped to [1, max_prompts]."),
    Exercise("C10", "challenge: the exact chunked FCI attention", "attnrl_mini.algorithm.fci", "fci_attention", 15,
             "Eq. 4-6", "§b", ("test_c10_chunked_attention_matches_eager", "test_c10_never_builds_the_full_attention"),
             "Per row, per block of query_chunk query rows: logits against the earlier keys (skip left pads, "
             "causal mask, GQA), an fp32 softmax, the attention output P·V, and Eq. 4's step matrix "
             "accumulated block by block; hand each layer's [H, S+1, S+1] matrix to the context (add_layer). "
             "Never build an [H, T, T] tensor.",
             depends_on=("C3",), challenge=True),
    # ---- Part D (optional): the branch-selector study ---------------------------------------------------
    Exercise("D1", "a pooled ratio over forks and its bootstrap interval", "attnrl_mini.tools.fork_stats",
             "bootstrap_ratio", 5, "", "§h",
             ("test_d1_pooled_not_mean_of_prompts", "test_d1_resamples_prompts_not_forks",
              "test_d1_empty_resamples_dropped", "test_d1_percentile_interval"),
             "The study's every column: the pooled ratio Σ num / Σ den over all forks of all prompts, and its "
             "95% percentile-bootstrap interval over prompts (resample prompts with replacement, drop "
             "resamples whose den sums to 0, take the sorted draws at int(0.025 k) and min(k - 1, int(0.975 k)))."),
]


@dataclass(frozen=True)
class Question:
    """An empirical question: answered as data in a file of the copy, graded by rerunning (part_d.py)."""
    id: str
    title: str
    points: int
    answers_file: str

    @property
    def part(self) -> str:
        return self.id[0]


QUESTIONS: list[Question] = [
    Question("D2", "the selector study with your seed (counts)", 10, "PART_D.json"),
]

BY_ID = {e.id: e for e in EXERCISES}


def exercises_of(parts: str | list[str]) -> list[Exercise]:
    """The exercises of the given parts ("A,B" or ["A", "B"]), in registry order."""
    letters = [p.strip().upper() for p in (parts.split(",") if isinstance(parts, str) else parts) if p.strip()]
    unknown = [p for p in letters if p not in PARTS]
    if unknown:
        raise ValueError(f"unknown part(s) {', '.join(unknown)}; the parts are {', '.join(PARTS)}")
    return [e for e in EXERCISES if e.part in letters]


def questions_of(parts: str | list[str]) -> list[Question]:
    """The empirical questions of the given parts (checked like exercises_of)."""
    letters = {e.part for e in exercises_of(parts)}
    return [q for q in QUESTIONS if q.part in letters]


def exercise_of_test(test_name: str) -> str | None:
    """The exercise a test function counts for, by its name: test_c10_... -> "C10"."""
    head = test_name.split("::")[-1].split("[")[0]
    if not head.startswith("test_"):
        return None
    xid = head[5:].split("_")[0].upper()
    return xid if xid in BY_ID else None
