"""Rollouts: a batch of prompts with one completion each, as token ids and log-probs.

``sample(policy, world, prompts)`` draws one completion per prompt and returns a ``Rollout``:
the token ids, which of them are real, and the log-probability of each sampled token under the
distribution it was drawn from. That last part is what makes the rollout useful to an
algorithm: the policy gradient needs log π(y_t | x, y_<t) of exactly the tokens sampled. The
sampling loop itself, a KV-cache engine, is in ``decoding.py``.

Given texts instead of samples, ``encode_texts`` lays them out as the same ``Rollout`` (DPO,
supervised fine-tuning). Either way, ``completion_logits`` / ``completion_logprobs`` teacher-
force a policy over the completion tokens (log π_old, log π_ref, the ratio's log π_θ), and
``sequence_logps`` sums them per completion. ``Rollout.select`` takes rows, e.g. a minibatch.

Introduced in chapter 02.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import torch

from rlhf_lab import prefixes
from rlhf_lab.core import sequence_logprobs
from rlhf_lab.decoding import sample_ids, sample_rows  # noqa: F401  (re-exported)
from rlhf_lab.models import position_ids_from_mask
from rlhf_lab.validate import (ArgumentTypeError, check_bool, check_float, check_instance, check_int, check_tensor,
                               check_texts, check_vocab)
from rlhf_lab.worlds.base import TokenWorld


@dataclass
class Rollout:
    """A batch of prompts with one sampled completion each.

    Attributes:
        prompts: the prompt texts, length B.
        completions: the completion texts (tokens joined by spaces, up to and including EOS).
        prompt_ids: left-padded prompt tokens. Shape: (B, Tp).
        prompt_mask: 1 for real prompt tokens, 0 for padding. Shape: (B, Tp).
        completion_ids: sampled tokens, right-padded with PAD after EOS. Shape: (B, Tc).
        completion_mask: 1 up to and including EOS, 0 after it. Shape: (B, Tc).
        logp: log π(y_t | x, y_<t) of each sampled token under the masked, tempered sampling
            distribution; 0 where ``completion_mask`` is 0. Shape: (B, Tc).
    """

    prompts: list[str]
    completions: list[str]
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    completion_ids: torch.Tensor
    completion_mask: torch.Tensor
    logp: torch.Tensor
    eos_id: int = 1

    def __len__(self) -> int:
        return len(self.prompts)

    @property
    def texts(self) -> list[str]:
        """prompt + " " + completion, the input of a reward model."""
        return [f"{p} {c}" for p, c in zip(self.prompts, self.completions)]

    @property
    def input_ids(self) -> torch.Tensor:
        """Prompt and completion side by side. Shape: (B, Tp + Tc)."""
        return torch.cat([self.prompt_ids, self.completion_ids], dim=1)

    @property
    def attention_mask(self) -> torch.Tensor:
        """Shape: (B, Tp + Tc)."""
        return torch.cat([self.prompt_mask, self.completion_mask], dim=1)

    @property
    def lengths(self) -> torch.Tensor:
        """Completion lengths in tokens, EOS included. Shape: (B,)."""
        return self.completion_mask.sum(dim=1)

    @property
    def truncated(self) -> torch.Tensor:
        """True for completions that ran out of room before EOS. Shape: (B,) bool."""
        return ~((self.completion_ids == self.eos_id) & self.completion_mask.bool()).any(dim=1)

    @property
    def seq_logp(self) -> torch.Tensor:
        """log π(y | x), the sum of the token log-probs. Shape: (B,)."""
        return self.logp.sum(dim=1)

    def select(self, rows: torch.Tensor) -> Rollout:
        """The rows ``rows`` as a new ``Rollout``, e.g. one minibatch, or the groups a trainer keeps.

        Shape: rows (b,) indices, or a bool mask (B,) → a b-row ``Rollout``.
        """
        if check_tensor("rows", rows, kind="mask", ndim=1, dims="(b,) indices or a (B,) bool mask").dtype == torch.bool:
            if len(rows) != len(self):
                raise ValueError(f"rows, a bool mask, must have shape ({len(self)},); got {tuple(rows.shape)}")
            rows = rows.nonzero().squeeze(1)
        elif rows.is_floating_point():
            raise ArgumentTypeError(f"rows must be integer indices or a bool mask; got dtype {rows.dtype}")
        elif rows.numel() and not -len(self) <= int(rows.min()) <= int(rows.max()) < len(self):
            raise ValueError(f"rows must be indices into the {len(self)} rows; got {rows.tolist()}")
        index = rows.tolist()
        return replace(self, prompts=[self.prompts[i] for i in index],
                       completions=[self.completions[i] for i in index],
                       prompt_ids=self.prompt_ids[rows], prompt_mask=self.prompt_mask[rows],
                       completion_ids=self.completion_ids[rows], completion_mask=self.completion_mask[rows],
                       logp=self.logp[rows])


def _logit_bias(world: TokenWorld, vocab_size: int, device) -> torch.Tensor:
    """``world.mask_logits`` applied once to zeros: an additive (V,) bias of 0 / −inf."""
    return world.mask_logits(torch.zeros(vocab_size, device=device))


def sample(
    policy,
    world,
    prompts: Sequence[str],
    *,
    max_new_tokens: int | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    batch_size: int | None = None,
) -> Rollout:
    """Sample one completion per prompt from ``policy``.

    Args:
        policy: a causal LM (``GPT2LMHeadModel`` or any ``AutoModelForCausalLM``).
        world: a ``TokenWorld`` (its vocabulary, and ``mask_logits`` restricting completions to
            ``completion_vocab``), or a plain tokenizer (no masking; EOS is its eos token).
        prompts: prompt texts; repeat a prompt to draw several completions of it.
        max_new_tokens: at most this many tokens per completion, EOS included
            (default: ``world.max_new_tokens``; required with a tokenizer).
        temperature: τ > 0; sampling is from softmax(logits / τ).
        generator: a ``torch.Generator`` for reproducible draws; a CPU one also serves a CUDA policy
            (the noise is drawn on the CPU and moved over, so the draws match across devices).
        batch_size: sample in chunks of this many prompts (default: all at once).

    Returns:
        A ``Rollout``; its ``logp`` are the log-probs of the sampled tokens under the
        distribution they were drawn from (masked, tempered).
    """
    is_world = isinstance(world, TokenWorld)
    if is_world:
        check_vocab(policy, world)  # before any forward pass
    elif not callable(world) or getattr(world, "eos_token_id", None) is None:
        check_instance("world", world, TokenWorld, "a TokenWorld or a tokenizer with an eos token")
    if max_new_tokens is None:
        if not is_world:
            raise ValueError("max_new_tokens is required when sampling with a tokenizer (no world)")
        max_new_tokens = world.max_new_tokens
    check_int("max_new_tokens", max_new_tokens, ge=1)
    check_float("temperature", temperature, gt=0)
    check_int("batch_size", batch_size, ge=1, none=True)
    check_instance("generator", generator, torch.Generator, "a torch.Generator", none=True)
    prompts = check_texts("prompts", prompts)

    device = next(policy.parameters()).device
    distinct = list(dict.fromkeys(prompts))  # tokenize each distinct prompt once
    if is_world:
        encoded = dict(zip(distinct, map(world.encode, distinct)))
        eos_id, pad_id = world.eos_id, world.pad_id
        bias = _logit_bias(world, policy.config.vocab_size, device)
    else:
        encoded = dict(zip(distinct, world(distinct)["input_ids"]))
        eos_id = world.eos_token_id
        pad_id = world.pad_token_id if world.pad_token_id is not None else eos_id
        bias = None
    rows = [encoded[p] for p in prompts]
    if any(len(r) == 0 for r in rows):
        raise ValueError("every prompt must have at least one token")
    limit = getattr(policy.config, "n_positions", None) or getattr(policy.config, "max_position_embeddings", None)
    if limit is not None and max(map(len, rows)) + max_new_tokens > limit:
        raise ValueError(
            f"max_new_tokens={max_new_tokens} plus the longest prompt ({max(map(len, rows))} tokens) exceeds "
            f"the model's {limit} positions; allowed: max_new_tokens ≤ {limit - max(map(len, rows))}"
        )

    prompt_ids, prompt_mask, completion_ids, completion_mask, logp = sample_rows(
        policy, rows, batch_size=batch_size, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
        logit_bias=bias, temperature=temperature, generator=generator)

    if is_world:
        def decode(ids):
            return " ".join(world.vocab[i] for i in ids)
    else:
        def decode(ids):
            return world.decode(list(ids))
    texts: dict[tuple, str] = {}  # many rows hold the same completion: decode each once
    completions = []
    for row, n in zip(completion_ids.tolist(), completion_mask.sum(dim=1).tolist()):
        key = tuple(row[:n])
        if key not in texts:
            texts[key] = decode(key)
        completions.append(texts[key])
    return Rollout(prompts=prompts, completions=completions, prompt_ids=prompt_ids, prompt_mask=prompt_mask,
                   completion_ids=completion_ids, completion_mask=completion_mask, logp=logp, eos_id=eos_id)


def completion_logits(
    policy, rollout: Rollout, world: TokenWorld | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """Logits of the sampling distribution at each completion position, by one full forward pass.

    The same masking (``world.mask_logits``) and temperature as ``sample``, so
    ``log_softmax`` of these, gathered at the sampled tokens, reproduces ``rollout.logp``.
    Keeps the autograd graph (use it for the policy-gradient loss).

    Shape: → (B, Tc, V).
    """
    check_float("temperature", temperature, gt=0)
    check_instance("rollout", rollout, Rollout, "a Rollout")
    if world is not None:
        check_vocab(policy, world)  # before the forward pass
    mask = rollout.attention_mask
    ids, positions = rollout.input_ids[:, :-1], position_ids_from_mask(mask)[:, :-1]
    mask = mask[:, :-1]  # the last token predicts nothing the loss uses
    first = rollout.prompt_ids.shape[1] - 1  # position t predicts token t + 1
    logits = prefixes.lm_logits(policy, ids, mask, positions, first).float()  # (B, Tc, V)
    if world is not None:
        logits = world.mask_logits(logits)
    return logits / temperature


def completion_logprobs(
    policy, rollout: Rollout, world: TokenWorld | None = None, temperature: float = 1.0
) -> torch.Tensor:
    """log π(y_t | x, y_<t) of the rollout's tokens under ``policy``; 0 where the mask is 0.

    With the policy that sampled the rollout this equals ``rollout.logp`` (teacher forcing);
    with another policy (π_ref, or π after an update) it is what the KL and ratio terms need.

    Shape: → (B, Tc).
    """
    return gather_logprobs(completion_logits(policy, rollout, world, temperature), rollout)


def gather_logprobs(logits: torch.Tensor, rollout: Rollout) -> torch.Tensor:
    """log-softmax of ``completion_logits`` at the rollout's tokens; 0 where the mask is 0.

    Shape: logits (B, Tc, V) → (B, Tc).
    """
    token_logp = torch.log_softmax(logits, dim=-1).gather(-1, rollout.completion_ids.unsqueeze(-1)).squeeze(-1)
    return token_logp.masked_fill(rollout.completion_mask == 0, 0.0)


# -- texts as a rollout: supervised fine-tuning and DPO -------------------------------------------
def encode_texts(world: TokenWorld, prompts: Sequence[str], completions: Sequence[str], device=None) -> Rollout:
    """(prompt, completion) texts encoded as a ``Rollout``, so the sampler's log-prob code applies.

    Prompts are left-padded and completions right-padded, as ``rollout.sample`` lays them out;
    ``logp`` is left at 0 (nothing was sampled).

    Raises:
        ValueError: the lists differ in length, or a completion is empty.

    Introduced in chapter 06 (rejection sampling fine-tunes on such texts); DPO (chapter 07)
    encodes its chosen and rejected texts with it.
    """
    check_instance("world", world, TokenWorld, "a TokenWorld")
    prompts, completions = check_texts("prompts", prompts), check_texts("completions", completions)
    if len(prompts) != len(completions):
        raise ValueError(
            f"prompts and completions must have the same length, got {len(prompts)} and {len(completions)}"
        )
    if not prompts:
        raise ValueError("completions must hold at least one completion")
    empty = [i for i, y in enumerate(completions) if not y.split()]
    if empty:
        raise ValueError(f"completions must not be empty (a completion has at least EOS); empty at rows {empty[:5]}")
    encoded: dict[str, list[int]] = {}  # a text that repeats is encoded once
    p_rows = [encoded[x] if x in encoded else encoded.setdefault(x, list(world.encode(x))) for x in prompts]
    c_rows = [encoded[y] if y in encoded else encoded.setdefault(y, list(world.encode(y))) for y in completions]
    pad, tp, tc = world.pad_id, max(map(len, p_rows)), max(map(len, c_rows))
    # padded as Python lists, then one tensor each (a tensor per row costs more than the encoding)
    prompt_ids = torch.tensor([[pad] * (tp - len(r)) + r for r in p_rows], dtype=torch.long)
    prompt_mask = torch.tensor([[0] * (tp - len(r)) + [1] * len(r) for r in p_rows], dtype=torch.long)
    completion_ids = torch.tensor([r + [pad] * (tc - len(r)) for r in c_rows], dtype=torch.long)
    completion_mask = torch.tensor([[1] * len(r) + [0] * (tc - len(r)) for r in c_rows], dtype=torch.long)
    return Rollout(
        prompts=prompts, completions=completions,
        prompt_ids=prompt_ids.to(device), prompt_mask=prompt_mask.to(device),
        completion_ids=completion_ids.to(device), completion_mask=completion_mask.to(device),
        logp=torch.zeros(completion_ids.shape, device=device), eos_id=world.eos_id,
    )


def sequence_logps(policy: torch.nn.Module, world: TokenWorld, batch: Rollout, average: bool = False) -> torch.Tensor:
    """log π(y | x) of each encoded completion: the sum of its token log-probs, or their mean.

    Masked like the sampler and ``exact.exact_logprobs`` (so on an enumerable world the sum
    equals the exact log-prob). Keeps the autograd graph.

    Shape: → (B,). Introduced in chapter 06.
    """
    check_bool("average", average)
    token_logp = completion_logprobs(policy, batch, world)  # (B, T), 0 on padding
    return sequence_logprobs(token_logp, batch.completion_mask, average=average)
