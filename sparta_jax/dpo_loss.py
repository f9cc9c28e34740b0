"""DPO loss and logging metrics in pure JAX, matching TRL 1.16's ``DPOTrainer``.

The inputs are per-example sequence log-probabilities (shape ``[B]``), already
reduced over the completion tokens by the caller. Everything here is elementwise
plus means, so it jit-compiles and works unchanged on sharded batches.

TRL 1.16 reference: ``trl/trainer/dpo_trainer.py``, ``DPOTrainer._compute_loss``
(loss branches at lines 1386-1404, ``aot`` at 1447, rewards and metrics at 1581-1601),
with ``f_divergence_type="reverse_kl"``, ``ld_alpha=None``, ``use_weighting=False``
and a single loss type. With ``Δ = (πc - rc) - (πr - rr)``:

* ``sigmoid``: ``-logσ(βΔ)``. TRL 1.16 ignores ``label_smoothing`` for this loss;
  here a non-zero ``label_smoothing=ε`` gives conservative DPO (cDPO),
  ``-(1-ε)·logσ(βΔ) - ε·logσ(-βΔ)``, the form older TRL DPO and TRL's CPO/TPO use
  (and TRL 1.16's ``aot`` loss, which reduces to it for a batch of one).
  With ``ε = 0`` (the default) it is exactly TRL 1.16's sigmoid loss.
* ``hinge``: ``relu(1 - βΔ)``.
* ``ipo``: ``(Δ - 1/(2β))²``, where TRL builds Δ from log-probs *averaged over the
  completion tokens* (it divides each summed log-ratio by its completion length).
  This function does not see lengths, so for IPO the caller must pass per-token
  averaged log-probs (policy and reference alike); the rewards then are averaged
  rewards too, whereas TRL logs rewards from the summed log-probs.

* ``sppo`` (SPPO, Wu et al. 2024, Eq. 4.7 as a loss): with per-pair win probabilities
  ``Pc, Pr`` (each response's estimated probability of beating the current policy),
  ``((πc - rc - (Pc - ½)/β)² + (πr - rr - (Pr - ½)/β)²) / 2``, the mean of the two terms as
  SPPO's own trainer takes it; β is SPPO's 1/η. With the hard probabilities ``Pc = 1, Pr = 0``
  (the default) it is half of TRL 1.16's ``sppo_hard``, which sums them (under AdamW the factor
  acts only through gradient clipping and Adam's epsilon).

``label_smoothing`` is ignored by ``hinge``, ``ipo`` and ``sppo``, as in TRL.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

LOSS_TYPES = ("sigmoid", "ipo", "hinge", "sppo")


def dpo_loss(
    policy_chosen_logps,
    policy_rejected_logps,
    ref_chosen_logps,
    ref_rejected_logps,
    beta=0.1,
    loss_type: str = "sigmoid",
    label_smoothing=0.0,
    chosen_targets=None,
    rejected_targets=None,
):
    """Per-example DPO loss and implicit rewards.

    Args:
      policy_chosen_logps, policy_rejected_logps: ``[B]`` log-probs of the chosen /
        rejected completions under the policy (summed over tokens; per-token
        averaged for ``ipo``).
      ref_chosen_logps, ref_rejected_logps: the same under the frozen reference.
      beta: KL strength β (for ``ipo`` the regulariser τ).
      loss_type: ``"sigmoid"``, ``"ipo"`` or ``"hinge"``; must be static under jit.
      label_smoothing: cDPO label-flip probability ε, used by ``sigmoid`` only.
      chosen_targets, rejected_targets: ``[B]`` win probabilities for ``sppo`` (default 1 and
        0, the hard version); ignored by the other losses.

    Returns:
      ``(losses, chosen_rewards, rejected_rewards)``, each ``[B]``. Rewards are
      ``β·(policy - ref)`` with gradients stopped (they are for logging only).
    """
    if loss_type not in LOSS_TYPES:
        raise ValueError(f"Unknown loss_type {loss_type!r}; expected one of {LOSS_TYPES}.")

    # Half precision would make the log-ratios (differences of large sums) meaningless,
    # so compute in at least float32.
    dtype = jnp.result_type(
        policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps, jnp.float32
    )
    pc, pr, rc, rr = (
        jnp.asarray(x, dtype)
        for x in (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    )

    # Same operation order as TRL (log-ratios first, then their difference), so
    # float32 results agree with TRL bit for bit up to the transcendental functions.
    chosen_logratios = pc - rc
    rejected_logratios = pr - rr
    delta = chosen_logratios - rejected_logratios

    if loss_type == "sigmoid":
        losses = -jax.nn.log_sigmoid(beta * delta)
        # Skip the smoothing arithmetic when ε is a literal 0: it keeps the result
        # identical to TRL's and avoids 0·inf = nan if Δ is ever infinite.
        if not (isinstance(label_smoothing, (int, float)) and label_smoothing == 0):
            losses = (1 - label_smoothing) * losses - label_smoothing * jax.nn.log_sigmoid(-beta * delta)
    elif loss_type == "hinge":
        losses = jax.nn.relu(1 - beta * delta)
    elif loss_type == "ipo":  # IPO paper Eq. 17; inputs are per-token averages (see module docstring)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:  # sppo: each log-ratio regressed onto (P(win) - 1/2) / beta
        pc_win = 1.0 if chosen_targets is None else jnp.asarray(chosen_targets, dtype)
        pr_win = 0.0 if rejected_targets is None else jnp.asarray(rejected_targets, dtype)
        losses = ((chosen_logratios - (pc_win - 0.5) / beta) ** 2
                  + (rejected_logratios - (pr_win - 0.5) / beta) ** 2) / 2

    chosen_rewards = jax.lax.stop_gradient(beta * chosen_logratios)
    rejected_rewards = jax.lax.stop_gradient(beta * rejected_logratios)
    return losses, chosen_rewards, rejected_rewards


def dpo_metrics(losses, chosen_rewards, rejected_rewards, policy_chosen_logps, policy_rejected_logps):
    """Batch means under TRL's metric names (scalars; the caller turns them into floats).

    ``rewards/accuracies`` counts strict ``chosen > rejected``, as TRL does, so a tie
    (e.g. policy == reference) counts as wrong.
    """
    margins = chosen_rewards - rejected_rewards
    return {
        "loss": jnp.mean(losses),
        "rewards/chosen": jnp.mean(chosen_rewards),
        "rewards/rejected": jnp.mean(rejected_rewards),
        "rewards/margins": jnp.mean(margins),
        "rewards/accuracies": jnp.mean((chosen_rewards > rejected_rewards).astype(jnp.float32)),
        "logps/chosen": jnp.mean(policy_chosen_logps),
        "logps/rejected": jnp.mean(policy_rejected_logps),
    }
