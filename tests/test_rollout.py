"""rollout.py: the KV-cache sampler against full forward passes and exact distributions."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pytest
import torch
from transformers import GPT2LMHeadModel

from rlhf_lab import models, rollout
from rlhf_lab.scale import get_scale
from rlhf_lab.worlds.base import EOS, PAD, UNK, TokenWorld


class SmallWorld(TokenWorld):
    """Three words + EOS after prompts of one and two tokens: 1 + 3 + 9 + 27 = 40 completions."""

    def __init__(self, max_new_tokens: int = 3) -> None:
        self.name = "small"
        self.prompts = ["a", "b", "the b"]
        self.completion_vocab = ["good", "bad", "meh", EOS]
        self.vocab = [PAD, EOS, UNK, "the", "a", "b", "good", "bad", "meh"]
        self.max_new_tokens = max_new_tokens
        self.enumerable = True

    def corpus(self, n: int, seed: int = 0) -> list[str]:
        return [f"{self.prompts[i % 3]} good [EOS]" for i in range(n)]

    def gold_reward(self, prompt: str, completion: str) -> float:
        return float(completion.split().count("good"))


class SubclassedGPT2(GPT2LMHeadModel):
    """Not exactly GPT2LMHeadModel, so the sampler takes its generic (past_key_values) path."""


def random_policy(world: TokenWorld, std: float = 0.25, seed: int = 0, cls=GPT2LMHeadModel):
    """A policy whose completion distribution is far from uniform and puts mass on every length."""
    torch.manual_seed(seed)
    config = models.build_policy(world, get_scale("ci")).config
    model = cls(config)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
    return model.eval()


@pytest.fixture
def world():
    return SmallWorld()


def _prompts(world, n):
    return [world.prompts[i % len(world.prompts)] for i in range(n)]


# -- (a) the sampler's log-probs are the policy's ---------------------------------------------
@pytest.mark.parametrize("cls", [GPT2LMHeadModel, SubclassedGPT2], ids=["gpt2-fast-path", "generic-cache"])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_logp_equal_a_full_forward_pass(world, cls, temperature):
    policy = random_policy(world, cls=cls)
    g = torch.Generator().manual_seed(1)
    r = rollout.sample(policy, world, _prompts(world, 300), temperature=temperature, generator=g)
    with torch.no_grad():
        teacher = rollout.completion_logprobs(policy, r, world, temperature)
    assert torch.allclose(r.logp, teacher, atol=1e-5, rtol=0)
    # and by hand, without the helper: one forward pass, mask_logits, /τ, log-softmax
    with torch.no_grad():
        logits = policy(input_ids=r.input_ids, attention_mask=r.attention_mask,
                        position_ids=models.position_ids_from_mask(r.attention_mask)).logits
    tp = r.prompt_ids.shape[1]
    logp = torch.log_softmax(world.mask_logits(logits[:, tp - 1: -1]) / temperature, -1)
    by_hand = logp.gather(-1, r.completion_ids[..., None]).squeeze(-1).masked_fill(r.completion_mask == 0, 0)
    assert torch.allclose(r.logp, by_hand, atol=1e-5, rtol=0)


def test_another_architecture_goes_through_the_generic_path(world):
    """A tiny Llama (rotary positions, so left padding must be handled by position_ids)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(world.vocab), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=32,
                         pad_token_id=0, eos_token_id=1, bos_token_id=1, initializer_range=0.3)
    policy = LlamaForCausalLM(config).eval()
    r = rollout.sample(policy, world, _prompts(world, 200), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(r.logp, rollout.completion_logprobs(policy, r, world), atol=1e-5, rtol=0)
    _check_rollout_invariants(world, r, world.max_new_tokens)


def test_fast_and_generic_paths_draw_the_same_tokens(world):
    fast = random_policy(world)
    generic = random_policy(world, cls=SubclassedGPT2)
    prompts = _prompts(world, 500)
    a = rollout.sample(fast, world, prompts, generator=torch.Generator().manual_seed(3))
    b = rollout.sample(generic, world, prompts, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a.completion_ids, b.completion_ids)
    assert torch.allclose(a.logp, b.logp, atol=1e-5)


def test_chunked_sampling_matches_its_own_teacher_forcing(world):
    policy = random_policy(world)
    r = rollout.sample(policy, world, _prompts(world, 50), batch_size=7, generator=torch.Generator().manual_seed(0))
    assert r.prompt_ids.shape == (50, 2) and len(r) == 50
    with torch.no_grad():
        assert torch.allclose(r.logp, rollout.completion_logprobs(policy, r, world), atol=1e-5, rtol=0)


def test_plain_tokenizer_variant_samples_the_unmasked_distribution(world):
    policy = random_policy(world)
    tok = models.build_tokenizer(world)
    r = rollout.sample(policy, tok, _prompts(world, 200), max_new_tokens=3, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert torch.allclose(r.logp, rollout.completion_logprobs(policy, r), atol=1e-5, rtol=0)
    real = r.completion_ids[r.completion_mask.bool()]
    assert set(real.tolist()) - set(range(6, 9)) - {1}  # unmasked: prompt words and specials appear too
    assert r.completions[0] == tok.decode(r.completion_ids[0, : int(r.lengths[0])])


def test_logprobs_backpropagate_without_nan(world):
    policy = random_policy(world)
    r = rollout.sample(policy, world, _prompts(world, 64), generator=torch.Generator().manual_seed(0))
    policy.train()
    loss = -(rollout.completion_logprobs(policy, r, world).sum(1)).mean()
    loss.backward()
    grads = torch.cat([p.grad.flatten() for p in policy.parameters() if p.grad is not None])
    assert torch.isfinite(grads).all() and grads.abs().sum() > 0


# -- (b) goodness of fit against the exact distribution ------------------------------------------
def _exact_logprobs(policy, world) -> torch.Tensor:
    """(P, K) exact log-probs: rlhf_lab.exact if present, else one forward pass per completion."""
    try:
        from rlhf_lab.exact import completion_logprobs
    except ImportError:
        completion_logprobs = None
    if completion_logprobs is not None:
        return completion_logprobs(policy, world)
    rows = []
    for prompt in world.prompts:
        p_ids = world.encode(prompt)
        seqs = [p_ids + world.encode(c) for c in world.enumerate_completions()]
        width = max(map(len, seqs))
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        mask = (ids != 0).long()
        with torch.no_grad():
            logits = world.mask_logits(policy(input_ids=ids, attention_mask=mask).logits)
        lp = torch.log_softmax(logits[:, len(p_ids) - 1: -1], -1).gather(-1, ids[:, len(p_ids):, None]).squeeze(-1)
        rows.append(lp.masked_fill(mask[:, len(p_ids):] == 0, 0).sum(1).double())
    return torch.stack(rows)


def chi_square_p_value(observed: torch.Tensor, expected: torch.Tensor, min_expected: float = 5.0) -> float:
    """Pearson's χ² test; bins expected to hold fewer than ``min_expected`` samples are merged."""
    small = expected < min_expected
    obs = torch.cat([observed[~small], observed[small].sum()[None]])
    exp = torch.cat([expected[~small], expected[small].sum()[None]])
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    stat = ((obs - exp) ** 2 / exp).sum()
    dof = len(exp) - 1
    # P(χ²_dof ≥ stat) = Q(dof/2, stat/2), the regularised upper incomplete gamma function
    return torch.special.gammaincc(torch.tensor(dof / 2, dtype=torch.float64), stat / 2).item()


class Tempered(torch.nn.Module):
    """The policy with its logits divided by τ: its exact distribution is what sampling at τ draws."""

    def __init__(self, policy, temperature: float) -> None:
        super().__init__()
        self.policy, self.temperature = policy, temperature

    def forward(self, **kwargs):
        return SimpleNamespace(logits=self.policy(**kwargs).logits / self.temperature)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_samples_follow_the_exact_distribution(world, temperature):
    policy = random_policy(world)
    logp = _exact_logprobs(Tempered(policy, temperature), world)  # (P, K)
    probs = logp.exp()
    assert torch.allclose(probs.sum(1), torch.ones(len(world.prompts), dtype=torch.float64), atol=1e-6)
    completions = world.enumerate_completions()
    truncated = torch.tensor([not c.endswith(EOS) for c in completions])
    assert probs[:, truncated].sum(1).min() > 0.05  # every branch of the sampler is exercised

    n = 21_000
    r = rollout.sample(policy, world, _prompts(world, n), temperature=temperature,
                       generator=torch.Generator().manual_seed(1234))
    index = {c: k for k, c in enumerate(completions)}
    counts = torch.zeros_like(probs)
    for i, c in enumerate(r.completions):
        counts[i % 3, index[c]] += 1
    per_prompt = n // 3
    p_value = chi_square_p_value(counts.flatten(), (per_prompt * probs).flatten())
    assert p_value > 1e-3, f"χ² goodness of fit p = {p_value:.2e}"


def test_chi_square_helper_rejects_a_wrong_distribution():
    g = torch.Generator().manual_seed(0)
    p = torch.tensor([0.5, 0.3, 0.15, 0.05], dtype=torch.float64)
    counts = torch.bincount(torch.multinomial(p, 20_000, replacement=True, generator=g), minlength=4).double()
    assert chi_square_p_value(counts, 20_000 * p) > 1e-3
    q = torch.tensor([0.47, 0.33, 0.15, 0.05], dtype=torch.float64)
    assert chi_square_p_value(counts, 20_000 * q) < 1e-3


# -- (c) EOS, padding and masks -------------------------------------------------------------------
def _check_rollout_invariants(world, r, max_new_tokens):
    ids, mask = r.completion_ids, r.completion_mask
    assert ids.shape == mask.shape == r.logp.shape and ids.shape[1] <= max_new_tokens
    allowed = world.allowed_mask()
    for row, m, lp, text in zip(ids.tolist(), mask.tolist(), r.logp.tolist(), r.completions):
        n = sum(m)
        assert m == [1] * n + [0] * (len(m) - n)  # 1 up to and including EOS, then 0
        assert all(t == world.pad_id for t in row[n:]) and all(v == 0.0 for v in lp[n:])
        assert all(allowed[t] for t in row[:n]) and all(v <= 0 for v in lp[:n])
        eos = [k for k, t in enumerate(row[:n]) if t == world.eos_id]
        if eos:
            assert eos == [n - 1]  # one EOS, the last real token: nothing after it
        else:
            assert n == max_new_tokens  # truncated rows ran out of room and carry no EOS
        assert text == world.decode(row[:n])
    assert r.truncated.tolist() == [world.eos_id not in row for row in ids.tolist()]
    assert torch.equal(r.lengths, mask.sum(1))
    assert r.prompt_mask.sum(1).tolist() == [len(p.split()) for p in r.prompts]
    assert r.texts[0] == f"{r.prompts[0]} {r.completions[0]}"


@pytest.mark.parametrize("max_new_tokens", [1, 3, 6])
def test_eos_padding_and_masks(world, max_new_tokens):
    policy = random_policy(world)
    r = rollout.sample(policy, world, _prompts(world, 400), max_new_tokens=max_new_tokens,
                       generator=torch.Generator().manual_seed(max_new_tokens))
    _check_rollout_invariants(world, r, max_new_tokens)
    assert r.truncated.any() and (~r.truncated).any()


def test_the_batch_stops_when_every_row_has_ended(world):
    class EosWorld(SmallWorld):
        """EOS gets a large bonus, so every row ends long before max_new_tokens."""

        def mask_logits(self, logits):
            bonus = torch.zeros(logits.shape[-1], device=logits.device)
            bonus[self.eos_id] = 8.0
            return super().mask_logits(logits + bonus)

    eos_world = EosWorld(max_new_tokens=8)
    policy = random_policy(eos_world)
    r = rollout.sample(policy, eos_world, _prompts(eos_world, 64), generator=torch.Generator().manual_seed(0))
    assert r.completion_ids.shape[1] < 8
    assert not r.truncated.any()
    _check_rollout_invariants(eos_world, r, 8)
    with torch.no_grad():
        assert torch.allclose(r.logp, rollout.completion_logprobs(policy, r, eos_world), atol=1e-5, rtol=0)


def test_mode_is_restored_and_bad_arguments_are_rejected(world):
    policy = random_policy(world).train()
    rollout.sample(policy, world, ["a"], generator=torch.Generator().manual_seed(0))
    assert policy.training
    with pytest.raises(ValueError, match="temperature"):
        rollout.sample(policy, world, ["a"], temperature=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        rollout.sample(policy, world, ["a"], max_new_tokens=0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        rollout.sample(policy, world, ["a"], max_new_tokens=10_000)
    with pytest.raises(ValueError, match="batch_size"):
        rollout.sample(policy, world, ["a"], batch_size=0)
    with pytest.raises(ValueError, match="prompts"):
        rollout.sample(policy, world, [])
    with pytest.raises(ValueError, match="max_new_tokens"):
        rollout.sample(policy, models.build_tokenizer(world), ["a"])


def test_same_seed_same_rollout(world):
    policy = random_policy(world)
    a = rollout.sample(policy, world, _prompts(world, 30), generator=torch.Generator().manual_seed(5))
    b = rollout.sample(policy, world, _prompts(world, 30), generator=torch.Generator().manual_seed(5))
    assert a.completions == b.completions and torch.equal(a.logp, b.logp)
    assert math.isclose(a.seq_logp.sum().item(), a.logp.sum().item(), rel_tol=1e-6)
