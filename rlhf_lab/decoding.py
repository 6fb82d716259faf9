"""The KV-cache engine behind ``rollout.sample``: the sampling loop on token ids.

``sample_ids`` draws one completion per row of left-padded prompt ids and returns the tokens,
which of them are real, and the log-probability of each sampled token under the distribution
it was drawn from:

    prompts ──prefill──▶ one forward pass over the distinct prompts fills the KV cache
            ──loop──▶ mask illegal tokens, divide by temperature, sample, record the log-prob,
                      feed the new tokens back (one position per step, reusing the cache)

The loop is written out instead of calling ``model.generate``: it is short enough to read, it
returns the log-probs as it goes, and it is faster than ``generate`` for the tiny policies
(``benchmarks/sampler.py``), for three reasons: the model runs once per distinct prefix, not
once per row (many rows share a prompt and their first words); a row that has ended leaves the
batch; and GPT-2 is decoded with a preallocated cache and none of ``generate``'s per-step
machinery (logits processors, stopping criteria, cache objects), which costs as much as the
model itself at this size. On a GPU the GPT-2 step is replayed as a CUDA graph (``graphs.py``,
one slot per row). Any other causal LM goes through its own KV cache. ``sample_rows`` runs the
loop over prompts given as token-id lists, a chunk of rows at a time.

Introduced in chapter 02.
"""

from __future__ import annotations

import inspect

import torch

from rlhf_lab import gpt2, graphs
from rlhf_lab.models import position_ids_from_mask
from rlhf_lab.prefixes import unique_rows
from rlhf_lab.validate import check_float, check_int, check_mask, check_tensor


class _Slots:
    """What a decoder keeps per slot (a distinct prefix), besides its KV cache: which of its keys
    are real and the position of its next token. ``keep`` rebuilds the slots from rows of the
    current ones (a slot that ended goes, one that branched into several tokens is copied);
    ``step`` feeds each slot its next token."""

    def __init__(self, policy, max_len: int) -> None:
        self.policy = policy
        self.max_len = max_len  # prompt plus completion: the longest a row can grow
        self.past = None
        self.length = 0  # tokens in the cache
        self.mask = self.position = None

    def _start(self, mask: torch.Tensor) -> None:
        # every generated position of a live slot is real: the key mask is the prompt's, then ones
        self.length = mask.shape[1]
        self.mask = torch.cat([mask, mask.new_ones(mask.shape[0], self.max_len - self.length)], dim=1)  # (S, L)
        self.position = mask.sum(dim=1, keepdim=True)  # (S, 1): position of the next token

    def _keep_slots(self, index: torch.Tensor) -> None:
        self.mask, self.position = self.mask.index_select(0, index), self.position.index_select(0, index)

    def advance(self, slot: torch.Tensor, rows: torch.Tensor, token: torch.Tensor, vocab: int):
        """Feed each live row its sampled token: one new slot per distinct (old slot, token), which
        starts from its parent's cache. Returns the new slots' logits and each row's new slot.

        Shape: slot, rows, token (A,) for the A rows still generating → (S', V), (A,).
        """
        pairs, slot = torch.unique(slot * vocab + token, return_inverse=True)
        self.keep(pairs // vocab)
        return self.step((pairs % vocab)[:, None]), slot


class _CachedLM(_Slots):
    """Any causal LM from transformers, decoded through its own KV cache."""

    def __init__(self, policy, max_len: int) -> None:
        super().__init__(policy, max_len)
        # transformers 5.24 calls the cache argument and output ``cache`` (``past_key_values`` is deprecated
        # there); older versions know only ``past_key_values``
        self.cache_arg = "cache" if "cache" in inspect.signature(policy.forward).parameters else "past_key_values"

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        """Logits after the last prompt token of each distinct prompt (``slot``: each row's; the
        rows read them by it). Shape: ids, mask (S, Tp) → (S, V)."""
        self._start(mask)
        out = self.policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                          use_cache=True, logits_to_keep=1)
        self.past = getattr(out, self.cache_arg)
        return out.logits[:, -1]

    def keep(self, index: torch.Tensor) -> None:
        """Rebuild the slots from rows ``index`` (S',) of the current S (rows may repeat or go)."""
        self.past.reorder_cache(index)
        self._keep_slots(index)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        """Logits after one more token per slot. Shape: token (S, 1) → (S, V)."""
        self.length += 1
        out = self.policy(input_ids=token, attention_mask=self.mask[:, : self.length], position_ids=self.position,
                          use_cache=True, **{self.cache_arg: self.past})
        self.past, self.position = getattr(out, self.cache_arg), self.position + 1
        return out.logits[:, -1]


