"""TRL 1.16's DPO loss code, called directly, and the random log-probs it is checked on.

TRL 1.16 has no standalone loss function: the loss is inlined in
``DPOTrainer._compute_loss(self, model, inputs, return_outputs)``. `trl_dpo` calls that unbound
method with a stand-in ``self`` (only the attributes it reads) and a stub model whose output
``log_probs`` holds the per-token log-probs we choose. With precomputed reference log-probs in
``inputs`` it never touches a real model, so this runs TRL's real loss code.

Shared by test_dpo_loss.py and test_methods.py.
"""
import collections
import types

import numpy as np
import torch


def trl_self(beta, loss_type, label_smoothing):
    """The attributes of DPOTrainer that _compute_loss reads, for plain DPO."""
    def identity(x):  # single process: gather is a no-op
        return x

    return types.SimpleNamespace(
        model=types.SimpleNamespace(training=True),
        accelerator=types.SimpleNamespace(device=torch.device("cpu"), gather=identity, gather_for_metrics=identity),
        aux_loss_enabled=False,
        ld_alpha=None,
        precompute_ref_logps=True,
        f_divergence_type="reverse_kl",
        f_alpha_divergence_coef=0.5,
        loss_types=[loss_type],
        loss_weights=[1.0],
        beta=beta,
        label_smoothing=label_smoothing,
        use_weighting=False,
        args=types.SimpleNamespace(discopop_tau=0.05),
        _metrics={"train": collections.defaultdict(list), "eval": collections.defaultdict(list)},
        _total_train_tokens=0,
        _tp_size=1,
    )


class StubModel:
    """Returns fixed per-token log-probs; TRL sums them into sequence log-probs."""

    def __init__(self, log_probs):
        self.log_probs = log_probs

    def __call__(self, **kwargs):
        n = self.log_probs.shape
        return types.SimpleNamespace(
            log_probs=self.log_probs,
            entropy=torch.zeros(n),
            mean_logits=torch.zeros(n),
            is_top1=torch.zeros(n, dtype=torch.bool),
        )


def trl_dpo(token_logps, ref_chosen, ref_rejected, beta, loss_type, label_smoothing=0.0):
    """Run TRL's _compute_loss.

    token_logps: float32 torch tensor [2B, T], chosen rows first (TRL's batch layout),
    the policy's per-token log-probs over a T-token completion. Returns (loss, metrics).
    """
    from trl import DPOTrainer

    rows, t = token_logps.shape
    completion_mask = torch.ones(rows, t + 1, dtype=torch.long)
    completion_mask[:, 0] = 0  # one prompt token, then T completion tokens
    inputs = {
        "input_ids": torch.zeros(rows, t + 1, dtype=torch.long),
        "attention_mask": torch.ones(rows, t + 1, dtype=torch.long),
        "completion_mask": completion_mask,
        "ref_chosen_logps": ref_chosen,
        "ref_rejected_logps": ref_rejected,
    }
    self = trl_self(beta, loss_type, label_smoothing)
    loss = DPOTrainer._compute_loss(self, StubModel(token_logps), inputs, return_outputs=False)
    metrics = {k: v[-1] for k, v in self._metrics["train"].items()}
    return loss, metrics


def random_logps(seed, b):
    rng = np.random.default_rng(seed)
    # Sequence log-probs of a few dozen tokens, policy near the reference.
    ref = -rng.uniform(5.0, 60.0, size=(2, b))
    pol = ref + rng.normal(0.0, 5.0, size=(2, b))
    # Snap to a 2**-10 grid: float32 then adds and subtracts these exactly, so results
    # cannot depend on the order in which an implementation combines the four inputs.
    return tuple(np.round(x * 1024) / 1024 for x in (pol[0], pol[1], ref[0], ref[1]))  # float64
