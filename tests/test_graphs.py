"""The sampler's CUDA-graph decoder (rlhf_lab/graphs.py) samples what the eager decoder samples.

On a CPU the recorded step runs eagerly (the same static buffers, tensor-held cache position and
full-length masked attention), so the decoding logic is checked everywhere; the tests marked
``cuda`` record real graphs and run only where CUDA is available (the device machine).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

from rlhf_lab import get_scale, gpt2, graphs
from rlhf_lab.models import build_policy
from rlhf_lab.rollout import sample
from rlhf_lab.worlds.reviews import ReviewsWorld

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA (run on the device machine)")


def _world():
    return ReviewsWorld(n_topics=3, words_per_class=2, max_new_tokens=5)


def _policy(world, device="cpu"):
    torch.manual_seed(0)
    return build_policy(world, get_scale("ci").replace(n_layer=2, n_head=2, n_embd=32)).eval().to(device)


def _prompts(world, n):
    # prompts of several lengths, each repeated: rows share prefill slots and left padding varies
    return [world.prompts[(7 * i) % len(world.prompts)] for i in range(n)]


def _both(policy, world, prompts, monkeypatch, seed=0):
    """The same seeded draw through the eager decoder and through graphs.Decoder."""
    monkeypatch.setattr(graphs, "enabled", lambda device, rows: False)
    eager = sample(policy, world, prompts, generator=torch.Generator().manual_seed(seed))
    monkeypatch.setattr(graphs, "enabled", lambda device, rows: True)
    graphed = sample(policy, world, prompts, generator=torch.Generator().manual_seed(seed))
    return eager, graphed


def _assert_same(eager, graphed):
    assert torch.equal(graphed.completion_ids, eager.completion_ids)
    assert torch.equal(graphed.completion_mask, eager.completion_mask)
    torch.testing.assert_close(graphed.logp, eager.logp, rtol=1e-5, atol=1e-5)


def test_blocks_with_a_tensor_position_equal_blocks_with_an_int():
    world = _world()
    w = gpt2.weights(_policy(world))
    torch.manual_seed(1)
    ids = torch.randint(0, w.wte.shape[0], (3, 4))
    positions = torch.arange(4).expand(3, 4)
    layers, heads, c = len(w.layers), w.layers[0].heads, w.wte.shape[1]
    cache_a = torch.zeros(layers, 2, 3, heads, 8, c // heads)
    cache_b = cache_a.clone()
    causal = torch.ones(4, 4, dtype=torch.bool).tril()
    with torch.no_grad():
        a = gpt2.blocks(w, ids[:, :3], positions[:, :3], causal[:3, :3], cache_a)
        a_next = gpt2.blocks(w, ids[:, 3:], positions[:, 3:], causal[3:, :4], cache_a, 3)
        gpt2.blocks(w, ids[:, :3], positions[:, :3], causal[:3, :3], cache_b)
        visible = torch.full((1, 1, 1, 8), float("-inf"))
        visible[..., :4] = 0.0  # positions 0-3 written by then, 4-7 hidden
        b_next = gpt2.blocks(w, ids[:, 3:], positions[:, 3:], visible, cache_b, torch.tensor([3]))
    torch.testing.assert_close(b_next, a_next, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(cache_b[..., :4, :], cache_a[..., :4, :])
    assert a.shape == (3, 3, c)


@pytest.mark.parametrize("rows", [1, 5, 64])
def test_graph_decoder_samples_what_the_eager_decoder_samples(rows, monkeypatch):
    world = _world()
    eager, graphed = _both(_policy(world), world, _prompts(world, rows), monkeypatch)
    _assert_same(eager, graphed)
    assert int(eager.completion_mask.sum()) > rows  # completions of more than one token were drawn


def test_graph_decoder_handles_prompts_of_several_lengths(monkeypatch):
    """Left padding differs row by row: the key mask and positions must follow each row's."""
    from rlhf_lab.decoding import _left_pad, sample_ids

    world = _world()
    policy = _policy(world)
    torch.manual_seed(2)
    vocab = policy.config.vocab_size
    distinct = [torch.randint(3, vocab, (n,)).tolist() for n in (1, 2, 4, 7)]
    ids, mask = _left_pad([distinct[i % 4] for i in range(24)], world.pad_id, "cpu")
    bias = torch.zeros(vocab)
    out = {}
    for on in (False, True):
        monkeypatch.setattr(graphs, "enabled", lambda device, rows, on=on: on)
        out[on] = sample_ids(policy, ids, mask, max_new_tokens=6, eos_id=world.eos_id, pad_id=world.pad_id,
                             logit_bias=bias, generator=torch.Generator().manual_seed(0))
    assert torch.equal(out[True][0], out[False][0]) and torch.equal(out[True][1], out[False][1])
    torch.testing.assert_close(out[True][2], out[False][2], rtol=1e-5, atol=1e-5)
    assert int(mask.sum(1).min()) == 1 and int(mask.sum(1).max()) == 7


