"""The SFT chapter's coding problem, ``sft_loss``: the package's function, the formula, the
mistakes students make, the seeded cases and the stub's source. Registered in ``problems.py``,
``formulas.py`` and ``sources.py`` like the other problems."""

from __future__ import annotations

import torch
from torch import Tensor

ARGS = ("token_logp", "mask")
CHAPTER = "01b"
PER_ROW_HINT = ("you took a mean per demonstration, then over demonstrations: that weighs the "
                "tokens of a short response more. Divide the batch's sum by N, its number of "
                "response tokens (eq-sft-loss).")
PADDING_HINT = ("you divided by every position, padding included: divide by mask.sum(), the "
                "number of response tokens.")
SIGN_HINT = "the sign is flipped: the loss is the NEGATIVE mean log-likelihood."
SUM_HINT = "you summed over the tokens: take the mean, divide by N = mask.sum()."
ROWS_HINT = ("you divided by B, the number of demonstrations: the mean is over the N = mask.sum() "
             "response tokens of the batch (eq-sft-loss).")
UNMASKED_HINT = ("the mask is ignored: padded positions entered the mean. Select the response "
                 "tokens with torch.where(mask, token_logp, 0.0) and divide by N = mask.sum().")


def package(token_logp, mask):
    from rlhf_lab.algos.sft import sft_loss

    return sft_loss(token_logp, mask)[0]


def formula(token_logp, mask, per_row=False, over="mask", sign=-1.0):
    """−(1/N) Σ m·log π, written out; the flags give the wrong versions."""
    m = mask.bool()
    picked = torch.where(m, token_logp.double(), 0.0)
    if per_row:
        return sign * (picked.sum(1) / m.sum(1)).mean()
    if over == "unmasked":
        return sign * token_logp.double().mean()
    n = {"mask": m.sum(), "all": torch.tensor(m.numel()), "one": torch.tensor(1),
         "rows": torch.tensor(m.shape[0])}[over]
    return sign * picked.sum() / n


def mistakes(mistake_cls) -> tuple:
    return (
        mistake_cls(lambda lp, m: formula(lp, m, per_row=True), PER_ROW_HINT),
        mistake_cls(lambda lp, m: formula(lp, m, over="all"), PADDING_HINT),
        mistake_cls(lambda lp, m: formula(lp, m, sign=1.0), SIGN_HINT),
        mistake_cls(lambda lp, m: formula(lp, m, over="one"), SUM_HINT),
        mistake_cls(lambda lp, m: formula(lp, m, over="rows"), ROWS_HINT),
        mistake_cls(lambda lp, m: formula(lp, m, over="unmasked"), UNMASKED_HINT),
    )


def cases(case_cls, nan_hint: str) -> list:
    g = torch.Generator().manual_seed(9)

    def logp(*shape: int) -> Tensor:
        return -3 * torch.rand(*shape, generator=g)

    def lengths(ls: list[int], t: int) -> Tensor:
        return torch.arange(t)[None, :] < torch.tensor(ls)[:, None]

    garbage = logp(3, 4)
    garbage[0, 3], garbage[2, 1:] = float("nan"), float("-inf")
    return [
        case_cls("rows of different lengths", {"token_logp": logp(4, 5),
                                               "mask": lengths([5, 2, 1, 3], 5)}),
        case_cls("one row, no padding", {"token_logp": logp(1, 3),
                                         "mask": torch.ones(1, 3, dtype=torch.bool)}),
        case_cls("garbage (nan, -inf) at padded positions",
                 {"token_logp": garbage, "mask": lengths([3, 4, 1], 4)}, hint=nan_hint),
        case_cls("gradient", {"token_logp": logp(3, 4), "mask": lengths([4, 1, 2], 4)},
                 grad=True),
    ]


SOURCE = (
    "def sft_loss(token_logp: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:",
    """Mean negative log-likelihood over the tokens where ``mask`` is True:
    loss = -(1/N) * (sum of token_logp where mask), N = mask.sum().

    Padded positions may hold anything (nan, -inf); they must not reach the result.

    Shape:
        token_logp (B, T) (carries the gradient), mask (B, T) bool → ().
    """,
    """    # select, do not multiply: 0 · nan is nan
    picked = torch.where(mask, token_logp, 0.0)
    return -picked.sum() / mask.sum()
""")
