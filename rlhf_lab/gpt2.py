"""GPT-2's forward pass written out with the model's own weights, for the workbook's tiny policies.

At the sizes the chapters train (two layers, 64–128 wide, a handful of tokens per row) a call
of ``GPT2LMHeadModel.forward`` spends more time in its Python machinery than in arithmetic:
module calls and hooks, a 4-D attention mask built from scratch, output dataclasses, logits
for every position. ``forward`` below does the same arithmetic — the same embeddings, layer
norms, ``addmm`` projections (GPT-2's ``Conv1D`` is ``x @ W + b``), scaled-dot-product attention
and GELU, in the same order — with none of that, and projects to the vocabulary only the
positions asked for. It keeps the autograd graph, so the trainers use it for their teacher-forced
passes; the sampler (``decoding.py``) uses ``blocks`` with a preallocated KV cache.

``supports(policy)`` says when it applies: a plain ``GPT2LMHeadModel`` (not a subclass or a
wrapper), no cross-attention, no dropout while training, no gradient checkpointing, no hooks.
Anything else goes through the model's own forward (``lm_logits`` chooses). Tests compare both paths' logits and
gradients (tests/test_gpt2_forward.py).

Introduced for the performance work of issue 18 (README, "Performance").
"""

from __future__ import annotations

import torch

F = torch.nn.functional


def supports(policy) -> bool:
    """True when ``forward`` computes exactly what ``policy``'s own forward would."""
    from transformers import GPT2LMHeadModel

    if type(policy) is not GPT2LMHeadModel:
        return False
    config = policy.config
    if config.add_cross_attention or config.reorder_and_upcast_attn:
        return False
    if policy.training and (config.resid_pdrop or config.embd_pdrop or config.attn_pdrop
                            or policy.transformer.gradient_checkpointing):
        return False
    # forward hooks (e.g. a probe that reads activations) only run through the model's own forward
    return not any(m._forward_hooks or m._forward_pre_hooks for m in policy.modules())


def blocks(policy, ids: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor,
           cache: list[tuple[torch.Tensor, torch.Tensor]] | None = None, start: int = 0) -> torch.Tensor:
    """Hidden states after the last block (before the final layer norm).

    ``attn_mask`` is a boolean mask broadcastable to (B, n_head, T, K), True where a query may
    attend to a key. With ``cache`` (one preallocated (k, v) pair per layer, each (B, n_head, L,
    head_dim)) the new keys and values are written at positions ``start : start + T`` and the
    queries attend to the cache up to there; without it, to the T new positions.

    Shape: ids, positions (B, T) → (B, T, C).
    """
    tf = policy.transformer
    config = policy.config
    nh, c, eps = config.n_head, config.n_embd, config.layer_norm_epsilon
    b, t = ids.shape
    end = start + t
    h = (F.embedding(ids, tf.wte.weight) + F.embedding(positions, tf.wpe.weight)).view(b * t, c)
    for i, block in enumerate(tf.h):
        attn, mlp = block.attn, block.mlp
        x = F.layer_norm(h, (c,), block.ln_1.weight, block.ln_1.bias, eps)
        qkv = torch.addmm(attn.c_attn.bias, x, attn.c_attn.weight)  # (B·T, 3C); Conv1D is x @ W + b
        q, k, v = qkv.view(b, t, 3, nh, c // nh).permute(2, 0, 3, 1, 4)  # each (B, nh, T, hs)
        if cache is not None:
            k_cache, v_cache = cache[i]
            k_cache[:, :, start:end] = k
            v_cache[:, :, start:end] = v
            k, v = k_cache[:, :, :end], v_cache[:, :, :end]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=attn.scaling)  # (B, nh, T, hs)
        h = h + torch.addmm(attn.c_proj.bias, y.transpose(1, 2).reshape(b * t, c), attn.c_proj.weight)
        x = F.layer_norm(h, (c,), block.ln_2.weight, block.ln_2.bias, eps)
        x = mlp.act(torch.addmm(mlp.c_fc.bias, x, mlp.c_fc.weight))  # (B·T, 4C)
        h = h + torch.addmm(mlp.c_proj.bias, x, mlp.c_proj.weight)
    return h.view(b, t, c)


def head(policy, hidden: torch.Tensor) -> torch.Tensor:
    """The final layer norm and the vocabulary projection. Shape: (..., C) → (..., V)."""
    tf, c = policy.transformer, policy.config.n_embd
    return F.linear(F.layer_norm(hidden, (c,), tf.ln_f.weight, tf.ln_f.bias, policy.config.layer_norm_epsilon),
                    policy.lm_head.weight)


def padded_causal_mask(mask: torch.Tensor) -> torch.Tensor:
    """Causal, and no padded key; a padded query may see itself, so no row of the mask is empty
    (an all-masked row is NaN in SDPA, and a NaN value leaks into real rows through 0 · NaN).

    Shape: mask (B, T) of 0/1 → (B, 1, T, T) bool.
    """
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    keys = mask.bool()[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=mask.device)
    return causal & keys


def forward(policy, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Logits at positions ``first`` … T − 1 of a (padded) batch: ``policy(ids, mask, positions).logits[:, first:]``.

    Keeps the autograd graph. Shape: ids, mask, positions (B, T) → (B, T − first, V).
    """
    hidden = blocks(policy, ids, positions, padded_causal_mask(mask))
    return head(policy, hidden[:, first:])


def lm_logits(policy, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, first: int = 0) -> torch.Tensor:
    """``policy(ids, mask, positions).logits[:, first:]`` of any causal LM: through ``forward``
    where ``supports(policy)``, else through the model's own forward. Shape: → (B, T − first, V)."""
    if supports(policy):
        return forward(policy, ids, mask, positions, first)
    return policy(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits[:, first:]
