"""Weighted losses for AD and DPT: cross-entropy for Discrete actions, and, through
:func:`head_loss`, whatever loss the model's action head owns (Gaussian NLL, tanh MSE).

Both losses first average the cross-entropy over a sample's positions, then take the weighted
mean over samples, ``L = sum_b w_b l_b / sum_b w_b``. A sample's weight (e.g. an LHF weight,
Chen et al. 2025) therefore scales its whole gradient, and a zero-weight sample
contributes exactly no gradient. If every weight is zero the loss is 0 with zero gradient
(checking for it would force a device sync every step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _weighted_mean(per_sample: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """sum_b w_b l_b / sum_b w_b, with the denominator floored so all-zero weights give 0, not NaN."""
    w = weights.to(per_sample.dtype)  # (B,)
    return (w * per_sample).sum() / w.sum().clamp_min(torch.finfo(per_sample.dtype).tiny)  # ()


def _check_weights(weights: torch.Tensor, B: int) -> None:
    if weights.shape != (B,):
        raise ValueError(f"weights must have shape (B,) = ({B},), got {tuple(weights.shape)}")


def _check_weights_and_mask(weights: torch.Tensor, mask: torch.Tensor | None, B: int, T: int) -> None:
    _check_weights(weights, B)
    if mask is not None and mask.shape != (B, T):
        raise ValueError(f"mask must have shape (B, T) = {(B, T)}, got {tuple(mask.shape)}")


def _reduce(per_position: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """(B, T) per-position losses -> sum_b w_b l_b / sum_b w_b with l_b the (masked) mean over T."""
    if mask is None:
        per_sample = per_position.mean(dim=1)  # (B,)
    else:
        m = mask.to(per_position.dtype)  # (B, T)
        per_sample = (per_position * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B,)
    return _weighted_mean(per_sample, weights)  # ()


def reduce_positions(per_position: torch.Tensor, weights: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """The shared reduction of (B, T) per-position losses: ``sum_b w_b l_b / sum_b w_b`` with
    ``l_b`` the (masked) mean over a sample's positions.

    Args:
        per_position: (B, T) losses.
        weights: (B,) non-negative per-sample weights.
        mask: (B, T), 1 where a position counts, or None.
    """
    B, T = per_position.shape
    _check_weights_and_mask(weights, mask, B, T)
    return _reduce(per_position, weights, mask)  # ()


def head_loss(head: torch.nn.Module, out: torch.Tensor, target: torch.Tensor, weights: torch.Tensor,
              mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted loss of an action head (``encoders.ActionHead``) over (B, T) predictions.

    Same reduction as :func:`ad_loss`: the head's per-prediction loss (cross-entropy, Gaussian
    negative log-likelihood or squared error) averaged over positions, then the weighted mean over
    samples. A DPT target of one action per sample, (B,) or (B, d), is used for every readout.

    Args:
        head: the model's ``ActionHead``.
        out: (B, T, out_features) head outputs.
        target: (B, T) int64 / (B, T, d) float actions, or one per sample: (B,) / (B, d).
        weights: (B,) non-negative per-sample weights.
        mask: (B, T), 1 where a position counts, or None.
    """
    B, T = out.shape[:2]
    if head.kind == "categorical":
        if target.shape == (B,):
            target = target[:, None].expand(B, T)  # (B, T)
        if target.shape != (B, T):
            raise ValueError(f"targets must have shape (B, T) = {(B, T)} or (B,), got {tuple(target.shape)}")
    else:
        if target.shape == (B, head.d):
            target = target[:, None].expand(B, T, head.d)  # (B, T, d)
        if target.shape != (B, T, head.d):
            raise ValueError(f"targets must have shape (B, T, d) = {(B, T, head.d)} or (B, d), got "
                             f"{tuple(target.shape)}")
    _check_weights_and_mask(weights, mask, B, T)
    if head.kind == "categorical" and mask is not None:
        target = torch.where(mask > 0, target.long(), 0)  # padding labels (e.g. -1) replaced by a valid class
    return _reduce(head.loss(out, target), weights, mask)  # ()


def ad_loss(logits: torch.Tensor, actions: torch.Tensor, weights: torch.Tensor,
            mask: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted AD loss.

    With CE_bt = -log softmax(logits_bt)[a_bt] and m_bt the mask (1 everywhere if None):

        l_b = sum_t m_bt CE_bt / max(sum_t m_bt, 1)
        L   = sum_b w_b l_b / sum_b w_b

    Args:
        logits: (B, T, A) model outputs.
        actions: (B, T) int64 target actions a_t.
        weights: (B,) non-negative per-history weights.
        mask: (B, T) bool/float, 1 where a position counts (e.g. not padding), or None.

    Returns:
        Scalar loss (float32, or float64 for float64 logits).
    """
    B, T, A = logits.shape
    if actions.shape != (B, T):
        raise ValueError(f"actions must have shape (B, T) = {(B, T)}, got {tuple(actions.shape)}")
    _check_weights_and_mask(weights, mask, B, T)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    m = None if mask is None else mask.to(dtype)  # (B, T)
    # Masked positions may hold padding labels (e.g. -1): replace them by a valid class first.
    targets = actions.long() if m is None else torch.where(m > 0, actions.long(), 0)  # (B, T)
    ce = F.cross_entropy(logits.reshape(B * T, A).to(dtype), targets.reshape(B * T), reduction="none")  # (B*T,)
    ce = ce.view(B, T)  # (B, T)
    if m is None:
        per_sample = ce.mean(dim=1)  # (B,)
    else:
        per_sample = (ce * m).sum(dim=1) / m.sum(dim=1).clamp_min(1.0)  # (B,)
    return _weighted_mean(per_sample, weights)  # ()


def dpt_loss(logits: torch.Tensor, labels: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Weighted DPT loss over all readouts j = 0..n (DPT's pretraining loss covers every prefix).

    With CE_bj = -log softmax(logits_bj)[y_bj] (y_bj = y_b when labels are (B,)):

        l_b = (1/J) sum_j CE_bj
        L   = sum_b w_b l_b / sum_b w_b

    Args:
        logits: (B, J, A) readout logits (J = n + 1).
        labels: (B,) optimal action a* of each sample's query, or (B, J) one per readout.
        weights: (B,) non-negative per-sample weights.

    Returns:
        Scalar loss (float32, or float64 for float64 logits).
    """
    B, J, A = logits.shape
    if labels.shape == (B,):
        labels = labels[:, None].expand(B, J)  # (B, J)
    elif labels.shape != (B, J):
        raise ValueError(f"labels must have shape (B,) = ({B},) or (B, J) = {(B, J)}, got {tuple(labels.shape)}")
    _check_weights(weights, B)
    dtype = torch.float64 if logits.dtype == torch.float64 else torch.float32
    ce = F.cross_entropy(logits.reshape(B * J, A).to(dtype), labels.reshape(B * J).long(), reduction="none")  # (B*J,)
    per_sample = ce.view(B, J).mean(dim=1)  # (B,)
    return _weighted_mean(per_sample, weights)  # ()
