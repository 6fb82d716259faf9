import math

import pytest
import torch

from rlhf_lab.worlds import bandit as bt


def test_bt_matrix_hand_computed():
    p = bt.bt_matrix(torch.tensor([0.0, math.log(3.0)]))
    # σ(−log 3) = 1/(1+3) = 0.25
    assert torch.allclose(p, torch.tensor([[0.5, 0.25], [0.75, 0.5]], dtype=torch.float64))


def test_fit_recovers_scores_up_to_a_constant():
    world = bt.Bandit.random(5, seed=3)
    i, j, y = bt.sample_comparisons(world.preference_matrix(), 20000, seed=0)
    fitted = bt.fit_bradley_terry(i, j, y, 5)
    assert abs(float(fitted.mean())) < 1e-9
    assert bt.score_error(fitted, world.rewards) < 0.1
    assert bt.score_error(fitted, world.rewards + 7.0) == pytest.approx(bt.score_error(fitted, world.rewards))


def test_mle_beats_the_truth_on_its_own_sample():
    world = bt.Bandit.random(4, seed=1)
    i, j, y = bt.sample_comparisons(world.preference_matrix(), 500, seed=2)
    fitted = bt.fit_bradley_terry(i, j, y, 4, l2=0.0)
    assert bt.bt_log_likelihood(fitted, i, j, y) >= bt.bt_log_likelihood(world.rewards, i, j, y)


def test_comparisons_are_unbiased_pairs():
    p = bt.bt_matrix(torch.tensor([0.0, 1.0, 2.0]))
    i, j, y = bt.sample_comparisons(p, 30000, seed=0)
    assert bool((i != j).all())
    sel = (i == 2) & (j == 0)
    assert float(y[sel].mean()) == pytest.approx(float(p[2, 0]), abs=0.02)


def test_winners_agree_under_bt_and_part_on_a_cycle():
    p = bt.bt_matrix(torch.tensor([0.3, 2.0, -1.0, 0.0]))
    assert bt.condorcet_winner(p) == bt.copeland_winner(p) == bt.borda_winner(p) == 1
    q = bt.intransitive_matrix()
    assert bt.condorcet_winner(q) is None
    assert (bt.copeland_winner(q), bt.borda_winner(q)) == (1, 0)
    assert (0, 2, 1) in bt.cycles(q)  # A ≻ C ≻ B ≻ A
    assert bt.cycles(p) == []


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="k must be ≥ 2"):
        bt.Bandit.random(1)
    with pytest.raises(ValueError, match="n .*must be ≥ 1"):
        bt.sample_comparisons(bt.intransitive_matrix(), 0)
    with pytest.raises(ValueError, match="square"):
        bt.condorcet_winner(torch.ones(2, 3))
    with pytest.raises(ValueError, match=r"P\[i, j\] \+ P\[j, i\] = 1"):
        bt.borda_scores(torch.ones(3, 3))
    with pytest.raises(ValueError, match="ref_logits has shape"):
        bt.Bandit(rewards=torch.zeros(3), ref_logits=torch.zeros(4))
