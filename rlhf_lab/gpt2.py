"""GPT-2's forward pass written out with the model's own weights, for the workbook's tiny policies.

At the sizes the chapters train (two layers, 64–128 wide, a handful of tokens per row) a call
of ``GPT2LMHeadModel.forward`` spends a sizeable share of its time in Python machinery: module
calls and hooks, a 4-D attention mask built from scratch, output dataclasses, logits for every
position (a GRPO batch's forward and backward run 1.1–1.2× faster without it,
``benchmarks/teacher_forcing.py``). ``forward`` below does the same arithmetic — the same embeddings, layer
norms, ``addmm`` projections (GPT-2's ``Conv1D`` is ``x @ W + b``), scaled-dot-product attention
and GELU, in the same order — with none of that, and projects to the vocabulary only the
positions asked for. It keeps the autograd graph, so the trainers use it for their teacher-forced
passes; the sampler (``decoding.py``) uses ``blocks`` with a preallocated KV cache.

``weights(policy)`` collects the weights, or returns None where this would not compute what the
model's own forward does: anything but a plain ``GPT2LMHeadModel`` (a subclass or a wrapper), a
layer replaced in place by one of another type (an adapter), cross-attention, dropout while
training, gradient checkpointing, a hook. Such a policy goes through its own forward
(``prefixes.lm_logits`` chooses). Tests compare both paths' logits and gradients
(tests/test_gpt2_forward.py).

Introduced for the performance work of issue 18 (README, "Performance").
"""

from __future__ import annotations

from typing import NamedTuple

import torch

F = torch.nn.functional


class Layer(NamedTuple):
    """One block's weights: a layer norm is (weight, bias, eps), a projection (weight, bias)."""

    ln_1: tuple[torch.Tensor, torch.Tensor, float]
    c_attn: tuple[torch.Tensor, torch.Tensor]
    heads: int
    scaling: float
    attn_proj: tuple[torch.Tensor, torch.Tensor]
    ln_2: tuple[torch.Tensor, torch.Tensor, float]
    c_fc: tuple[torch.Tensor, torch.Tensor]
    act: torch.nn.Module
    mlp_proj: tuple[torch.Tensor, torch.Tensor]


class Weights(NamedTuple):
    """What ``blocks`` and ``head`` read, collected once per call (a module attribute costs a
    Python lookup each time; a pass over a tiny model makes about a hundred of them)."""

    wte: torch.Tensor
    wpe: torch.Tensor
    layers: tuple[Layer, ...]
    ln_f: tuple[torch.Tensor, torch.Tensor, float]
    lm_head: torch.Tensor


def weights(policy) -> Weights | None:
    """``policy``'s weights when ``forward`` computes exactly what its own forward would, else None."""
    from torch.nn.modules import module as torch_module
    from transformers import GPT2LMHeadModel
    from transformers.pytorch_utils import Conv1D

    if type(policy) is not GPT2LMHeadModel:
        return None
    config = policy.config
    if config.add_cross_attention or config.reorder_and_upcast_attn:
        return None
    if policy.training and (config.resid_pdrop or config.embd_pdrop or config.attn_pdrop
                            or policy.transformer.gradient_checkpointing):
        return None
    if torch_module._global_forward_hooks or torch_module._global_forward_pre_hooks:
        return None
    nn = torch.nn
    try:
        tf, lm_head = policy.transformer, policy.lm_head
        used = [(policy, None), (tf, None), (tf.wte, nn.Embedding), (tf.wpe, nn.Embedding), (tf.ln_f, nn.LayerNorm),
                (lm_head, nn.Linear)]
        layers = []
        for block in tf.h:
            ln_1, attn, ln_2, mlp = block.ln_1, block.attn, block.ln_2, block.mlp
            c_attn, a_proj, c_fc, m_proj = attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj
            used += [(block, None), (ln_1, nn.LayerNorm), (attn, None), (c_attn, Conv1D), (a_proj, Conv1D),
                     (ln_2, nn.LayerNorm), (mlp, None), (c_fc, Conv1D), (m_proj, Conv1D), (mlp.act, None)]
            layers.append(Layer((ln_1.weight, ln_1.bias, ln_1.eps), (c_attn.weight, c_attn.bias), attn.num_heads,
                                attn.scaling, (a_proj.weight, a_proj.bias), (ln_2.weight, ln_2.bias, ln_2.eps),
                                (c_fc.weight, c_fc.bias), mlp.act, (m_proj.weight, m_proj.bias)))
    except AttributeError:  # a layer replaced by one of another shape (an adapter, a quantised layer)
        return None
    # a layer of another type computes something else (an adapter injected in place keeps the
    # model's type); a hook (e.g. a probe that reads activations) runs only in the model's own forward
    if any(kind is not None and type(m) is not kind for m, kind in used) or lm_head.bias is not None:
        return None
    if any(m._forward_hooks or m._forward_pre_hooks for m, _ in used):
        return None
    return Weights(tf.wte.weight, tf.wpe.weight, tuple(layers), (tf.ln_f.weight, tf.ln_f.bias, tf.ln_f.eps),
                   lm_head.weight)


