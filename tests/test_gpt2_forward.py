"""rlhf_lab.gpt2: the written-out GPT-2 forward equals transformers' own, values and gradients."""

from __future__ import annotations

import copy

import pytest
import torch

from rlhf_lab import get_scale, gpt2
from rlhf_lab.models import build_policy, position_ids_from_mask
from rlhf_lab.rollout import completion_logprobs, encode_texts, sample
from rlhf_lab.worlds.reviews import ReviewsWorld

TINY = dict(n_layer=2, n_head=2, n_embd=32)


@pytest.fixture()
def world():
    return ReviewsWorld(n_topics=2, words_per_class=2, max_new_tokens=4)


@pytest.fixture()
def policy(world):
    torch.manual_seed(0)
    model = build_policy(world, get_scale("ci").replace(**TINY))
    with torch.no_grad():  # away from the initialisation's symmetric, near-uniform logits
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    return model


def _batch():
    """Left-padded rows of different lengths: every padding case the trainers produce."""
    ids = torch.tensor([[0, 0, 5, 6, 7, 1], [0, 4, 5, 6, 1, 0], [3, 4, 5, 6, 7, 8], [0, 0, 0, 9, 1, 0]])
    mask = torch.tensor([[0, 0, 1, 1, 1, 1], [0, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1], [0, 0, 0, 1, 1, 0]])
    return ids, mask


def test_logits_equal_the_models_own_forward_on_real_positions(policy):
    ids, mask = _batch()
    positions = position_ids_from_mask(mask)
    assert gpt2.supports(policy.eval())
    ours = gpt2.forward(gpt2.weights(policy), ids, mask, positions)
    theirs = policy(input_ids=ids, attention_mask=mask, position_ids=positions, use_cache=False).logits
    real = mask.bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(ours).all()  # padded positions too: no NaN to leak anywhere
    # ``first`` keeps only the last positions, the same values
    torch.testing.assert_close(gpt2.forward(gpt2.weights(policy), ids, mask, positions, first=3), ours[:, 3:])


