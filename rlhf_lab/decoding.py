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
model itself at this size. Any other causal LM goes through its own ``past_key_values``.
``sample_rows`` runs the loop over prompts given as token-id lists, a chunk of rows at a time.

Introduced in chapter 02.
"""

from __future__ import annotations

import torch

from rlhf_lab.models import position_ids_from_mask
from rlhf_lab.validate import check_float, check_int, check_mask, check_tensor


class _CachedLM:
    """Any causal LM from transformers, decoded through its own KV cache (``past_key_values``)."""

    def __init__(self, policy) -> None:
        self.policy = policy
        self.past = None

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits after the last prompt token. Shape: ids, mask (B, Tp) → (B, V)."""
        out = self.policy(input_ids=ids, attention_mask=mask, position_ids=position_ids_from_mask(mask),
                          use_cache=True, logits_to_keep=1)
        self.past = out.past_key_values
        return out.logits[:, -1]

    def keep(self, index: torch.Tensor) -> None:
        """Rebuild the cache from rows ``index`` of the current one (rows may repeat or go).

        Shape: index (U,) into the current rows.
        """
        self.past.reorder_cache(index)

    def step(self, token: torch.Tensor, position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Logits after one more token. Shape: token, position (A, 1), mask (A, T) → (A, V)."""
        out = self.policy(input_ids=token, attention_mask=mask, position_ids=position,
                          past_key_values=self.past, use_cache=True)
        self.past = out.past_key_values
        return out.logits[:, -1]


class _GPT2Decoder:
    """GPT-2 decoding with a preallocated KV cache, written out with the model's own weights.

    The same arithmetic as ``GPT2LMHeadModel.forward`` (a test checks the log-probs against a
    full forward pass), without the per-call work of the generic path: no cache objects grown
    by concatenation, no 4-D mask built from scratch, no module hooks or output dataclasses.
    """

    def __init__(self, policy, max_len: int) -> None:
        self.tf, self.lm_head = policy.transformer, policy.lm_head
        self.max_len = max_len  # prompt plus completion: the length the cache is allocated for
        config = policy.config
        self.n_head, self.n_embd = config.n_head, config.n_embd
        self.eps = config.layer_norm_epsilon
        self.cache: list[tuple[torch.Tensor, torch.Tensor]] = []
        self.length = 0

    @staticmethod
    def supports(policy) -> bool:
        from transformers import GPT2LMHeadModel

        config = getattr(policy, "config", None)
        return (type(policy) is GPT2LMHeadModel and not config.add_cross_attention
                and not config.reorder_and_upcast_attn)

    def _forward(self, ids: torch.Tensor, positions: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """New tokens through every block; their keys and values are written into the cache."""
        F = torch.nn.functional
        tf, nh, c = self.tf, self.n_head, self.n_embd
        b, t = ids.shape
        start, end = self.length, self.length + t
        h = (F.embedding(ids, tf.wte.weight) + F.embedding(positions, tf.wpe.weight)).view(b * t, c)
        for block, (k_cache, v_cache) in zip(tf.h, self.cache):
            attn, mlp = block.attn, block.mlp
            x = F.layer_norm(h, (c,), block.ln_1.weight, block.ln_1.bias, self.eps)
            qkv = torch.addmm(attn.c_attn.bias, x, attn.c_attn.weight)  # (B·T, 3C); Conv1D is x @ W + b
            q, k, v = qkv.view(b, t, 3, nh, c // nh).permute(2, 0, 3, 1, 4)  # each (B, nh, T, hs)
            k_cache[:, :, start:end] = k
            v_cache[:, :, start:end] = v
            y = F.scaled_dot_product_attention(
                q, k_cache[:, :, :end], v_cache[:, :, :end], attn_mask=attn_mask, scale=attn.scaling
            )  # (B, nh, T, hs)
            h = h + torch.addmm(attn.c_proj.bias, y.transpose(1, 2).reshape(b * t, c), attn.c_proj.weight)
            x = F.layer_norm(h, (c,), block.ln_2.weight, block.ln_2.bias, self.eps)
            x = mlp.act(torch.addmm(mlp.c_fc.bias, x, mlp.c_fc.weight))  # (B·T, 4C)
            h = h + torch.addmm(mlp.c_proj.bias, x, mlp.c_proj.weight)
        self.length = end
        last = h.view(b, t, c)[:, -1]  # (B, C)
        return F.linear(F.layer_norm(last, (c,), tf.ln_f.weight, tf.ln_f.bias, self.eps), self.lm_head.weight)

    def prefill(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        batch, length = ids.shape
        param = self.tf.wte.weight
        shape = (batch, self.n_head, self.max_len, self.n_embd // self.n_head)
        self.cache = [(param.new_empty(shape), param.new_empty(shape)) for _ in self.tf.h]
        self.length = 0
        # causal and no padded keys; a padded query may see itself, so its row is never empty
        # (an all-masked row is NaN in SDPA, and a NaN value would leak through 0 · NaN)
        causal = torch.ones(length, length, dtype=torch.bool, device=ids.device).tril()
        keys = mask.bool()[:, None, None, :] | torch.eye(length, dtype=torch.bool, device=ids.device)
        return self._forward(ids, position_ids_from_mask(mask), causal & keys)  # mask (B, 1, T, T)

    def keep(self, index: torch.Tensor) -> None:
        self.cache = [(k[index], v[index]) for k, v in self.cache]

    def step(self, token: torch.Tensor, position: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self._forward(token, position, mask.bool()[:, None, None, :])  # mask (A, 1, 1, T)


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
    if _GPT2Decoder.supports(policy):
        decoder = _GPT2Decoder(policy, prompt_len + max_new_tokens)
    else:
        decoder = _CachedLM(policy)
    # 1) outputs start as "nothing generated": PAD, log-prob 0, mask 0
    attention = torch.cat([prompt_mask, prompt_mask.new_zeros(batch, max_new_tokens)], dim=1)  # (B, Tp + N)
    tokens = torch.full((batch, max_new_tokens), pad_id, dtype=torch.long, device=device)
    logp = torch.zeros((batch, max_new_tokens), dtype=torch.float32, device=device)
    next_pos = prompt_mask.sum(dim=1, keepdim=True)  # (B, 1): position of the first new token

    # Rows with the same prefix (same prompt, same tokens so far) have the same next-token
    # distribution, so the model runs once per distinct prefix (a "slot") and each row reads
    # its slot's logits. Repeated prompts (several samples per prompt) share their prefill;
    # rows that have ended leave the batch and cost nothing more.
    # 2) prefill: one pass over the distinct prompts fills the KV cache
    rows = torch.arange(batch, device=device)  # rows still generating; rows[i] reads slot[i]
    slot_of: dict[tuple, int] = {}  # a prompt (its ids and mask) → its slot
    keys = torch.cat([prompt_ids, prompt_mask], dim=1).tolist()
    slot = torch.tensor([slot_of.setdefault(tuple(k), len(slot_of)) for k in keys], device=device)
    first = _one_row_per_slot(slot, rows, len(slot_of))
    logits = decoder.prefill(prompt_ids[first], prompt_mask[first])  # (S, V)
    steps = 0
    for t in range(max_new_tokens):
        # 3) π(· | x, y_<t) per slot: illegal tokens masked, then tempered
        logits = logits.float()
        if logit_bias is not None:
            logits = logits + logit_bias
        logprobs = torch.log_softmax(logits / temperature, dim=-1)[slot]  # (A, V)
        # Gumbel-max: argmax(log π + G) with G = −log(−log U), U ~ Uniform(0, 1), is an exact
        # draw from π, and cheaper than torch.multinomial. Each row draws its own noise.
        # A generator on another device (a CPU one while the policy is on CUDA) draws there and
        # the noise moves over: the same seed gives the same samples on every device.
        noise_device = generator.device if generator is not None else device
        uniform = torch.rand(logprobs.shape, generator=generator, device=noise_device).to(device)
        gumbel = -uniform.clamp_(min=torch.finfo(uniform.dtype).tiny).log_().neg_().log_()
        token = (logprobs + gumbel).argmax(dim=-1)  # (A,)
        tokens[rows, t] = token
        logp[rows, t] = logprobs.gather(1, token[:, None]).squeeze(1)
        attention[rows, prompt_len + t] = 1
        steps = t + 1
        # 4) a row ends at its EOS; the others move to the slot of (old slot, new token)
        going = token != eos_id
        if steps == max_new_tokens or not bool(going.any()):
            break
        rows, token = rows[going], token[going]
        vocab = logprobs.shape[1]
        pairs, slot = torch.unique(slot[going] * vocab + token, return_inverse=True)  # (old slot, token)
        decoder.keep(pairs // vocab)  # each new slot starts from its parent's cache
        first = _one_row_per_slot(slot, rows, len(pairs))  # a slot's rows share prompt and positions
        # 5) feed the sampled tokens back; the cache holds everything before them
        logits = decoder.step((pairs % vocab)[:, None], next_pos[first] + t, attention[first, : prompt_len + t + 1])
    # a NaN logit makes the log-softmax of its row NaN and argmax picks a NaN entry, so one check
    # of the sampled log-probs, after the loop, sees every NaN (and costs nothing per token)
    if bool(torch.isnan(logp).any()):
        raise FloatingPointError("the policy's next-token logits are not finite (nan) while sampling: its weights "
                                 "have diverged (a learning rate or β far too high?) or its input is broken")
    return tokens[:, :steps], attention[:, prompt_len: prompt_len + steps], logp[:, :steps]


def _left_pad(rows: list[list[int]], pad_id: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    width = max(len(r) for r in rows)
    ids = torch.tensor([[pad_id] * (width - len(r)) + list(r) for r in rows], dtype=torch.long)
    mask = torch.tensor([[0] * (width - len(r)) + [1] * len(r) for r in rows], dtype=torch.long)
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
    was_training = policy.training
    if was_training:  # no dropout while sampling
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
