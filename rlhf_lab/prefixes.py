"""Teacher forcing with shared prefixes: each distinct prefix of a batch goes through the model once.

The rows of a batch in the small worlds share most of their prefixes: the G completions of a
prompt start with the same prompt tokens, most of them with the same first words. A token's
hidden state depends only on the tokens before it, so two rows that agree up to position p
have the same hidden states up to p. ``forward`` lays the batch out as a forest: one node per
distinct prefix (a prompt and the first k words of a completion), each node attending to its
ancestors and itself, and runs the model over the nodes instead of over every row's every
position. On a GRPO batch of the reviews world (16 prompts × 8 samples, cpu scale) that is
≈ 185 nodes instead of 368 positions; the forward and backward take about a third less time
(README, "Performance").

The trees (rows with the same first token) are packed into sequences of about ``CHUNK`` nodes,
so attention, which grows with the square of a sequence's length, stays small whatever the
batch. Where the rows share little (fewer than a quarter of their positions), the plain
row-by-row ``gpt2.forward`` runs instead, and where the policy is not a plain GPT-2 the model's
own forward (``lm_logits`` chooses). Values equal the row-by-row pass up to the last bits of
float rounding, and so do the gradients (tests/test_gpt2_forward.py).

Introduced for the performance work of issue 18.
"""

from __future__ import annotations

import math

import torch

from rlhf_lab import gpt2

CHUNK = 256  # nodes per packed sequence (a tree is never split, so a chunk may hold up to CHUNK + one tree)
MIN_SHARED = 0.25  # share of real positions the forest must save for it to run


def unique_rows(rows: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The distinct rows of a non-negative integer matrix: how many, and each row's index among them.

    Each row becomes one int64 (its entries as the digits of a number in base max + 1) where that
    fits, so one 1-D ``torch.unique`` does the work: much cheaper than ``unique(dim=0)`` or a
    Python set of tuples. Indices follow the rows' lexicographic order. Shape: rows (B, T) → U, inverse (B,) in [0, U).
    """
    base = int(rows.max()) + 1 if rows.numel() else 1
    if rows.shape[1] * math.log2(max(base, 2)) < 62:
        powers = base ** torch.arange(rows.shape[1] - 1, -1, -1, device=rows.device, dtype=torch.long)
        unique, inverse = torch.unique((rows * powers).sum(dim=1), return_inverse=True)  # (U,), (B,)
    else:
        unique, inverse = torch.unique(rows, dim=0, return_inverse=True)  # (U, T), (B,)
    return len(unique), inverse


def forward(w: gpt2.Weights, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
            first: int = 0) -> torch.Tensor:
    """``gpt2.forward(w, ids, mask, positions, first)``, each distinct real prefix computed once.

    A padded position reads some node's logits (finite, and masked out by every caller).
    Keeps the autograd graph. Shape: ids, mask, positions (B, T) → (B, T − first, V).
    """
    b, t = ids.shape
    device = ids.device
    real = mask.bool()
    cols = torch.arange(t, device=device)
    # 1) the nodes: position (i, p) is the prefix of row i up to column p (its tokens and mask)
    code = ids * 2 + real.long() + 1  # ≥ 1, so a column beyond p (0) differs from any token
    prefix = code[:, None, :] * (cols[None, :] <= cols[:, None]).long()  # (B, T, T)
    where_real = real.reshape(-1).nonzero().squeeze(1)  # (R,) flat indices of the real positions
    n_nodes, node = unique_rows(prefix.reshape(b * t, t)[where_real])  # (R,)
    if n_nodes > (1 - MIN_SHARED) * len(where_real):
        return gpt2.forward(w, ids, mask, positions, first)
    node_of = torch.zeros(b * t, dtype=torch.long, device=device).index_put_((where_real,), node).view(b, t)
    rep = torch.empty(n_nodes, dtype=torch.long, device=device).scatter_(0, node, where_real)  # a position of each
    rep_row, rep_col = rep // t, rep % t
    # 2) trees (rows with the same first real token), packed into chunks of about CHUNK nodes
    root = node_of.gather(1, real.long().argmax(dim=1, keepdim=True)).squeeze(1)  # (B,)
    n_trees, tree_of_row = unique_rows(root[:, None])
    tree = tree_of_row[rep_row]  # (N,)
    size = torch.bincount(tree, minlength=n_trees)  # (n_trees,)
    # a tree goes to the chunk where it starts, numbered 0, 1, … without gaps
    chunk_of_tree = torch.unique(torch.div(size.cumsum(0) - size, CHUNK, rounding_mode="floor"), return_inverse=True)[1]
    chunk = chunk_of_tree[tree]  # (N,)
    order = torch.argsort(chunk, stable=True)
    per_chunk = torch.bincount(chunk)
    start = per_chunk.cumsum(0) - per_chunk
    slot = torch.empty_like(order).index_put_((order,), torch.arange(n_nodes, device=device) - start[chunk[order]])
    n_chunks, width = len(per_chunk), int(per_chunk.max())
    tokens = ids.new_zeros(n_chunks, width).index_put_((chunk, slot), ids[rep_row, rep_col])
    node_pos = positions.new_zeros(n_chunks, width).index_put_((chunk, slot), positions[rep_row, rep_col])
    # 3) a node attends to its ancestors and itself (the real positions ≤ p of its row); an empty slot to itself
    attend = torch.eye(width, dtype=torch.bool, device=device).repeat(n_chunks, 1, 1)  # (C, W, W)
    pairs = real[:, :, None] & real[:, None, :] & (cols[:, None] >= cols[None, :])  # (B, T, T): (i, p, q ≤ p)
    i, p, q = pairs.nonzero(as_tuple=True)
    row_chunk = chunk_of_tree[tree_of_row]  # (B,)
    attend[row_chunk[i], slot[node_of[i, p]], slot[node_of[i, q]]] = True
    hidden = gpt2.blocks(w, tokens, node_pos, attend[:, None])  # (C, W, C_model)
    logits = gpt2.head(w, hidden.reshape(n_chunks * width, -1))  # (C·W, V)
    # 4) each row position reads its node (a padded one: slot 0 of its chunk)
    index = row_chunk[:, None] * width + torch.where(real, slot[node_of], 0)  # (B, T)
    return logits[index[:, first:]]


def lm_logits(policy, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, first: int = 0) -> torch.Tensor:
    """``policy(ids, mask, positions).logits[:, first:]`` of any causal LM: through the forest of
    ``forward`` where ``gpt2.weights(policy)`` allows, else through the model's own forward.
    Shape: → (B, T − first, V)."""
    w = gpt2.weights(policy)
    if w is not None:
        return forward(w, ids, mask, positions, first)
    return policy(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, first:]
