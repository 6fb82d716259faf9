"""Exact ground truth on an enumerable world: every completion, its probability, its reward.

The worlds at scales ci and cpu are small enough to list every completion y a policy can write.
``exact_logprobs`` computes log π(y|x) of all of them in a few batched forward passes, and
``Enumeration`` holds one world's completions and gold rewards and turns a policy's exact
log-probs into the exact metrics every trainer logs: ``reward/gold``, ``reward/proxy``,
``kl/exact``, ``entropy/exact`` and, on a 0/1-reward world, ``pass@k``. The math on the
enumerated distributions (E_π[r], KL, H, π*_β, pass@k, best-of-n, prefix values) is in
``categorical.py``; its names used here are importable from this module too. Introduced in
chapter 00 (KL, entropy, the optimum π*_β) and chapter 08 (pass@k).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from rlhf_lab.categorical import (PASS_K, entropy, expected, kl, kl_regularized_optimum,  # noqa: F401  (re-exported)
                                  pass_at_k)
from rlhf_lab.validate import (check_ids, check_instance, check_int, check_logprobs, check_tensor, check_texts,
                               check_vocab)
from rlhf_lab.worlds.base import EOS, TokenWorld


# -- exact log-probs of a causal LM ------------------------------------------------------------
def count_completions(world: TokenWorld) -> int:
    """K = Σ_{n<L} W^n + W^L: completions with n words and EOS, plus the L-word truncated ones."""
    check_instance("world", world, TokenWorld, "a TokenWorld")
    return world.n_completions()


def _model_device(policy: torch.nn.Module) -> torch.device:
    return next(policy.parameters()).device


@torch.no_grad()
def exact_logprobs(
    policy: torch.nn.Module,
    world: TokenWorld,
    prompts: Sequence[str] | None = None,
    batch_size: int = 4096,
) -> torch.Tensor:
    """Exact log π(y|x) for every prompt x and every completion y of ``world.enumerate_completions()``.

    ``policy`` is any causal LM whose token ids are the world's vocab indices
    (``policy(input_ids=..., attention_mask=...).logits``). Its logits go through
    ``world.mask_logits`` and a log-softmax, as in the sampler. The model runs in eval mode (no
    dropout) and is put back in the mode it was in.

    One causal forward pass over x followed by the L − 1 words w_1 … w_{L−1} gives the next-token
    distribution after every prefix of those words. So we run the model once on each of the
    W^(L−1) longest prefixes per prompt (not once per completion) and add up

        log π(w_1 … w_n EOS | x) = Σ_{i≤n} log π(w_i | x, w_<i) + log π(EOS | x, w_≤n)   n < L
        log π(w_1 … w_L | x)     = Σ_{i≤L} log π(w_i | x, w_<i)            truncated, n = L

    Args:
        policy: a causal LM (e.g. ``transformers.GPT2LMHeadModel``).
        world: an enumerable token world.
        prompts: prompt texts; default ``world.prompts``.
        batch_size: sequences per forward pass.

    Returns:
        float64 tensor (P, K) on the CPU, in ``world.enumerate_completions()`` order; each row
        log-sum-exps to 0.
    """
    check_instance("world", world, TokenWorld, "a TokenWorld")
    world.check_enumerable()
    check_vocab(policy, world)  # before any forward pass
    check_int("batch_size", batch_size, ge=1)
    prompts = _prompts_of(world, prompts)
    table = world.token_to_id()
    words = [t for t in world.completion_vocab if t != EOS]
    w, length = len(words), world.max_new_tokens
    device = _model_device(policy)
    word_ids = torch.tensor([table[t] for t in words], device=device)  # (W,)
    n_seq = w ** (length - 1)
    # the W^(L−1) longest prefixes in lexicographic order: row s spells s in base W
    place = w ** torch.arange(length - 2, -1, -1, device=device)  # (L−1,)
    suffixes = word_ids[(torch.arange(n_seq, device=device)[:, None] // place) % w]  # (S, L−1) ids

    # prompts of one token length share forward passes (no padding, so no position shifts)
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(prompts):
        by_length.setdefault(len(world.encode(x)), []).append(i)
    out = torch.empty(len(prompts), count_completions(world), dtype=torch.float64)
    was_training = policy.training
    policy.eval()
    try:
        for rows in by_length.values():
            prompt_ids = torch.tensor([world.encode(prompts[i]) for i in rows], device=device)
            out[rows] = _group_logprobs(policy, world, prompt_ids, suffixes, word_ids, batch_size).cpu()
    finally:
        policy.train(was_training)
    return out


completion_logprobs = exact_logprobs  # the old name; rollout.completion_logprobs is the per-token one


def _group_logprobs(
    policy: torch.nn.Module,
    world: TokenWorld,
    prompt_ids: torch.Tensor,
    suffixes: torch.Tensor,
    word_ids: torch.Tensor,
    batch_size: int,
) -> torch.Tensor:
    """log π(y|x) for all K completions of G prompts of one length.

    Shape: prompt_ids (G, t0), suffixes (S, L−1), word_ids (W,) → (G, K) float64.
    """
    n_prompts, t0 = prompt_ids.shape
    n_seq, depth = suffixes.shape  # S = W^(L−1), depth = L − 1
    w, length = len(word_ids), depth + 1
    ids_all = torch.cat(
        [prompt_ids.repeat_interleave(n_seq, dim=0), suffixes.repeat(n_prompts, 1)], dim=1
    )  # (G·S, t0 + L − 1), prompt-major
    tok_lp, eos_lp, last_lp = [], [], []
    for start in range(0, len(ids_all), batch_size):
        ids = ids_all[start : start + batch_size]  # (B, t0 + L − 1)
        logits = policy(input_ids=ids, attention_mask=torch.ones_like(ids)).logits
        if logits.shape[-1] != len(world.vocab):
            raise ValueError(
                f"policy has {logits.shape[-1]} logits per token but the world has {len(world.vocab)} tokens"
            )
        # next-token distributions after x, x w_1, …, x w_1 … w_{L−1}, as the sampler sees them
        logp = torch.log_softmax(world.mask_logits(logits[:, t0 - 1 :].float()), dim=-1).double()  # (B, L, V)
        tok_lp.append(logp[:, :-1].gather(-1, ids[:, t0:, None]).squeeze(-1))  # (B, L−1) log π(w_i | …)
        eos_lp.append(logp[:, :, world.eos_id])  # (B, L) log π(EOS | first m words)
        last_lp.append(logp[:, -1, word_ids])  # (B, W) log π(w_L | x, w_1 … w_{L−1})
    tok_lp = torch.cat(tok_lp).view(n_prompts, n_seq, depth)
    eos_lp = torch.cat(eos_lp).view(n_prompts, n_seq, length)
    last_lp = torch.cat(last_lp).view(n_prompts, n_seq, w)
    # cum[g, s, m] = log-prob of the first m words of row s
    cum = torch.cat([torch.zeros_like(tok_lp[..., :1]), tok_lp.cumsum(-1)], dim=-1)  # (G, S, L)
    out = []
    for n in range(length):
        # the n-word prefixes, in order, are rows s = q · W^(L−1−n), q = 0 … W^n − 1
        rep = torch.arange(w**n, device=cum.device) * w ** (depth - n)
        out.append(cum[:, rep, n] + eos_lp[:, rep, n])  # (G, W^n)
    # truncated completions w_1 … w_L: row s then word k at index s·W + k (lexicographic)
    out.append((cum[:, :, depth, None] + last_lp).reshape(n_prompts, -1))  # (G, W^L)
    return torch.cat(out, dim=1)


def _prompts_of(world: TokenWorld, prompts: Sequence[str] | None) -> list[str]:
    """``prompts`` (default all of the world's), checked to be prompts of ``world``."""
    prompts = list(world.prompts) if prompts is None else check_texts("prompts", prompts)
    unknown = [x for x in prompts if x not in world.prompts]
    if unknown:
        raise ValueError(f"prompts must be prompts of world {world.name!r}; got {unknown[:3]}")
    return prompts


# -- an enumerated world -----------------------------------------------------------------------
class Enumeration:
    """Every completion of an enumerable world, its gold rewards, and exact metrics.

    Attributes:
        world: the world.
        prompts: the P prompt texts (default all of the world's).
        completions: the K completion texts, in ``world.enumerate_completions()`` order.
        gold: gold rewards, float64 (P, K).
    """

    def __init__(self, world: TokenWorld, prompts: Sequence[str] | None = None) -> None:
        check_instance("world", world, TokenWorld, "a TokenWorld")
        world.check_enumerable()
        self.world = world
        self.prompts = _prompts_of(world, prompts)
        self.completions = world.enumerate_completions()
        k = len(self.completions)
        self.gold = torch.stack(
            [world.gold_rewards([x] * k, self.completions) for x in self.prompts]
        ).double()  # (P, K)
        self._index = {c: i for i, c in enumerate(self.completions)}

    @property
    def verifiable(self) -> bool:
        """True on a world whose gold reward is a 0/1 verifier (``world.verifiable``): pass@k."""
        return bool(getattr(self.world, "verifiable", False))

    @property
    def shape(self) -> tuple[int, int]:
        """(P, K)."""
        return tuple(self.gold.shape)

    def logprobs(self, policy: torch.nn.Module, batch_size: int = 4096) -> torch.Tensor:
        """Exact log π(y|x), float64 (P, K); see :func:`exact_logprobs`."""
        return exact_logprobs(policy, self.world, self.prompts, batch_size=batch_size)

    def optimum(self, logp_ref: torch.Tensor, beta: float, rewards: torch.Tensor | None = None) -> torch.Tensor:
        """log π*_β for the gold rewards (or ``rewards``, e.g. a proxy's). Shape (P, K) (eq-kl-optimum)."""
        self._check(logp_ref, "logp_ref")
        rewards = self.gold if rewards is None else self._check(rewards, "rewards")
        return kl_regularized_optimum(logp_ref.double(), rewards.double(), beta)

    def metrics(
        self, logp: torch.Tensor, logp_ref: torch.Tensor | None = None, proxy: torch.Tensor | None = None
    ) -> dict[str, float]:
        """Exact ``reward/gold``, ``reward/proxy`` (if proxy rewards (P, K) are given), ``kl/exact``
        (if ``logp_ref`` is given) and ``entropy/exact``, each averaged uniformly over prompts;
        on a verifiable world (a 0/1 verifier as gold reward) also ``pass@k`` for k in ``PASS_K``.

        Shape: logp (P, K), logp_ref (P, K), proxy (P, K).
        """
        logp = self._check(logp, "logp").double()
        out = {"reward/gold": float(expected(logp, self.gold).mean())}
        if proxy is not None:
            proxy = check_tensor("proxy", self._check(proxy, "proxy"), finite=True)
            out["reward/proxy"] = float(expected(logp, proxy.double()).mean())
        if logp_ref is not None:
            out["kl/exact"] = float(kl(logp, self._check(logp_ref, "logp_ref").double()).mean())
        out["entropy/exact"] = float(entropy(logp).mean())
        if self.verifiable:
            out.update({f"pass@{k}": pass_at_k(logp, self.gold, k) for k in PASS_K})
        return out

    def sample(self, logp: torch.Tensor, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """Draw n completions per prompt exactly from π (with replacement).

        Shape: logp (P, K) → indices (P, n) into ``completions``.
        """
        check_int("n", n, ge=1)
        probs = check_logprobs("logp", self._check(logp, "logp"), normalized=True).double().exp()
        return torch.multinomial(probs, n, replacement=True, generator=generator)

    def texts(self, indices: torch.Tensor) -> list:
        """Completion texts of an index tensor, nested like it (a (P, n) tensor → P lists of n)."""
        check_ids("indices", indices, len(self.completions), "completion indices")
        return _map_nested(indices.tolist(), self.completions)

    def index(self, completions: Sequence[str]) -> torch.Tensor:
        """Indices of completion texts into ``completions``. Shape: → (len(completions),)."""
        completions = check_texts("completions", completions, nonempty=False)
        missing = [c for c in completions if c not in self._index]
        if missing:
            raise ValueError(f"completions not in the enumeration: {missing[:3]}")
        return torch.tensor([self._index[c] for c in completions], dtype=torch.long)

    def _check(self, x: torch.Tensor, name: str) -> torch.Tensor:
        check_tensor(name, x, dims=f"(P, K) = {self.shape}")
        if tuple(x.shape) != self.shape:
            raise ValueError(f"{name} must have shape (P, K) = {self.shape}, got {tuple(x.shape)}")
        return x.cpu()


def _map_nested(idx, completions: list[str]):
    if isinstance(idx, int):
        return completions[idx]
    return [_map_nested(i, completions) for i in idx]