class _GPT2Decoder(_Slots):
    """GPT-2 decoding with a preallocated KV cache, through ``gpt2.blocks`` (the model's own weights).

    The same arithmetic as ``GPT2LMHeadModel.forward`` (a test checks the log-probs against a
    full forward pass), without the per-call work of the generic path: no cache objects grown
    by concatenation, no 4-D mask built at every step, no module hooks or output dataclasses.
    The keys and values of every layer live in one tensor, so ``keep`` is one copy.
    """

    def __init__(self, policy, max_len: int, weights: gpt2.Weights) -> None:
        super().__init__(policy, max_len)
        self.weights = weights

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor, slot: torch.Tensor) -> torch.Tensor:
        w = self.weights
        heads, c = w.layers[0].heads, w.wte.shape[1]
        # (layer, key/value, S, head, position, head_dim)
        self.past = w.wte.new_empty((len(w.layers), 2, ids.shape[0], heads, self.max_len, c // heads))
        self._start(mask)
        # (S, 1, 1, L): 0 on the keys each slot's query may see, −inf elsewhere, added to the attention
        # scores as SDPA would after converting a boolean mask (converting it at every step costs two ops a layer)
        keys = self.mask.bool()[:, None, None, :]
        self.mask = torch.zeros(keys.shape, dtype=w.wte.dtype, device=keys.device).masked_fill_(~keys, float("-inf"))
        hidden = gpt2.blocks(w, ids, position_ids_from_mask(mask), gpt2.padded_causal_mask(mask), self.past)
        return gpt2.head(w, hidden[:, -1])  # (S, V)

    def keep(self, index: torch.Tensor) -> None:
        self.past = self.past.index_select(2, index)
        self._keep_slots(index)

    def step(self, token: torch.Tensor) -> torch.Tensor:
        start, self.length = self.length, self.length + 1
        hidden = gpt2.blocks(self.weights, token, self.position, self.mask[..., : self.length], self.past, start)
        self.position = self.position + 1
        return gpt2.head(self.weights, hidden[:, -1])  # (S, V)


def _one_row_per_slot(slot: torch.Tensor, rows: torch.Tensor, n_slots: int) -> torch.Tensor:
    """For each slot, one of the rows that read it. Shape: slot, rows (A,) → (S,)."""
    return torch.empty(n_slots, dtype=torch.long, device=rows.device).scatter_(0, slot, rows)


@torch.no_grad()
def sample_ids(
    policy,
    prompt_ids: torch.Tensor,
    prompt_mask: torch.Tensor,
    *,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    logit_bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The sampling loop on token ids.

    Shape: prompt_ids, prompt_mask (B, Tp), left-padded → completion_ids, completion_mask,
    logp, each (B, Tc) with Tc ≤ max_new_tokens (the loop stops once every row has ended).

    Raises:
        FloatingPointError: the policy's next-token distribution was NaN (its weights diverged,
            e.g. after a learning rate far too high): nothing it sampled would mean anything.
    """
    check_tensor("prompt_ids", prompt_ids, kind="int", ndim=2, nonempty=True, dims="(B, Tp)")
    check_mask("prompt_mask", prompt_mask, prompt_ids, "prompt_ids")
    check_int("max_new_tokens", max_new_tokens, ge=1)
    check_float("temperature", temperature, gt=0)
    batch, prompt_len = prompt_ids.shape
    device = prompt_ids.device
    weights = gpt2.weights(policy)
    if weights is not None and graphs.enabled(device, batch):
        decoder = graphs.decoder(weights, batch, prompt_len + max_new_tokens)
    elif weights is not None:
        decoder = _GPT2Decoder(policy, prompt_len + max_new_tokens, weights)
    else:
        decoder = _CachedLM(policy, prompt_len + max_new_tokens)
    # 1) outputs start as "nothing generated": PAD, log-prob 0
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logp = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)
    noise_device = generator.device if generator is not None else device
    tiny = torch.finfo(torch.float32).tiny

    # Rows with the same prefix (same prompt, same tokens so far) have the same next-token
    # distribution, so the model runs once per distinct prefix (a "slot") and each row reads
    # its slot's logits. Repeated prompts (several samples per prompt) share their prefill;
    # rows that have ended leave the batch and cost nothing more.
    # 2) prefill: one pass over the distinct prompts fills the KV cache
    rows = torch.arange(batch, device=device)  # rows still generating; rows[i] reads slot[i]
    n_slots, slot = unique_rows(prompt_ids * 2 + prompt_mask)  # a prompt (its ids and mask) → its slot
    first = _one_row_per_slot(slot, rows, n_slots)
    logits = decoder.prefill(prompt_ids[first], prompt_mask[first], slot)  # (S, V)
    steps = 0
    for t in range(max_new_tokens):
        # 3) π(· | x, y_<t) per slot: illegal tokens masked, then tempered
        logits = logits.float()
        if logit_bias is not None:
            logits = logits + logit_bias
        if temperature != 1.0:
            logits = logits / temperature
        logprobs = torch.log_softmax(logits, dim=-1).index_select(0, slot)  # (A, V)
        # Gumbel-max: argmax(log π + G) with G = −log(−log U), U ~ Uniform(0, 1), is an exact
        # draw from π, and cheaper than torch.multinomial. Each row draws its own noise.
        # A generator on another device (a CPU one while the policy is on CUDA) draws there and
        # the noise moves over: the same seed gives the same samples on every device.
        uniform = torch.rand(logprobs.shape, generator=generator, device=noise_device).to(device)
        token = (logprobs - uniform.clamp_(min=tiny).log_().neg_().log_()).argmax(dim=-1)  # (A,)
        tokens[rows, t] = token
        logp[rows, t] = logprobs.gather(1, token[:, None]).squeeze(1)
        steps = t + 1
        # 4) a row ends at its EOS; the others move to the slot of (old slot, new token)
        going = (token != eos_id).nonzero().squeeze(1)
        if steps == max_new_tokens or len(going) == 0:
            break
        rows, token = rows.index_select(0, going), token.index_select(0, going)
        # 5) feed the sampled tokens back (the cache holds everything before them): one new slot
        # per distinct (old slot, token), or on a CUDA graph one per row
        logits, slot = decoder.advance(slot.index_select(0, going), rows, token, logprobs.shape[1])
    # a NaN logit makes the log-softmax of its row NaN and argmax picks a NaN entry, so one check
    # of the sampled log-probs, after the loop, sees every NaN (and costs nothing per token)
    if bool(torch.isnan(logp).any()):
        raise FloatingPointError("the policy's next-token logits are not finite (nan) while sampling: its weights "
                                 "have diverged (a learning rate or β far too high?) or its input is broken")
    tokens = tokens[:, :steps]
    # a token is real until the row's first EOS, which is included (rows leave only at EOS)
    eos = (tokens == eos_id).long()
    mask = (eos.cumsum(dim=1) - eos == 0).to(prompt_mask.dtype)
    return tokens, mask, logp[:, :steps]


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows left-padded to one width. Shape: B rows → ids, mask (B, T). A list that repeats (the
    same prompt's ids, sampled many times) is padded once."""
    width = max(map(len, rows))
    index_of: dict[int, int] = {}  # id of a row's list → its index in ``distinct`` (all lists alive here)
    distinct: list = []
    inverse = []
    for r in rows:
        if id(r) not in index_of:
            index_of[id(r)] = len(distinct)
            distinct.append(r)
        inverse.append(index_of[id(r)])
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in distinct], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in distinct], dtype=torch.long)
    if len(distinct) < len(rows):
        index = torch.tensor(inverse)
        ids, mask = ids[index], mask[index]
    return ids.to(device), mask.to(device)


