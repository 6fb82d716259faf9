"""Science tier: reward-model over-optimisation, exactly (Gao, Schulman & Hilton 2022).

On the reviews world at scale ci: a proxy reward model trained on ``scale.preference_pairs``
noisy gold-labelled preferences between reference samples; the exact KL-regularised optimum
against the proxy, π*_β ∝ π_ref·exp(proxy/β), swept over β. Proxy reward keeps rising as β
falls (d E[proxy]/dβ = −Var/β² exactly), while gold reward rises, peaks at an interior β and
falls as π*_β moves onto completions the gold reward's fluency penalty punishes. Checked for
three independent preference samples and reward-model seeds, not one lucky draw.
"""

import pytest

from rlhf_lab import get_scale
from rlhf_lab.algos.reward_model import train_reward_model
from rlhf_lab.data import preference_dataset
from rlhf_lab.exact import Enumeration, expected
from rlhf_lab.models import RewardModel, pretrain_reference
from rlhf_lab.worlds.reviews import ReviewsWorld

pytestmark = pytest.mark.slow
BETAS = [10.0, 3.0, 1.0, 0.5, 0.3, 0.2, 0.1, 0.05, 0.03, 0.01]
SEEDS = (0, 1, 2)


@pytest.fixture(scope="module")
def sweeps():
    scale = get_scale("ci")
    world = ReviewsWorld.from_scale(scale)
    ref, tok = pretrain_reference(world, scale, progress=False)
    enum = Enumeration(world)
    logp_ref = enum.logprobs(ref)
    texts = [f"{p} {c}" for p in enum.prompts for c in enum.completions]
    fluency = [sum(v for k, v in world.gold_parts(c).items() if k != "sentiment") for c in enum.completions]
    import torch

    penalty = torch.tensor(fluency, dtype=torch.float64).expand(enum.shape)
    out = {}
    for seed in SEEDS:
        pairs = preference_dataset(world, scale.preference_pairs, logp=logp_ref, seed=seed)
        rm = RewardModel.from_policy(ref)
        train_reward_model(rm, tok, pairs, epochs=scale.rm_epochs, progress=False, seed=seed)
        proxy = rm.score_texts(texts, tok).double().view(enum.shape)
        rows = []
        for beta in BETAS:
            logp = enum.optimum(logp_ref, beta, rewards=proxy)
            rows.append({"beta": beta, **enum.metrics(logp, logp_ref, proxy=proxy),
                         "fluency_penalty": float(expected(logp, penalty).mean())})
        out[seed] = rows
    return out


@pytest.mark.parametrize("seed", SEEDS)
def test_proxy_keeps_rising_while_gold_peaks_inside(sweeps, seed):
    rows = sweeps[seed]
    gold = [r["reward/gold"] for r in rows]
    proxy = [r["reward/proxy"] for r in rows]
    kls = [r["kl/exact"] for r in rows]
    for r in rows:
        print(f"seed {seed} β={r['beta']:<5} KL={r['kl/exact']:6.3f} proxy={r['reward/proxy']:+.3f} "
              f"gold={r['reward/gold']:+.3f} fluency penalty={r['fluency_penalty']:.3f}")
    assert all(b >= a - 1e-9 for a, b in zip(kls, kls[1:])), "KL must grow as β falls"
    assert all(b >= a - 1e-9 for a, b in zip(proxy, proxy[1:])), "proxy reward must keep rising as β falls"
    assert proxy[-1] > proxy[0] + 1.0
    peak = max(range(len(gold)), key=gold.__getitem__)
    assert 0 < peak < len(gold) - 1, f"gold peaks at an end of the sweep: {gold}"
    assert gold[peak] > gold[0] + 0.3, "optimising the proxy a little must help gold"
    assert gold[-1] < gold[peak] - 0.5, "optimising the proxy hard must hurt gold"


@pytest.mark.parametrize("seed", SEEDS)
def test_the_gold_loss_comes_from_disfluent_completions(sweeps, seed):
    rows = sweeps[seed]
    peak = max(rows, key=lambda r: r["reward/gold"])
    assert rows[-1]["fluency_penalty"] > peak["fluency_penalty"] + 0.1, (peak, rows[-1])