def test_gradients_equal_the_models_own_backward(policy):
    ids, mask = _batch()
    positions = position_ids_from_mask(mask)
    twin = copy.deepcopy(policy)
    policy.train()
    twin.train()
    weights = torch.randn(ids.shape[0], ids.shape[1], policy.config.vocab_size) * mask[..., None]
    (gpt2.forward(gpt2.weights(policy), ids, mask, positions).log_softmax(-1) * weights).sum().backward()
    (twin(input_ids=ids, attention_mask=mask, position_ids=positions).logits.log_softmax(-1) * weights).sum().backward()
    grads = {n: p.grad for n, p in policy.named_parameters()}
    checked = 0
    for name, p in twin.named_parameters():
        if p.grad is None:
            continue
        torch.testing.assert_close(grads[name], p.grad, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
        checked += 1
    assert checked >= 4 * TINY["n_layer"]  # every block's projections had a gradient to compare


def test_completion_logprobs_take_the_fast_path_and_match_the_slow_one(world, policy, monkeypatch):
    policy.eval()
    batch = encode_texts(world, [world.prompts[0], world.prompts[1], world.prompts[0]],
                         [world.vocab[5] + " [EOS]", f"{world.vocab[6]} {world.vocab[7]} [EOS]", "[EOS]"])
    fast = completion_logprobs(policy, batch, world)
    calls = []
    monkeypatch.setattr(gpt2, "forward", lambda *a, **k: calls.append(1))
    monkeypatch.setattr(gpt2, "weights", lambda p: None)
    slow = completion_logprobs(policy, batch, world)
    torch.testing.assert_close(fast, slow, rtol=1e-5, atol=1e-6)
    assert not calls


def test_sampled_logp_equals_the_fast_teacher_forced_logp(world, policy):
    policy.eval()
    prompts = [world.prompts[i % 2] for i in range(64)]
    rollout = sample(policy, world, prompts, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(completion_logprobs(policy, rollout, world), rollout.logp, rtol=1e-5, atol=1e-5)


def test_what_the_fast_path_refuses(world, policy):
    policy.eval()
    assert gpt2.supports(policy)
    handle = policy.transformer.h[0].mlp.register_forward_hook(lambda *a: None)
    assert not gpt2.supports(policy)  # a hook only runs in the model's own forward
    handle.remove()
    assert gpt2.supports(policy)
    dropout = build_policy(world, get_scale("ci").replace(**TINY))
    dropout.config.resid_pdrop = 0.1
    assert gpt2.supports(dropout.eval()) and not gpt2.supports(dropout.train())  # dropout only matters in training
    policy.train()
    assert gpt2.supports(policy)  # no dropout in these policies: training alone changes nothing
    policy.activation_checkpointing_enable()
    assert not gpt2.supports(policy)
    assert not gpt2.supports(torch.nn.Linear(2, 2))


def test_a_layer_replaced_in_place_sends_the_model_to_its_own_forward(world, policy):
    """An adapter injected in place (as peft's ``inject_adapter_in_model`` does) keeps the model's
    type but changes what a layer computes: the written-out forward would skip it."""
    policy.eval()
    assert gpt2.supports(policy)
    original = policy.transformer.h[1].attn.c_attn
    policy.transformer.h[1].attn.c_attn = torch.nn.Sequential(original)
    assert not gpt2.supports(policy)
    policy.transformer.h[1].attn.c_attn = original
    policy.lm_head.bias = torch.nn.Parameter(torch.zeros(policy.config.vocab_size))
    assert not gpt2.supports(policy)  # head() has no bias term


# -- shared prefixes (rlhf_lab.prefixes) -----------------------------------------------------------
def _shared_batch(world, rows=48, seed=0):
    """Rows that share prompts and first words, with left padding (two prompt lengths) and right padding."""
    g = torch.Generator().manual_seed(seed)
    words = list(range(3, len(world.vocab)))
    prompts = [[words[0]], [words[1], words[2]], [words[3]]]
    out = []
    for r in range(rows):
        prompt = prompts[r % 3]
        n = int(torch.randint(1, 4, (1,), generator=g))
        completion = [words[int(torch.randint(0, 3, (1,), generator=g))] for _ in range(n)]
        out.append((prompt, completion + [world.eos_id]))
    tp, tc = max(len(p) for p, _ in out), max(len(c) for _, c in out)
    ids = torch.tensor([[0] * (tp - len(p)) + p + c + [0] * (tc - len(c)) for p, c in out])
    mask = torch.tensor([[0] * (tp - len(p)) + [1] * (len(p) + len(c)) + [0] * (tc - len(c)) for p, c in out])
    return ids, mask, tp - 1


@pytest.mark.parametrize("chunk", [256, 5, 1], ids=["one-chunk", "many-chunks", "a-chunk-per-row"])
def test_the_forest_equals_the_row_by_row_pass_values_and_gradients(world, policy, monkeypatch, chunk):
    from rlhf_lab import prefixes

    monkeypatch.setattr(prefixes, "CHUNK", chunk)
    ids, mask, first = _shared_batch(world)
    positions = position_ids_from_mask(mask)
    twin = copy.deepcopy(policy).train()
    policy.train()
    row_by_row = gpt2.forward
    # the forest must not fall back to the row-by-row pass on this batch
    monkeypatch.setattr(gpt2, "forward", lambda *a, **k: pytest.fail("fell back to the row-by-row pass"))
    ours = prefixes.forward(gpt2.weights(policy), ids, mask, positions, first)
    theirs = row_by_row(gpt2.weights(twin), ids, mask, positions, first)
    real = mask[:, first:].bool()
    torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-5)
    assert torch.isfinite(ours).all()
    weights = torch.randn(ours.shape) * real[..., None]
    (ours.log_softmax(-1) * weights).sum().backward()
    (theirs.log_softmax(-1) * weights).sum().backward()
    for (name, p), q in zip(policy.named_parameters(), twin.parameters()):
        scale = q.grad.abs().max().clamp(min=1e-3)
        assert (p.grad - q.grad).abs().max() / scale < 1e-4, name


def test_the_forest_falls_back_when_rows_share_little(world, policy, monkeypatch):
    from rlhf_lab import prefixes

    ids = torch.tensor([[3, 4, 5, 6], [4, 5, 6, 3], [5, 6, 3, 4]])  # no two rows share a first token
    mask = torch.ones_like(ids)
    calls = []
    real_forward = gpt2.forward
    monkeypatch.setattr(gpt2, "forward", lambda *a, **k: calls.append(1) or real_forward(*a, **k))
    prefixes.forward(gpt2.weights(policy.eval()), ids, mask, position_ids_from_mask(mask))
    assert calls == [1]
    # no real position at all (nothing to share): the row-by-row pass, finite
    out = prefixes.forward(gpt2.weights(policy), ids, torch.zeros_like(mask), torch.zeros_like(ids))
    assert calls == [1, 1] and torch.isfinite(out).all()


def test_unique_rows_numbers_rows_like_torch_unique(monkeypatch):
    from rlhf_lab.prefixes import unique_rows

    g = torch.Generator().manual_seed(0)
    for width, high in [(4, 5), (40, 90)]:  # an int64 key per row; too wide for one, unique(dim=0)
        rows = torch.randint(0, high, (200, width), generator=g)
        rows[100:] = rows[:100]  # every row twice
        count, inverse = unique_rows(rows)
        expected, expected_inverse = torch.unique(rows, dim=0, return_inverse=True)
        assert count == len(expected) < 200
        assert torch.equal(inverse, expected_inverse)


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs CUDA (run on the device machine)"))])
def test_lm_logits_takes_the_forest_on_a_cpu_and_rows_on_a_gpu(world, policy, monkeypatch, device):
    """On a GPU launches dominate and the forest's bookkeeping costs more than it saves."""
    from rlhf_lab import prefixes

    policy = policy.eval().to(device)
    ids, mask, first = (x.to(device) if isinstance(x, torch.Tensor) else x for x in _shared_batch(world))
    positions = position_ids_from_mask(mask)
    taken = []
    for name, module in (("forest", prefixes), ("rows", gpt2)):
        real = module.forward
        monkeypatch.setattr(module, "forward", lambda *a, real=real, name=name, **k: taken.append(name) or real(*a, **k))
    with torch.no_grad():
        out = prefixes.lm_logits(policy, ids, mask, positions, first)
        expected = policy(input_ids=ids, attention_mask=mask, position_ids=positions).logits[:, first:]
    assert taken[0] == ("forest" if device == "cpu" else "rows")
    real = mask[:, first:].bool()
    torch.testing.assert_close(out[real], expected[real], rtol=1e-4, atol=1e-4)
