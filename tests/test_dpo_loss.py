"""dpo_loss / dpo_metrics against TRL 1.16's own DPOTrainer code.

TRL 1.16 has no standalone loss function: the loss is inlined in
``DPOTrainer._compute_loss(self, model, inputs, return_outputs)``. We call that unbound
method with a stand-in ``self`` (only the attributes it reads) and a stub model whose
output ``log_probs`` holds the per-token log-probs we choose. With precomputed reference
log-probs in ``inputs`` it never touches a real model, so this runs TRL's real loss code.
It returns only the batch-mean loss and logs batch-mean metrics, so per-example values
come from batch-size-1 calls.
"""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from sparta_jax.dpo_loss import dpo_loss, dpo_metrics
from trl_loss import StubModel, random_logps, trl_dpo, trl_self

DPOTrainer = pytest.importorskip("trl").DPOTrainer

TOL = dict(rtol=1e-6, atol=1e-6)


CASES = [("sigmoid", 0.0), ("sigmoid", 0.1), ("ipo", 0.0), ("hinge", 0.0)]
BETAS = [0.1, 0.5]


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.parametrize("loss_type,label_smoothing", CASES)
@pytest.mark.reference
def test_matches_trl_per_example(loss_type, label_smoothing, beta):
    b = 8
    pc, pr, rc, rr = random_logps(seed=CASES.index((loss_type, label_smoothing)) * 10 + BETAS.index(beta), b=b)
    # TRL 1.16's "sigmoid" ignores label_smoothing (see test_trl_sigmoid_ignores_label_smoothing).
    # Its only cDPO-form code in DPOTrainer is "aot": at batch size 1 its sort is the
    # identity and it is -(1-ε)·logσ(βΔ) - ε·logσ(-βΔ), with Δ grouped as
    # (πc - πr) - (rc - rr); exact on our grid.
    trl_loss_type = "aot" if label_smoothing else loss_type
    # IPO: TRL divides summed log-ratios by the completion length, so give it T tokens
    # and give dpo_loss the per-token averages (the documented caller contract).
    t = 4 if loss_type == "ipo" else 1
    def f32(x):
        return np.asarray(x, np.float32)

    ours_in = [f32(x / t) for x in (pc, pr, rc, rr)]
    losses, cr, rj = dpo_loss(*map(jnp.asarray, ours_in), beta=beta, loss_type=loss_type,
                              label_smoothing=label_smoothing)
    for i in range(b):
        # Each of the T tokens carries logp/T (the same float32 value dpo_loss gets),
        # so TRL's sum over tokens divided by T recovers dpo_loss's input.
        tok = torch.tensor(np.stack([np.full(t, ours_in[0][i]), np.full(t, ours_in[1][i])]))
        ref_c = torch.tensor(ours_in[2][i : i + 1] * np.float32(t))
        ref_r = torch.tensor(ours_in[3][i : i + 1] * np.float32(t))
        loss, m = trl_dpo(tok, ref_c, ref_r, beta, trl_loss_type, label_smoothing)
        np.testing.assert_allclose(float(losses[i]), loss.item(), **TOL)
        # TRL's rewards come from summed log-probs; ours from what we were given.
        np.testing.assert_allclose(float(cr[i]) * t, m["rewards/chosen"], rtol=1e-6, atol=1e-5)
        np.testing.assert_allclose(float(rj[i]) * t, m["rewards/rejected"], rtol=1e-6, atol=1e-5)


@pytest.mark.reference
def test_trl_sigmoid_ignores_label_smoothing():
    """Documents why label-smoothed sigmoid is checked against TRL's "aot" above."""
    pc, pr, rc, rr = (np.asarray(x, np.float32) for x in random_logps(seed=5, b=8))
    tok = torch.tensor(np.concatenate([pc, pr])[:, None])
    smoothed, _ = trl_dpo(tok, torch.tensor(rc), torch.tensor(rr), 0.1, "sigmoid", label_smoothing=0.1)
    plain, _ = trl_dpo(tok, torch.tensor(rc), torch.tensor(rr), 0.1, "sigmoid", label_smoothing=0.0)
    assert smoothed.item() == plain.item()


def test_cdpo_formula():
    """Label-smoothed sigmoid = conservative DPO, checked in float64 against the closed form."""
    pc, pr, rc, rr = random_logps(seed=3, b=16)
    beta, eps = 0.2, 0.1
    losses, _, _ = dpo_loss(*map(jnp.asarray, (pc, pr, rc, rr)), beta=beta, label_smoothing=eps)
    z = torch.tensor(beta * ((pc - rc) - (pr - rr)))
    ref = -(1 - eps) * torch.nn.functional.logsigmoid(z) - eps * torch.nn.functional.logsigmoid(-z)
    np.testing.assert_allclose(np.asarray(losses), ref.numpy(), **TOL)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo", "hinge"])
@pytest.mark.reference
def test_metrics_match_trl(loss_type):
    b, beta = 16, 0.1
    pc, pr, rc, rr = (np.asarray(x, np.float32) for x in random_logps(seed=7, b=b))
    losses, cr, rj = jax.jit(dpo_loss, static_argnames="loss_type")(pc, pr, rc, rr, beta=beta, loss_type=loss_type)
    ours = dpo_metrics(losses, cr, rj, pc, pr)
    tok = torch.tensor(np.concatenate([pc, pr])[:, None])  # one token per completion
    loss, theirs = trl_dpo(tok, torch.tensor(rc), torch.tensor(rr), beta, loss_type)
    np.testing.assert_allclose(float(ours["loss"]), loss.item(), **TOL)
    for name in ["rewards/chosen", "rewards/rejected", "rewards/margins", "rewards/accuracies",
                 "logps/chosen", "logps/rejected"]:
        np.testing.assert_allclose(float(ours[name]), theirs[name], rtol=1e-6, atol=1e-5, err_msg=name)
    assert 0.0 < float(ours["rewards/accuracies"]) < 1.0  # the data exercise both outcomes