def _right_pad(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, width - x.shape[1]), value=value)


def _left_pad_tensor(x: torch.Tensor, width: int, value) -> torch.Tensor:
    return torch.nn.functional.pad(x, (width - x.shape[1], 0), value=value)

def sample_rows(
    policy,
    rows: list[list[int]],
    *,
    batch_size: int | None,
    max_new_tokens: int,
    eos_id: int,
    pad_id: int,
    logit_bias: torch.Tensor | None = None,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """:func:`sample_ids` over prompts given as lists of token ids, ``batch_size`` rows at a time
    (all at once when None), with the policy in eval mode (no dropout) while it samples.

    Shape: B rows → prompt_ids, prompt_mask (B, Tp), left-padded; completion_ids,
    completion_mask, logp (B, Tc), right-padded.
    """
    device = next(policy.parameters()).device
    # no dropout while sampling (the written-out GPT-2 has none, and switching modes costs a walk over every module)
    was_training = policy.training and not gpt2.supports(policy)
    if was_training:
        policy.eval()
    chunks = []
    step = batch_size or len(rows)
    try:
        for start in range(0, len(rows), step):
            ids, mask = _left_pad(rows[start: start + step], pad_id, device)
            out = sample_ids(policy, ids, mask, max_new_tokens=max_new_tokens, eos_id=eos_id, pad_id=pad_id,
                             logit_bias=logit_bias, temperature=temperature, generator=generator)
            chunks.append((ids, mask, *out))
    finally:
        if was_training:
            policy.train()
    tp = max(c[0].shape[1] for c in chunks)
    tc = max(c[2].shape[1] for c in chunks)
    return (torch.cat([_left_pad_tensor(c[0], tp, pad_id) for c in chunks]),
            torch.cat([_left_pad_tensor(c[1], tp, 0) for c in chunks]),
            torch.cat([_right_pad(c[2], tc, pad_id) for c in chunks]),
            torch.cat([_right_pad(c[3], tc, 0) for c in chunks]),
            torch.cat([_right_pad(c[4], tc, 0.0) for c in chunks]))
