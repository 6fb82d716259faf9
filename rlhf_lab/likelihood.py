"""The supervised loss, shared by SFT (``algos/sft.py``) and rejection-sampling fine-tuning
(``algos/best_of_n.py``), which may not import each other (tests/test_layout.py); both re-export
it as ``sft_loss``.

    L_SFT(θ) = −(1/N) Σ_i Σ_t m_{i,t} log π_θ(ȳ_{i,t} | x_i, ȳ_{i,<t}),   N = Σ m

— the mean negative log-likelihood over the tokens in the loss (eq-sft-loss, chapter 01b).
"""

from __future__ import annotations

import torch
from torch import Tensor

from rlhf_lab.core import masked_mean
from rlhf_lab.validate import check_mask, check_tensor


def sft_loss(token_logp: Tensor, mask: Tensor) -> tuple[Tensor, dict[str, float]]:
    """The SFT loss: the mean negative log-likelihood per token in the loss (eq-sft-loss).

    Args:
        token_logp: log π_θ(ȳ_t | x, ȳ_<t) of the demonstrated (or kept) tokens; carries the
            gradient. Padded positions may hold anything (NaN included): they are selected out.
        mask: 1 for the tokens in the loss (the response's, EOS included), 0 elsewhere.

    Shape:
        token_logp: (B, T); mask: (B, T).

    Returns:
        ``(loss, stats)`` with stats ``nll`` (the loss), ``tokens`` (N) and ``seq_logp`` (the mean
        over rows of Σ_t log π(ȳ_t | …), the log-likelihood of a whole response).

    Raises:
        ValueError: wrong shapes, an empty mask, or a non-finite log-prob under the mask.
    """
    check_tensor("token_logp", token_logp, kind="float", ndim=2, dims="(B, T)")
    m = check_mask("mask", mask, token_logp, "token_logp", nonempty=True, finite=True)
    # (eq-sft-loss)  L(θ) = −(1/N) Σ_i Σ_t m_{i,t} log π_θ(ȳ_{i,t} | x_i, ȳ_{i,<t})
    loss = -masked_mean(token_logp, m)
    picked = torch.where(m, token_logp.detach(), 0.0)  # select: 0 · nan would be nan
    stats = {"nll": loss.item(), "tokens": float(m.sum()), "seq_logp": picked.sum(1).mean().item()}
    return loss, stats