def test_policy_equals_reference():
    rng = np.random.default_rng(0)
    c, r = (jnp.asarray(-rng.uniform(5, 60, 10), jnp.float32) for _ in range(2))
    losses, cr, rj = dpo_loss(c, r, c, r, beta=0.1)
    np.testing.assert_allclose(np.asarray(losses), math.log(2), rtol=0, atol=1e-7)
    assert not np.any(np.asarray(cr)) and not np.any(np.asarray(rj))
    m = dpo_metrics(losses, cr, rj, c, r)
    assert float(m["rewards/accuracies"]) == 0.0  # ties are not counted as correct
    assert float(m["rewards/margins"]) == 0.0


@pytest.mark.parametrize("beta", BETAS)
@pytest.mark.reference
def test_grad_matches_trl_autograd(beta):
    b = 8
    pc, pr, rc, rr = (np.asarray(x, np.float32) for x in random_logps(seed=11, b=b))

    def mean_loss(pc, pr):
        return jnp.mean(dpo_loss(pc, pr, rc, rr, beta=beta)[0])

    g_c, g_r = jax.grad(mean_loss, argnums=(0, 1))(jnp.asarray(pc), jnp.asarray(pr))

    tok = torch.tensor(np.concatenate([pc, pr])[:, None], requires_grad=True)
    loss, _ = trl_dpo(tok, torch.tensor(rc), torch.tensor(rr), beta, "sigmoid")
    loss.backward()
    g = tok.grad[:, 0].numpy()
    np.testing.assert_allclose(np.asarray(g_c), g[:b], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np.asarray(g_r), g[b:], rtol=1e-6, atol=1e-7)


def test_rewards_carry_no_gradient():
    def total_reward(pc):
        _, cr, rj = dpo_loss(pc, pc, jnp.zeros(3), jnp.zeros(3))
        return jnp.sum(cr + rj)

    assert not np.any(np.asarray(jax.grad(total_reward)(jnp.ones(3))))


def test_unknown_loss_type():
    x = jnp.zeros(2)
    with pytest.raises(ValueError, match="Unknown loss_type"):
        dpo_loss(x, x, x, x, loss_type="dpo")


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0])
@pytest.mark.reference
def test_chosen_nll_term_matches_trl_sigmoid_plus_sft(alpha):
    """dpo.sft_weight = α is TRL's loss_type=["sigmoid", "sft"], loss_weights=[1, α] (RPO): the DPO
    mean plus α times the mean NLL over every chosen token of the batch (not a mean of per-pair
    means: the pairs below have 6, 3, 5 and 1 chosen tokens). A filler pair (no tokens, invalid)
    on our side must change nothing."""
    from sparta_jax import dpo

    b, t, beta = 4, 6, 0.1
    rng = np.random.default_rng(11)
    chosen_len, rejected_len = np.array([6, 3, 5, 1]), np.array([2, 6, 4, 3])
    lengths = np.concatenate([chosen_len, rejected_len])
    token = np.round(-rng.uniform(0.05, 4.0, size=(2 * b, t)) * 1024) / 1024
    token[np.arange(t)[None, :] >= lengths[:, None]] = 0.0  # what TRL's model gives at label -100
    token = token.astype(np.float32)
    ref = np.round((token.sum(1) + rng.normal(0, 2.0, 2 * b)) * 1024) / 1024
    ref = ref.astype(np.float32)

    self = trl_self(beta, "sigmoid", 0.0)
    self.loss_types, self.loss_weights = ["sigmoid", "sft"], [1.0, alpha]
    completion_mask = torch.zeros(2 * b, t + 1, dtype=torch.long)
    for row, n in enumerate(lengths):
        completion_mask[row, 1:1 + n] = 1
    inputs = {"input_ids": torch.zeros(2 * b, t + 1, dtype=torch.long),
              "attention_mask": torch.ones(2 * b, t + 1, dtype=torch.long), "completion_mask": completion_mask,
              "ref_chosen_logps": torch.tensor(ref[:b]), "ref_rejected_logps": torch.tensor(ref[b:])}
    want = DPOTrainer._compute_loss(self, StubModel(torch.tensor(token)), inputs, return_outputs=False).item()

    seq = token.sum(1)
    policy = np.stack([np.append(seq[:b], 0.0), np.append(seq[b:], 0.0)], -1)[None]  # [1 member, b + 1, 2]
    reference = np.stack([np.append(ref[:b], 0.0), np.append(ref[b:], 0.0)], -1)[None]
    valid = jnp.asarray([True] * b + [False])
    tokens = jnp.asarray(np.append(chosen_len, 0), jnp.float32)
    cfg = dpo.DPOConfig(beta=beta, sft_weight=alpha)
    got, metrics = dpo.tribe_loss(jnp.asarray(policy), jnp.asarray(reference), cfg, valid, None, tokens)
    np.testing.assert_allclose(float(got), want, rtol=1e-6)
    nll = -token[:b][token[:b] != 0].mean()  # every chosen token here is non-zero
    np.testing.assert_allclose(float(metrics["nll/chosen"][0]), nll, rtol=1e-6)
    assert abs(nll - float(np.mean(-seq[:b] / chosen_len))) > 0.05  # the per-pair mean would differ


def test_chosen_nll_term_needs_token_counts():
    from sparta_jax import dpo

    x = jnp.zeros((1, 2, 2))
    with pytest.raises(ValueError, match="chosen_token_counts"):
        dpo.tribe_loss(x, x, dpo.DPOConfig(sft_weight=1.0))
