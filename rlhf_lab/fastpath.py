"""Teacher forcing without repeated work: each distinct sequence of a batch goes through the model once.

In the small worlds many rows of a batch are the same sequence: G samples of one prompt often
agree, a DPO batch repeats popular completions, and a dataset of pairs holds each completion many
times. A row's log-probs depend on nothing but its own tokens, so ``completion_logits`` and
``sequence_logps`` here run the model on the distinct rows only (``distinct``) and hand each row
its sequence's result by indexing. The values are those of ``rollout.completion_logits`` and
``rollout.sequence_logps`` (up to the last bits a different batch size may round), and the
gradient through the indexing adds the duplicates' contributions, as a pass over every row would.
``stack`` puts two batches (DPO's chosen and rejected) into one, so they share one forward pass;
``FrozenLogps`` remembers a frozen policy's (π_ref's) token log-probs of every sequence it has
seen in a run, so a completion that comes back in a later step costs no forward pass.

Introduced for the performance work of issue 18 (README, "Performance").
"""

from __future__ import annotations

from dataclasses import replace

import torch

from rlhf_lab.core import sequence_logprobs
from rlhf_lab.prefixes import unique_rows
from rlhf_lab.rollout import Rollout, completion_logits as full_completion_logits, gather_logprobs
from rlhf_lab.worlds.base import TokenWorld


def distinct(batch: Rollout) -> tuple[Rollout, torch.Tensor]:
    """The distinct rows of ``batch`` (prompt and completion tokens, with their masks) and, for each
    row, the index of its distinct row. Shape: B rows → a U-row ``Rollout``, inverse (B,)."""
    ids = torch.cat([batch.prompt_ids, batch.completion_ids], dim=1)  # (B, T)
    count, inverse = unique_rows(ids * 2 + torch.cat([batch.prompt_mask, batch.completion_mask], dim=1))
    if count == len(batch):
        return batch, torch.arange(len(batch), device=inverse.device)
    first = torch.empty(count, dtype=torch.long, device=inverse.device)
    first.scatter_(0, inverse, torch.arange(len(batch), device=inverse.device))  # one row of each
    index = first.tolist()
    return replace(batch, prompts=[batch.prompts[i] for i in index],
                   completions=[batch.completions[i] for i in index],
                   prompt_ids=batch.prompt_ids[first], prompt_mask=batch.prompt_mask[first],
                   completion_ids=batch.completion_ids[first], completion_mask=batch.completion_mask[first],
                   logp=batch.logp[first]), inverse


def completion_logits(policy, batch: Rollout, world: TokenWorld | None = None, temperature: float = 1.0,
                      rows: tuple[Rollout, torch.Tensor] | None = None) -> torch.Tensor:
    """``rollout.completion_logits`` of every row, with one forward pass per distinct row.

    ``rows`` is ``distinct(batch)`` where the caller has it already (two policies on one batch).
    Keeps the autograd graph. Shape: → (B, Tc, V).
    """
    unique, inverse = distinct(batch) if rows is None else rows
    logits = full_completion_logits(policy, unique, world, temperature)  # (U, Tc, V)
    return logits if unique is batch else logits[inverse]


def sequence_logps(policy, world: TokenWorld, batch: Rollout, average: bool = False) -> torch.Tensor:
    """``rollout.sequence_logps`` of every row, with one forward pass per distinct row.

    Keeps the autograd graph. Shape: → (B,).
    """
    unique, inverse = distinct(batch)
    logits = full_completion_logits(policy, unique, world)  # (U, Tc, V)
    token_logp = gather_logprobs(logits, unique)  # (U, Tc)
    seq = sequence_logprobs(token_logp, unique.completion_mask, average=average)  # (U,)
    return seq if unique is batch else seq[inverse]


def stack(first: Rollout, second: Rollout, pad_id: int) -> Rollout:
    """The rows of ``first`` then those of ``second``, completions right-padded to one width.

    Both must have the same prompt width (rows of one ``encode_texts`` layout, e.g. DPO's chosen
    and rejected texts of the same prompts); new padding holds ``pad_id``. Shape: B₁ and B₂ rows → B₁ + B₂ rows.
    """
    width = max(first.completion_ids.shape[1], second.completion_ids.shape[1])

    def pad(x: torch.Tensor, value) -> torch.Tensor:
        return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)

    return replace(first, prompts=first.prompts + second.prompts, completions=first.completions + second.completions,
                   prompt_ids=torch.cat([first.prompt_ids, second.prompt_ids]),
                   prompt_mask=torch.cat([first.prompt_mask, second.prompt_mask]),
                   completion_ids=torch.cat([pad(first.completion_ids, pad_id), pad(second.completion_ids, pad_id)]),
                   completion_mask=torch.cat([pad(first.completion_mask, 0), pad(second.completion_mask, 0)]),
                   logp=torch.cat([pad(first.logp, 0.0), pad(second.logp, 0.0)]))


class FrozenLogps:
    """log π(y_t | ·) of a frozen policy (π_ref), each distinct sequence computed once per run.

    π_ref never changes during training, and in the small worlds the same completions come back
    step after step, so a table from (prompt, completion) token ids to their token log-probs
    saves most of π_ref's forward passes. The values are those of a full forward pass (up to the
    last bits a different batch size may round). Keep one per run: the table belongs to one
    policy, one world and one temperature.
    """

    def __init__(self, policy, world: TokenWorld | None = None, temperature: float = 1.0) -> None:
        self.policy, self.world, self.temperature = policy, world, temperature
        self.table: dict[tuple, torch.Tensor] = {}

    def __call__(self, batch: Rollout, rows: tuple[Rollout, torch.Tensor] | None = None) -> torch.Tensor:
        """Token log-probs of every row, 0 on padding. Shape: → (B, Tc)."""
        unique, inverse = distinct(batch) if rows is None else rows
        lengths = unique.completion_mask.sum(1).tolist()
        prompts = [row[len(row) - n:] for row, n in zip(unique.prompt_ids.tolist(), unique.prompt_mask.sum(1).tolist())]
        keys = [(tuple(p), tuple(c[:n])) for p, c, n in zip(prompts, unique.completion_ids.tolist(), lengths)]
        missing = [i for i, k in enumerate(keys) if k not in self.table]
        if missing:
            sub = unique.select(torch.tensor(missing, device=unique.completion_ids.device))
            logits = full_completion_logits(self.policy, sub, self.world, self.temperature)
            logp = gather_logprobs(logits, sub)
            for j, i in enumerate(missing):
                self.table[keys[i]] = logp[j, : lengths[i]]
        # one padded stack of the remembered rows (their lengths differ), padding 0 as ``gather_logprobs`` leaves it
        out = torch.nn.utils.rnn.pad_sequence([self.table[k] for k in keys], batch_first=True)
        out = torch.nn.functional.pad(out, (0, unique.completion_ids.shape[1] - out.shape[1]))  # (U, Tc)
        return out if unique is batch else out[inverse]
