"""Practice sets for chapters 01–05. Every answer is a formula evaluated here, and a test
recomputes it independently (tests/test_exercises.py)."""

from __future__ import annotations

import math

from rlhf_lab.exercises.questions import choice, curves, numeric


def _sigmoid(x: float) -> float:
    return 1.0 / (1.0 + math.exp(-x))


def _log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


_BT_LOSS = (-_log_sigmoid(1.0) - _log_sigmoid(-0.5)) / 2

SETS = {
    "01": ("Preferences and Bradley–Terry", (
        numeric("q1", "Under Bradley–Terry (eq-bt), answer i has score s_i = 1.0 and answer j "
                "has s_j = −0.5. What is P(i ≻ j)?", _sigmoid(1.5), 1e-3,
                "P(i ≻ j) = σ(s_i − s_j) = 1 / (1 + exp(−(s_i − s_j))).",
                "σ(1.0 − (−0.5)) = σ(1.5) = 1 / (1 + e^(−1.5)) ≈ 0.8176.",
                traps=((_sigmoid(0.5), "use the difference s_i − s_j, not the sum."),)),
        choice("q2", "Which change to the scores leaves every probability P(i ≻ j) unchanged?",
               ("multiply every score by 2", "add 3 to every score",
                "add 3 to the best answer's score only", "replace each score s by exp(s)"), "b",
               "eq-bt depends on the scores only through differences s_i − s_j.",
               "Adding the same constant to every score leaves every difference, and so every "
               "σ(s_i − s_j), unchanged; the other changes alter some differences. This is why "
               "a reward model learns rewards only up to a constant."),
        numeric("q3", "Two answers with scores s = (0, 1). In three comparisons of answer 1 "
                "against answer 0, answer 1 wins twice and loses once. What is the mean "
                "log-likelihood ℓ(s) of eq-bt-loglik?",
                (2 * _log_sigmoid(1.0) + _log_sigmoid(-1.0)) / 3, 1e-3,
                "each win contributes log σ(s_1 − s_0), the loss log σ(s_0 − s_1); average the "
                "three (natural logs).",
                "ℓ = [2 log σ(1) + log σ(−1)] / 3 = [2(−0.3133) + (−1.3133)] / 3 ≈ −0.6466.",
                traps=((2 * _log_sigmoid(1.0) + _log_sigmoid(-1.0),
                        "that is the sum; eq-bt-loglik takes the mean over the n comparisons."),)),
        numeric("q4", "Two answers A and B. In n = 40 comparisons A wins 30 times. Which score "
                "difference s_A − s_B maximises the likelihood (no penalty)?", math.log(3.0),
                0.01, "at the maximum, σ(s_A − s_B) equals A's observed win rate.",
                "Set σ(d) = 30/40 = 0.75, so d = log(0.75 / 0.25) = log 3 ≈ 1.0986.",
                traps=((0.75, "0.75 is the win rate σ(d); the question asks for d itself."),)),
        choice("q5", "Three answers with P(A ≻ C) = P(C ≻ B) = P(B ≻ A) = 0.8. Which statement "
               "is true?",
               ("A is the Condorcet winner",
                "there is no Condorcet winner, and no score vector reproduces these "
                "probabilities",
                "Bradley–Terry with scores s_A > s_C > s_B fits them exactly",
                "Borda names a single winner"), "b",
               "follow the cycle A ≻ C ≻ B ≻ A: can scores satisfy s_A > s_C > s_B > s_A?",
               "Each answer beats one and loses to one, so none beats all (no Condorcet "
               "winner), every Borda score is (0.8 + 0.2)/2 = 0.5 (a three-way tie), and "
               "s_A > s_C > s_B > s_A is impossible, so no Bradley–Terry scores fit."),
        numeric("q6", "A maximum-likelihood fit's error shrinks like 1/√n. If 400 comparisons "
                "give a mean largest score error of 0.2, how many comparisons does that law "
                "predict for an error of 0.1?", 400 * (0.2 / 0.1) ** 2, 0,
                "error ∝ 1/√n: halving the error multiplies n by 2² = 4.",
                "0.1 / 0.2 = √(400 / n), so n = 400 · (0.2 / 0.1)² = 1600.",
                traps=((800, "the error scales with 1/√n, not 1/n: halving it needs 4× the "
                        "data."),)),
    )),
    "02": ("Policy gradient: REINFORCE and baselines", (
        numeric("q1", "A softmax bandit has π_θ = (0.5, 0.3, 0.2) and rewards r = (1, 0, 2). "
                "What is ∂J/∂θ_3, the gradient of the expected reward with respect to the "
                "third logit (eq-bandit-gradient)?", 0.2 * (2 - (0.5 * 1 + 0.2 * 2)), 1e-3,
                "∇J = π ⊙ (r − J): first compute J = Σ π r.",
                "J = 0.5·1 + 0.3·0 + 0.2·2 = 0.9, so ∂J/∂θ_3 = 0.2 · (2 − 0.9) = 0.22.",
                traps=((0.4, "you forgot to subtract J: ∇J = π ⊙ (r − J)."),)),
        numeric("q2", "REINFORCE loss (eq-reinforce) of a batch of two: log π(y) = (−1, −2), "
                "rewards R = (1, 0), baseline b = 0.5. What is L?",
                -((1 - 0.5) * -1 + (0 - 0.5) * -2) / 2, 1e-3,
                "L = −(1/B) Σ (R_i − b) log π(y_i).",
                "(R − b) = (0.5, −0.5); (R − b)·log π = (−0.5, 1.0); mean 0.25; L = −0.25.",
                traps=((0.25, "mind the leading minus sign of eq-reinforce."),)),
        numeric("q3", "With B = 8 samples per batch, the batch-mean baseline scales the "
                "expected REINFORCE gradient by a constant factor. Which factor?", 1 - 1 / 8,
                1e-3, "the batch mean contains each sample's own reward (eq-batch-mean-shrink).",
                "R_i − R̄ = (B − 1)/B · (R_i − R̄_{−i}), and the leave-one-out estimate is "
                "unbiased, so the expected gradient is (1 − 1/B)·∇J = 0.875·∇J.",
                traps=((1.0, "the batch mean is not a constant: it contains R_i itself."),
                       ((1 - 1 / 8) ** 2, "(1 − 1/B)² scales the variance, not the mean."))),
        choice("q4", "You add c = 10 to every reward and use no baseline. What happens to the "
               "REINFORCE gradient estimate?",
               ("its mean and its variance both change",
                "its mean stays the same, its variance grows",
                "its mean changes, its variance stays the same", "neither changes"), "b",
               "E[c ∇log π] = c ∇Σπ = 0; but each single sample now carries c ∇log π(y).",
               "The offset adds c·∇log π(y) to each sample's estimate: zero in expectation "
               "(eq-baseline), so the mean is unchanged, but not zero sample by sample, so the "
               "variance grows (roughly like c²)."),
        numeric("q5", "Batch rewards R = (2, 0, 1, 3). What is the leave-one-out advantage "
                "R_1 − R̄_{−1} of the first sample (the mean of the other three as baseline)?",
                2 - (0 + 1 + 3) / 3, 1e-3, "leave R_1 out of the mean: R̄_{−1} = (0 + 1 + 3)/3.",
                "R̄_{−1} = 4/3, so R_1 − R̄_{−1} = 2 − 4/3 ≈ 0.6667. The batch-mean version is "
                "2 − 1.5 = 0.5 = (3/4)·0.6667, the (B − 1)/B of eq-batch-mean-shrink.",
                traps=((0.5, "that is R_1 − R̄ with the full batch mean; leave R_1 out."),)),
    )),
    "03": ("Actor–critic: values, TD and GAE", (
        numeric("q1", "A 3-token episode has rewards (0, 0, 1) and critic values "
                "V̂(s_0), V̂(s_1), V̂(s_2) = (0.2, 0.5, 0.6); γ = 1 and the value after the last "
                "token is 0. What is the TD residual δ_2 of the last token (eq-td)?",
                1 + 0 - 0.6, 1e-3, "δ_t = r_t + γ V̂(s_{t+1}) − V̂(s_t), with V̂ = 0 after the end.",
                "δ_2 = 1 + 1·0 − 0.6 = 0.4."),
        numeric("q2", "Same episode, λ = 0.5: what is the GAE advantage Â_0 (eq-gae)?",
                0.3 + 0.5 * (0.1 + 0.5 * 0.4), 1e-3,
                "compute δ = (δ_0, δ_1, δ_2), then go backwards: Â_t = δ_t + γλ Â_{t+1}.",
                "δ = (0.5 − 0.2, 0.6 − 0.5, 1 − 0.6) = (0.3, 0.1, 0.4); Â_2 = 0.4, "
                "Â_1 = 0.1 + 0.5·0.4 = 0.3, Â_0 = 0.3 + 0.5·0.3 = 0.45.",
                traps=((0.8, "that is λ = 1 (the Monte Carlo advantage)."),
                       (0.3, "that is δ_0 alone (λ = 0)."))),
        numeric("q3", "Same episode, λ = 1: what is Â_0?", (0 + 0 + 1) - 0.2, 1e-3,
                "at λ = 1 the sum of TD residuals telescopes.",
                "Â_0 = δ_0 + δ_1 + δ_2 = 0.3 + 0.1 + 0.4 = 0.8 = (0 + 0 + 1) − V̂(s_0)."),
        curves("q4", "The chapter's figure plots two curves against λ ∈ [0, 1], measured with "
               "an imperfect critic. Curve A is 0 at λ = 0 and rises; curve B starts high and "
               "falls to 0 at λ = 1. Which curve is the bias of Â^λ and which its std?",
               ("A", "B"), ("bias", "std"), ("std", "bias"),
               "at λ = 0 the advantage reads the critic instead of sampling the future; at "
               "λ = 1 it trusts the critic for nothing but a baseline.",
               "A is the std: at λ = 0, Â = δ_t is fixed given (s_t, a_t), so it has no noise. "
               "B is the bias: at λ = 1 only sampled rewards remain, so the critic's error "
               "cannot bias it."),
        choice("q5", "Which statement about a value function V^π(s_t) and a reward model "
               "r(x, y) is true?",
               ("both score finished completions only",
                "V^π depends on the policy; the reward model does not",
                "the reward model depends on the policy; V^π does not",
                "they are the same function at every prefix"), "b",
               "V^π(s_t) is an expectation over the completions π would write from s_t.",
               "V^π(s_t) = E_{y∼π}[r(x, y) | x, y_<t] averages the reward over π's "
               "continuations, so it changes with π; r scores finished texts, whoever wrote "
               "them."),
        numeric("q6", "A2C loss (eq-a2c-loss) of two completions padded to 3 tokens: row 1 has "
                "3 valid tokens with log π = (−1, −2, −0.5) and Â = (1, 0.5, −2); row 2 has 1 "
                "valid token with log π = −1 and Â = 2. What is L?",
                -((1 * -1) + (0.5 * -2) + (-2 * -0.5) + (2 * -1)) / 4, 1e-3,
                "mean_t runs over the 4 valid tokens of the batch, not over all 6 entries.",
                "Â·log π over the valid tokens: −1, −1, 1, −2; their mean is −0.75; L = 0.75.",
                traps=((0.5, "you divided by all 6 entries; padding is excluded: divide by 4."),
                       (-0.75, "mind the minus sign of eq-a2c-loss."))),
    )),
    "04": ("PPO", (
        numeric("q1", "PPO's clipped objective (eq-ppo-clip) for one token: ε = 0.2, Â = +2, "
                "ρ = 1.5. What is L^CLIP?", min(1.5 * 2, 1.2 * 2), 1e-3,
                "L^CLIP = min(ρ Â, clip(ρ, 1 − ε, 1 + ε) Â).",
                "ρÂ = 3.0 and clip(1.5, 0.8, 1.2)·2 = 2.4; the min is 2.4.",
                traps=((3.0, "that is the unclipped ρÂ; take the min with the clipped term."),)),
        numeric("q2", "ε = 0.2, Â = −1, ρ = 0.5: what is L^CLIP?", min(0.5 * -1, 0.8 * -1), 1e-3,
                "with Â < 0 the clip binds at ρ = 1 − ε.",
                "ρÂ = −0.5 and clip(0.5, 0.8, 1.2)·(−1) = −0.8; the min is −0.8.",
                traps=((-0.5, "that is ρÂ, the larger of the two; L^CLIP takes the min."),)),
        choice("q3", "With Â < 0, for which ratios is the gradient of L^CLIP with respect to ρ "
               "zero?", ("ρ > 1 + ε", "ρ < 1 − ε", "|ρ − 1| > ε", "never"), "b",
               "find where min(ρÂ, clip(ρ)Â) picks the clipped, constant term.",
               "For Â < 0, clip(ρ)Â < ρÂ exactly when ρ < 1 − ε; there the objective is the "
               "constant (1 − ε)Â and its gradient is 0. For ρ > 1 + ε the unclipped ρÂ is "
               "the smaller term and keeps its slope Â."),
        curves("q4", "In the chapter's ε-scan (ε = 0.2), curve P equals ρ up to ρ = 1.2 and is "
               "flat beyond; curve Q is flat at −0.8 up to ρ = 0.8 and equals −ρ beyond. Which "
               "curve has A = +1 (label \"positive\") and which A = −1 (\"negative\")?",
               ("P", "Q"), ("positive", "negative"), ("positive", "negative"),
               "evaluate min(ρA, clip(ρ)A) at ρ = 2 and at ρ = 0.5 for each sign of A.",
               "A = +1 gives min(ρ, clip(ρ)): ρ below 1.2, flat at 1.2 above — curve P. "
               "A = −1 gives −max(ρ, clip(ρ)): −0.8 below ρ = 0.8, −ρ above — curve Q."),
        numeric("q5", "A sample from π has log π(y) = −1.0 and log π_ref(y) = −1.5. What is its "
                "k3 estimate (eq-kl-estimators), with ρ = π_ref(y)/π(y) (not PPO's ratio)?",
                math.exp(-0.5) - 1 + 0.5, 1e-3,
                "ρ = π_ref/π, so log ρ = −1.5 − (−1.0) = −0.5; k3 = ρ − 1 − log ρ.",
                "ρ = e^(−0.5) ≈ 0.6065, k3 = 0.6065 − 1 + 0.5 ≈ 0.1065.",
                traps=((0.5, "that is k1 = −log ρ."),
                       (math.exp(0.5) - 1 - 0.5, "the ratio is reversed: ρ = π_ref/π."))),
        choice("q6", "Samples come from π. Which estimators of KL(π‖π_ref) are unbiased?",
               ("k1 only", "k1 and k3", "k2 and k3", "all three"), "b",
               "E_π[ρ − 1] = Σ π·(π_ref/π) − 1 = 0.",
               "E_π[k1] = E_π[log π/π_ref] = KL by definition; k3 adds ρ − 1, whose mean under "
               "π is 0; k2 = ½(log ρ)² matches the KL only to second order."),
    )),
    "05": ("Reward models", (
        numeric("q1", "Labels are drawn with noise τ = 0.2. A pair's gold rewards differ by "
                "Δ = 0.2. With what probability does the best possible predictor agree with "
                "the pair's label?", _sigmoid(1.0), 1e-3,
                "the best predictor picks the gold-better completion; the label agrees with "
                "probability max(σ(Δ/τ), 1 − σ(Δ/τ)).",
                "σ(0.2 / 0.2) = σ(1) ≈ 0.7311.",
                traps=((_sigmoid(0.2), "divide the gap by τ: σ(Δ/τ)."),)),
        numeric("q2", "Three held-out pairs have gold gaps Δ = 0, 0.2 and 0.6, and τ = 0.2. "
                "What is the label ceiling (eq-label-ceiling)?",
                (0.5 + _sigmoid(1.0) + _sigmoid(3.0)) / 3, 1e-3,
                "average max(σ(Δ/τ), 1 − σ(Δ/τ)) over the pairs; a tie is a coin flip.",
                "(σ(0) + σ(1) + σ(3)) / 3 = (0.5 + 0.7311 + 0.9526) / 3 ≈ 0.7279."),
        numeric("q3", "Bradley–Terry loss (eq-rm-loss) of two pairs with r_chosen = (1.0, 0.0) "
                "and r_rejected = (0.0, 0.5)?", _BT_LOSS, 1e-3,
                "the mean over pairs of −log σ(r_chosen − r_rejected).",
                "−log σ(1) = 0.3133 and −log σ(−0.5) = 0.9741; their mean is ≈ 0.6437.",
                traps=((2 * _BT_LOSS, "that is the sum; the loss is the mean over pairs."),)),
        choice("q4", "On 50 pairs whose label ceiling is 0.80, a reward model reaches training "
               "accuracy 0.95 and held-out accuracy 0.70. What does the training accuracy "
               "above the ceiling tell you?",
               ("the model is better than the best possible predictor",
                "it has memorised some flipped labels: it overfits",
                "the labels are noiseless", "it needs more epochs"), "b",
               "the ceiling is the expected accuracy of the best predictor of noisy labels.",
               "No predictor can expect to agree with more labels than the Bayes predictor, so "
               "agreeing with 95 % means it learned some coin flips by heart; they do not "
               "transfer, and held-out accuracy stalls."),
        numeric("q5", "You add 5 to the reward of every completion. By how much does the "
                "Bradley–Terry loss (eq-rm-loss) change?", 0.0, 1e-6,
                "the loss sees only differences r(y_w) − r(y_l).",
                "Every difference is unchanged, so the loss is unchanged: the change is 0. This "
                "is why the reward model's offset is arbitrary and gets normalised."),
        numeric("q6", "A reward model scores reference samples with mean 2.0 and standard "
                "deviation 0.5. After normalising it to mean 0 and standard deviation 1 on "
                "those samples, what does a completion that scored 3.0 score?",
                (3.0 - 2.0) / 0.5, 1e-3, "subtract the mean, then divide by the std.",
                "(3.0 − 2.0) / 0.5 = 2.0.",
                traps=((0.5, "divide by the std (0.5), don't multiply."),)),
    )),
}