def supports(policy) -> bool:
    """True when ``forward`` computes exactly what ``policy``'s own forward would."""
    return weights(policy) is not None


def blocks(w: Weights, ids: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor,
           cache: torch.Tensor | None = None, start: int | torch.Tensor = 0) -> torch.Tensor:
    """Hidden states after the last block (before the final layer norm).

    ``attn_mask`` is broadcastable to (B, n_head, T, K): boolean, True where a query may attend to
    a key, or additive (0 there, −inf elsewhere). With ``cache`` (preallocated keys and values of
    every layer, shape (layers, 2, B, n_head, L, head_dim)) the new keys and values are written at
    positions ``start : start + T`` and the queries attend to the cache up to there; without it,
    to the T new positions. ``start`` may be a tensor holding the T positions (on the cache's
    device, so that a CUDA graph can replay the step with positions that move): then the queries
    attend to all L cached positions, and ``attn_mask`` (K = L) must hide those not written yet.

    Shape: ids, positions (B, T) → (B, T, C).
    """
    b, t = ids.shape
    c = w.wte.shape[1]
    end = None if isinstance(start, torch.Tensor) else start + t
    h = (F.embedding(ids, w.wte) + F.embedding(positions, w.wpe)).view(b * t, c)
    for i, (ln_1, c_attn, heads, scaling, a_proj, ln_2, c_fc, act, m_proj) in enumerate(w.layers):
        x = F.layer_norm(h, (c,), *ln_1)
        qkv = torch.addmm(c_attn[1], x, c_attn[0])  # (B·T, 3C); Conv1D is x @ W + b
        q, k, v = qkv.view(b, t, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)  # each (B, nh, T, hs)
        if cache is not None:
            k_cache, v_cache = cache[i].unbind(0)
            if isinstance(start, torch.Tensor):
                k, v = k_cache.index_copy_(2, start, k), v_cache.index_copy_(2, start, v)
            else:
                k_cache[:, :, start:end] = k
                v_cache[:, :, start:end] = v
                k, v = k_cache[:, :, :end], v_cache[:, :, :end]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=scaling)  # (B, nh, T, hs)
        h = h + torch.addmm(a_proj[1], y.transpose(1, 2).reshape(b * t, c), a_proj[0])
        x = F.layer_norm(h, (c,), *ln_2)
        x = act(torch.addmm(c_fc[1], x, c_fc[0]))  # (B·T, 4C)
        h = h + torch.addmm(m_proj[1], x, m_proj[0])
    return h.view(b, t, c)


def head(w: Weights, hidden: torch.Tensor) -> torch.Tensor:
    """The final layer norm and the vocabulary projection. Shape: (..., C) → (..., V)."""
    return F.linear(F.layer_norm(hidden, (hidden.shape[-1],), *w.ln_f), w.lm_head)


def padded_causal_mask(mask: torch.Tensor) -> torch.Tensor:
    """Causal, and no padded key; a padded query may see itself, so no row of the mask is empty
    (an all-masked row is NaN in SDPA, and a NaN value leaks into real rows through 0 · NaN).

    Shape: mask (B, T) of 0/1 → (B, 1, T, T) bool.
    """
    length = mask.shape[1]
    causal = torch.ones(length, length, dtype=torch.bool, device=mask.device).tril()
    keys = mask.bool()[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=mask.device)
    return causal & keys


def forward(w: Weights, ids: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor, first: int = 0) -> torch.Tensor:
    """Logits at positions ``first`` … T − 1 of a (padded) batch: ``policy(ids, mask, positions).logits[:, first:]``
    for the policy of ``w = weights(policy)``.

    Keeps the autograd graph. Shape: ids, mask, positions (B, T) → (B, T − first, V).
    """
    hidden = blocks(w, ids, positions, padded_causal_mask(mask))
    return head(w, hidden[:, first:])

