"""Teacher forcing with shared prefixes: each distinct prefix of a batch goes through the model once.

The rows of a batch in the small worlds share most of their prefixes: the G completions of a
prompt start with the same prompt tokens, most of them with the same first words. A token's
hidden state depends only on the tokens before it, so two rows that agree up to position p
have the same hidden states up to p. ``forward`` lays the batch out as a forest: one node per
distinct prefix (a prompt and the first k words of a completion), each node attending to its
ancestors and itself, and runs the model over the nodes instead of over every row's every
position. On a GRPO batch of the reviews world at cpu scale (16 prompts × 8 samples, 92 distinct
rows) that is 185 nodes instead of 345 real positions, and the forward and backward together run
1.5× faster than through transformers' forward (``benchmarks/teacher_forcing.py``).

Rows are sorted, so that rows sharing a prefix are neighbours, and cut into chunks of about
``CHUNK`` nodes (a prefix that spans two chunks is computed in both), so attention, which grows
with the square of a sequence's length, stays small whatever the batch. Where the rows share
little (the forest would save under a quarter of the positions), the row-by-row
``gpt2.forward`` runs instead, and where the policy is not a plain GPT-2 the model's own forward
(``lm_logits`` chooses). Values equal the row-by-row pass up to the last bits of float rounding,
and so do the gradients (tests/test_gpt2_forward.py).

Introduced for the performance work of issue 18.
"""

from __future__ import annotations

import math

import torch

from rlhf_lab import gpt2

CHUNK = 256  # nodes per packed sequence (a chunk holds at most CHUNK + two rows' lengths)
MIN_SHARED = 0.25  # share of real positions the forest must save for it to run


def unique_rows(rows: torch.Tensor) -> tuple[int, torch.Tensor]:
    """The distinct rows of a non-negative integer matrix: how many, and each row's index among them.

    Each row becomes one int64 (its entries as the digits of a number in base max + 1) where that
    fits, so one 1-D ``torch.unique`` does the work: much cheaper than ``unique(dim=0)`` or a
    Python set of tuples. Indices follow the rows' lexicographic order.

    Shape: rows (B, T) → U, inverse (B,) in [0, U).
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
    # 1) rows in lexicographic order, so the rows that share a prefix are neighbours; a node is
    # the prefix of a row up to a real column p, and it is new unless the row above has it too
    code = ids * 2 + real.long() + 1  # a row's tokens and mask, ≥ 1
    order = torch.argsort(unique_rows(code)[1], stable=True)  # (B,)
    code_s, real_s = code[order], real[order]
    same = torch.cat([torch.zeros_like(real_s[:1]), code_s[1:] == code_s[:-1]])  # (B, T)
    shared = same.long().cumprod(dim=1).sum(dim=1)  # (B,): columns in common with the row above
    new = real_s & (cols >= shared[:, None])  # (B, T)
    n_real = int(real.sum())
    if n_real == 0 or int(new.sum()) > (1 - MIN_SHARED) * n_real:
        return gpt2.forward(w, ids, mask, positions, first)
    # 2) chunks of consecutive rows with about CHUNK new nodes each; a chunk's first row starts afresh
    count = new.sum(dim=1)
    chunk = torch.unique(torch.div(count.cumsum(0) - count, CHUNK, rounding_mode="floor"), return_inverse=True)[1]
    starts = torch.cat([torch.ones_like(chunk[:1], dtype=torch.bool), chunk[1:] != chunk[:-1]])  # (B,)
    new = new | (real_s & starts[:, None])
    # node ids in row-major order of the new positions; a shared position takes the id from the
    # nearest row above that started it (the rows between share it too)
    fresh = (new.reshape(-1).cumsum(0) - 1).view(b, t)
    rows = torch.arange(b, device=device)[:, None].expand(b, t)
    owner = torch.where(new, rows, -1).cummax(dim=0).values.clamp(min=0)  # (B, T)
    node = fresh.gather(0, owner)  # (B, T), valid at the real positions
    rep_row, rep_col = new.nonzero(as_tuple=True)  # (N,) each: where node n starts, in id order
    per_chunk = torch.bincount(chunk[rep_row])  # nodes of each chunk; a chunk's ids are contiguous
    slot = torch.arange(len(rep_row), device=device) - (per_chunk.cumsum(0) - per_chunk)[chunk[rep_row]]  # (N,)
    n_chunks, width = len(per_chunk), int(per_chunk.max())
    ids_s, pos_s = ids[order], positions[order]
    tokens = ids.new_zeros(n_chunks, width).index_put_((chunk[rep_row], slot), ids_s[rep_row, rep_col])
    node_pos = positions.new_zeros(n_chunks, width).index_put_((chunk[rep_row], slot), pos_s[rep_row, rep_col])
    # 3) a node attends to its ancestors and itself (the real positions ≤ p of its row); an empty slot to itself
    attend = torch.eye(width, dtype=torch.bool, device=device).repeat(n_chunks, 1, 1)  # (C, W, W)
    pairs = real_s[:, :, None] & real_s[:, None, :] & (cols[:, None] >= cols[None, :])  # (B, T, T): (i, p, q ≤ p)
    i, p, q = pairs.nonzero(as_tuple=True)
    attend[chunk[i], slot[node[i, p]], slot[node[i, q]]] = True
    hidden = gpt2.blocks(w, tokens, node_pos, attend[:, None])  # (C, W, C_model)
    logits = gpt2.head(w, hidden.reshape(n_chunks * width, -1))  # (C·W, V)
    # 4) each row position reads its node (a padded position: the row's first slot), rows back in their order
    index = torch.empty_like(node)
    index[order] = chunk[:, None] * width + torch.where(real_s, slot[node.clamp(max=len(slot) - 1)], 0)
    return logits[index[:, first:]]


def lm_logits(policy, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, first: int = 0) -> torch.Tensor:
    """``policy(ids, mask, positions).logits[:, first:]`` of any causal LM: where
    ``gpt2.weights(policy)`` allows, through the forest of ``forward`` on a CPU and row by row
    (``gpt2.forward``) on a GPU, else through the model's own forward. Shape: → (B, T − first, V).

    On a GPU the tiny models are launch-bound: the forest's bookkeeping (some thirty small ops)
    costs more than the positions it saves (one GRPO batch forward and backward at ci size on an
    H200: 4.4 ms over the forest, 2.8 ms row by row; ``benchmarks/teacher_forcing.py --device cuda``)."""
    w = gpt2.weights(policy)
    if w is None:
        return policy(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, first:]
    return (forward if ids.device.type == "cpu" else gpt2.forward)(w, ids, mask, positions, first)
