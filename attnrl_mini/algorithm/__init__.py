"""The paper's pieces, in the order the paper introduces them (docs/walkthrough.md maps each to its test).

    steps.py       §3.1.1  a response cut into reasoning steps at "\\n\\n" separator tokens
    fci.py         Eq. 4-6 Forward Context Influence: step-level attention, Δ-masked column sums, max over
                           heads and layers, exact and query-chunked inside the old-log-prob forward
    fci_triton.py  Eq. 4   the same FCI on a GPU: flash attention + a Triton kernel for the accumulation
    branching.py   Eq. 7   where to branch: ATB's high-FCI steps (and the baselines' and two further selectors)
    tree.py        Eq. 2-3 rollout trees, Monte-Carlo values, tree advantages, training sequences
    adaptive.py    Eq. 8-10 adaptive sampling: branch counts, attention filter, zero-advantage filter,
                           the prompt-batch controller
    logprobs.py    §3.3    token log-probs and entropies of a left-padded batch, the LM head in chunks
    loss.py        §3.3    PPO clip-higher + dual clip + k3 KL, true token-mean
    packing.py     (ours)  the optional prefix-shared update: a prompt's paths as one token trie

Nothing here imports the rest of attnrl_mini: the pieces take token ids, tensors and models.
"""
