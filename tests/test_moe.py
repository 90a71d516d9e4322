"""Tests for icrl.models.moe: the T2MIR mixture-of-experts feed-forward, against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from icrl.models.moe import (
    NoisyTopKGate,
    T2MIRFeedForward,
    TaskMoE,
    TokenMoE,
    causal_mean,
    cv_squared,
    infonce,
)

torch.set_num_threads(1)


def identity_gate(n_experts: int, k: int, *, noise: bool = False) -> NoisyTopKGate:
    """A gate whose clean logits are its input: a linear router with W_g = I."""
    gate = NoisyTopKGate(n_experts, n_experts, k, noise=noise, router="linear")
    with torch.no_grad():
        gate.router.weight.copy_(torch.eye(n_experts))
    return gate.eval()


def sigmoid(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


# --- gate -------------------------------------------------------------------------------------------------------


def test_top_k_keeps_the_largest_logits_with_softmax_weights():
    gate = identity_gate(4, 2, noise=True)  # eval mode: no noise even though the gate has it
    x = torch.tensor([[1.0, 3.0, 0.0, 2.0], [-1.0, 0.5, 4.0, 0.0]])
    route = gate(x)
    assert route.indices.tolist() == [[1, 3], [2, 1]]
    a, b = sigmoid(1.0), sigmoid(3.5)  # softmax of two logits = sigmoid of their difference
    expected = torch.tensor([[0.0, a, 0.0, 1 - a], [0.0, 1 - b, b, 0.0]])
    torch.testing.assert_close(route.weights, expected)
    torch.testing.assert_close(route.weights.sum(-1), torch.ones(2))
    torch.testing.assert_close(route.logits, x)


def test_balance_loss_on_a_hand_made_routing():
    # E = 3, k = 2, no noise: token 1 keeps experts (0, 1), token 2 keeps (2, 1), each with
    # weights (sigmoid(1), 1 - sigmoid(1)), so Importance = (a, 2(1 - a), a) and Load = (1, 2, 1).
    gate = identity_gate(3, 2)
    route = gate(torch.tensor([[2.0, 1.0, 0.0], [0.0, 1.0, 2.0]]))
    a = sigmoid(1.0)

    def cv2(v: list[float]) -> float:  # unbiased variance over mean squared, by hand
        m = sum(v) / len(v)
        return sum((x - m) ** 2 for x in v) / (len(v) - 1) / m**2

    importance, load = [a, 2 * (1 - a), a], [1.0, 2.0, 1.0]
    assert cv2(load) == pytest.approx(3 / 16)  # mean 4/3, variance 1/3
    assert route.balance.item() == pytest.approx(cv2(importance) + cv2(load), rel=1e-6)
    assert cv_squared(torch.ones(4)).item() == 0.0  # perfectly balanced
    assert cv_squared(torch.tensor([5.0])).item() == 0.0  # one expert has no spread


def test_noise_only_in_training_and_smooth_load_has_gradients():
    torch.manual_seed(0)
    gate = NoisyTopKGate(5, 6, 2)
    x = torch.randn(32, 5)
    gate.eval()
    assert torch.equal(gate(x).weights, gate(x).weights)  # deterministic
    gate.train()
    route = gate(x)
    assert not torch.equal(route.weights, gate(x).weights)  # noisy
    route.balance.backward()
    assert gate.w_noise.grad is not None and gate.w_noise.grad.abs().sum() > 0  # through Phi(.) of the load
    assert all(torch.isfinite(p.grad).all() for p in gate.parameters())


# --- InfoNCE ----------------------------------------------------------------------------------------------------


def test_infonce_on_hand_vectors():
    eye = torch.eye(2)
    ids = torch.tensor([0, 1])
    aligned = infonce(eye, eye, ids)  # scores I: -log(e / (e + 1)) per row
    assert aligned.item() == pytest.approx(math.log(1 + math.exp(-1)))
    swapped = infonce(eye, eye.flip(0), ids)  # positives score 0, negatives 1
    assert swapped.item() == pytest.approx(math.log(1 + math.e))
    assert aligned < swapped
    assert infonce(eye, eye, ids, temperature=0.5).item() == pytest.approx(math.log(1 + math.exp(-2)))
    W = torch.tensor([[2.0, 0.0], [0.0, 1.0]])  # bilinear scores q^T W k = diag(2, 1)
    expected = 0.5 * (math.log(1 + math.exp(-2)) + math.log(1 + math.exp(-1)))
    assert infonce(eye, eye, ids, weight=W).item() == pytest.approx(expected)


def test_infonce_leaves_other_segments_of_the_anchor_task_out_of_the_negatives():
    eye = torch.eye(3)
    # rows 0 and 1 are one task: for them the other is no negative; row 2 has two negatives.
    loss = infonce(eye, eye, torch.tensor([0, 0, 1]))
    expected = (2 * math.log(1 + math.exp(-1)) + math.log(1 + 2 * math.exp(-1))) / 3
    assert loss.item() == pytest.approx(expected)


def test_symmetric_contrastive_loss_pairs_the_two_halves():
    torch.manual_seed(0)
    ff = T2MIRFeedForward(8, n_task_experts=4)
    q, k = torch.randn(4, 4), torch.randn(4, 4)
    ids = torch.tensor([3, 7, 3, 7])
    W = ff.contrast_w
    expected = 0.5 * (infonce(q[:2], k[2:], ids[:2], weight=W) + infonce(q[2:], k[:2], ids[:2], weight=W))
    torch.testing.assert_close(ff.contrastive_loss(q, k, ids), expected)
    with pytest.raises(ValueError, match="same task"):
        ff.contrastive_loss(q, k, torch.tensor([3, 7, 7, 3]))
    with pytest.raises(ValueError, match="B even"):
        ff.contrastive_loss(q[:3], k[:3], ids[:3])


# --- momentum router --------------------------------------------------------------------------------------------


def test_momentum_update_is_exactly_the_ema():
    moe = TaskMoE(4, 2, n_experts=3, tau=0.25)
    online, target = list(moe.gate.router.parameters()), list(moe.router_target.parameters())
    assert all(torch.equal(t, o) for t, o in zip(target, online))  # a copy at construction
    assert not any(t.requires_grad for t in target)
    with torch.no_grad():  # integer values and tau = 1/4: every product and sum below is exact
        for i, (t, o) in enumerate(zip(target, online)):
            t.copy_(torch.full_like(t, 4.0 * i))
            o.copy_(torch.arange(o.numel(), dtype=o.dtype).view_as(o))
    old = [t.clone() for t in target]
    moe.update_target()
    for t, t0, o in zip(target, old, online):
        assert torch.equal(t, (1 - 0.25) * t0 + 0.25 * o)
    moe.sync_target()
    assert all(torch.equal(t, o) for t, o in zip(target, online))


# --- the MoE layers ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("routing", ["sequence", "token"])
def test_identical_experts_give_the_single_expert_output(routing):
    torch.manual_seed(0)
    ff = T2MIRFeedForward(8, routing=routing).train()  # noisy routing: the weights still sum to 1
    for moe in (ff.token, ff.task):
        for expert in moe.experts.experts[1:]:
            expert.load_state_dict(moe.experts.experts[0].state_dict())
    x = torch.randn(2, 5, 8)
    y, _ = ff(x)
    expected = torch.cat((ff.token.experts.experts[0](x), ff.task.experts.experts[0](x)), dim=-1)  # (B, T, C)
    torch.testing.assert_close(y, expected)


@pytest.mark.parametrize("routing, window", [("sequence", None), ("sequence", 3), ("token", None)])
def test_decode_step_by_step_equals_the_full_pass(routing, window):
    torch.manual_seed(0)
    ff = T2MIRFeedForward(8, routing=routing, window=window).eval()
    x = torch.randn(2, 9, 8)
    y_full, _ = ff(x)
    state = ff.init_state(2, "cpu")
    y_step = torch.cat([ff.decode(x[:, t : t + 1], state) for t in range(x.shape[1])], dim=1)  # (B, T, C)
    torch.testing.assert_close(y_step, y_full, rtol=0, atol=1e-6)
    forked = state.index(torch.tensor([1])) if state is not None else None
    if forked is not None:  # a forked row continues as that row of the batch would
        nxt = torch.randn(2, 1, 8)
        torch.testing.assert_close(ff.decode(nxt[1:], forked), ff.decode(nxt, state.copy())[1:])


def test_sequence_routing_is_causal_and_pools_the_whole_segment_at_its_end():
    torch.manual_seed(0)
    moe = TaskMoE(6, 3, n_experts=4, window=None).eval()
    x = torch.randn(3, 7, 6)
    y, query, key = moe(x)
    later = x.clone()
    later[:, -1] += 5.0
    torch.testing.assert_close(moe(later)[0][:, :-1], y[:, :-1])  # no token sees a later one
    # The per-sequence representation: the router on the mean of the whole segment (target = copy).
    torch.testing.assert_close(query, moe.gate.router(x.mean(1)))
    torch.testing.assert_close(key, query)
    # A windowed pool averages the last K inputs only.
    torch.testing.assert_close(causal_mean(x, 3)[:, 5], x[:, 3:6].mean(1).double())


def test_token_moe_shapes_and_gradients_are_finite():
    torch.manual_seed(0)
    ff = T2MIRFeedForward(8, n_task_experts=8).train()
    x = torch.randn(4, 6, 8, requires_grad=True)
    y, aux = ff(x, task_ids=torch.tensor([0, 5, 0, 5]))
    assert y.shape == x.shape and aux.ndim == 0
    (y.square().mean() + aux).backward()
    grads = {name: p.grad for name, p in ff.named_parameters() if p.requires_grad}
    assert all(torch.isfinite(g).all() for g in grads.values() if g is not None)  # None: an expert no token chose
    assert torch.isfinite(x.grad).all()
    for name in ("token.gate.w_noise", "token.gate.router.0.weight", "task.gate.router.0.weight", "contrast_w"):
        assert grads[name].abs().sum() > 0, name
    assert all(p.grad is None for p in ff.task.router_target.parameters())  # the target only moves by EMA


def test_aux_loss_is_the_weighted_sum():
    torch.manual_seed(0)
    ff = T2MIRFeedForward(8).eval()
    x = torch.randn(4, 5, 8)
    ids = torch.tensor([1, 2, 1, 2])
    _, aux_balance = ff(x)
    _, aux = ff(x, task_ids=ids)
    _, balance = ff.token(x)
    _, query, key = ff.task(x)
    torch.testing.assert_close(aux_balance, 0.1 * balance)
    torch.testing.assert_close(aux, 0.1 * balance + 0.01 * ff.contrastive_loss(query, key, ids))


def test_bad_arguments_fail_loudly():
    with pytest.raises(ValueError, match="1 <= k <= n_experts"):
        TokenMoE(4, 2, n_experts=2, k=3)
    with pytest.raises(ValueError, match="routing"):
        TaskMoE(4, 2, routing="episode")
    with pytest.raises(ValueError, match="router"):
        NoisyTopKGate(4, 3, 1, router="conv")