def test_graph_decoder_follows_in_place_weight_updates(monkeypatch):
    """A recorded step reads the parameters at their addresses: an optimizer's update is seen."""
    world = _world()
    policy = _policy(world)
    prompts = _prompts(world, 16)
    _both(policy, world, prompts, monkeypatch)  # records (on CUDA) or builds the step
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    eager, graphed = _both(policy, world, prompts, monkeypatch, seed=3)
    _assert_same(eager, graphed)


def test_steps_are_kept_per_weights_rows_and_length():
    world = _world()
    w = gpt2.weights(_policy(world))
    graphs._STEPS.clear()
    first = graphs.step(w, 8, 10)
    assert graphs.step(w, 8, 12) is first  # both lengths round up to one multiple of 16
    assert graphs.step(w, 8, 20) is not first
    assert graphs.step(w, 9, 10) is not first
    other = gpt2.weights(_policy(world))  # same values, other tensors: a new step
    assert graphs.step(other, 8, 10) is not first
    with torch.inference_mode():  # its buffers could not be written outside inference mode: another step
        assert graphs.step(w, 8, 10) is not first
    with torch.autocast("cpu", dtype=torch.bfloat16):  # a recording under autocast is another step
        assert graphs.step(w, 8, 10) is not first
    for rows in range(20, 20 + graphs.KEEP):
        graphs.step(w, rows, 10)
    assert len(graphs._STEPS) == graphs.KEEP


def test_a_failed_recording_names_the_switch(monkeypatch):
    world = _world()
    w = gpt2.weights(_policy(world))

    def broken(self):
        raise RuntimeError("operation not permitted when stream is capturing")

    monkeypatch.setattr(graphs.Step, "_record", broken)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())  # no GPU here
    with pytest.raises(RuntimeError, match="RLHF_LAB_CUDA_GRAPHS=0 to decode eagerly"):
        graphs.Step(w, 4, 16, record=True)


def test_enabled_only_on_cuda_up_to_max_rows_and_unless_switched_off(monkeypatch):
    monkeypatch.delenv(graphs.ENV_VAR, raising=False)
    assert not graphs.enabled(torch.device("cpu"), 8)
    assert graphs.enabled(torch.device("cuda"), 8)
    assert not graphs.enabled(torch.device("cuda"), graphs.MAX_ROWS + 1)
    monkeypatch.setenv(graphs.ENV_VAR, "0")
    assert not graphs.enabled(torch.device("cuda"), 8)
    monkeypatch.setenv(graphs.ENV_VAR, "1")
    assert graphs.enabled(torch.device("cuda"), 8)
    monkeypatch.setenv(graphs.ENV_VAR, "off")  # a typo or another spelling is refused, on any device
    with pytest.raises(ValueError, match="RLHF_LAB_CUDA_GRAPHS='off'.*0 decodes eagerly"):
        graphs.enabled(torch.device("cpu"), 8)


@cuda
@pytest.mark.parametrize("rows", [1, 64, 256])
def test_recorded_graph_samples_what_the_eager_decoder_samples_on_cuda(rows, monkeypatch):
    world = _world()
    policy = _policy(world, "cuda")
    graphs._STEPS.clear()
    eager, graphed = _both(policy, world, _prompts(world, rows), monkeypatch)
    assert graphs._STEPS and all(s.graph is not None for s in graphs._STEPS.values())
    _assert_same(eager, graphed)
    # a second call replays the same recording
    again = sample(policy, world, _prompts(world, rows), generator=torch.Generator().manual_seed(0))
    assert len(graphs._STEPS) == 1
    _assert_same(eager, again)


def test_sampling_under_inference_mode_then_without(monkeypatch):
    world = _world()
    policy = _policy(world)
    monkeypatch.setattr(graphs, "enabled", lambda device, rows: True)
    graphs._STEPS.clear()
    with torch.inference_mode():
        first = sample(policy, world, _prompts(world, 8), generator=torch.Generator().manual_seed(0))
    second = sample(policy, world, _prompts(world, 8), generator=torch.Generator().manual_seed(0))
    assert torch.equal(first.completion_ids, second.completion_ids)


@cuda
def test_recorded_graph_sees_an_optimizer_step_on_cuda(monkeypatch):
    world = _world()
    policy = _policy(world, "cuda")
    prompts = _prompts(world, 32)
    graphs._STEPS.clear()
    _both(policy, world, prompts, monkeypatch)
    optimizer = torch.optim.Adam(policy.parameters(), lr=0.05)
    batch = sample(policy, world, prompts, generator=torch.Generator().manual_seed(1))
    from rlhf_lab.rollout import completion_logprobs

    loss = -completion_logprobs(policy, batch, world).sum()
    loss.backward()
    optimizer.step()
    eager, graphed = _both(policy, world, prompts, monkeypatch, seed=2)
    assert len(graphs._STEPS) == 1  # replayed, not recorded again
    _assert_same(eager, graphed)
