"""S5 backbone (icrl.models.s5): ZOH and HiPPO-N against hand-built cases, the reset scan operator,
scan == sequential recurrence, full pass == online steps, resets cut the past, gradients."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from icrl.models.s5 import (
    S5Block,
    S5Layer,
    S5Stack,
    discretize_zoh,
    hippo_eigenbasis,
    hippo_normal,
    linear_recurrence,
    parallel_scan,
    scan_combine,
)

torch.set_num_threads(1)


def random_element(g: torch.Generator, shape: tuple[int, ...], p_reset: float = 0.3) -> tuple[torch.Tensor, ...]:
    """A random scan element (a, b, r): complex a with |a| < 1, complex b, bool r of shape[:-1]."""
    f64 = dict(dtype=torch.float64, generator=g)
    a = torch.polar(torch.rand(shape, **f64), 2 * math.pi * torch.rand(shape, **f64))
    b = torch.complex(torch.randn(shape, **f64), torch.randn(shape, **f64))
    return a, b, torch.rand(shape[:-1], **f64) < p_reset


def sequential(a: torch.Tensor, b: torch.Tensor, reset: torch.Tensor, x0: torch.Tensor) -> torch.Tensor:
    """x_t = (0 if reset_t else a_t x_{t-1}) + b_t, one step at a time: (B, T, P) states."""
    x, out = x0, []
    for t in range(a.shape[1]):
        x = torch.where(reset[:, t, None], torch.zeros_like(x), a[:, t] * x) + b[:, t]
        out.append(x)
    return torch.stack(out, dim=1)


def by_imag(z: np.ndarray) -> np.ndarray:
    """Eigenvalues ordered by imaginary part (their real parts all equal -1/2 up to rounding)."""
    return z[np.argsort(z.imag)]


def resets(g: torch.Generator, B: int, T: int, p: float = 0.15) -> torch.Tensor:
    return torch.rand(B, T, generator=g) < p


# --- discretisation and initialisation ------------------------------------------------------------

def test_zoh_one_state_by_hand():
    # dx/dt = -x + u held for dt = 0.1: x_1 = e^{-0.1} x_0 + (1 - e^{-0.1}) u.
    Lambda_bar, B_bar = discretize_zoh(torch.tensor([-1.0 + 0j], dtype=torch.complex128),
                                       torch.tensor([[1.0 + 0j]], dtype=torch.complex128),
                                       torch.tensor([0.1], dtype=torch.float64))
    assert Lambda_bar.item() == pytest.approx(math.exp(-0.1), abs=1e-15)
    assert B_bar.item() == pytest.approx(1.0 - math.exp(-0.1), abs=1e-15)


def test_zoh_equals_integral_of_the_exponential():
    # B_bar = int_0^dt e^{Lambda s} ds B for a complex Lambda (midpoint rule, 20000 pieces).
    lam, dt = complex(-0.5, 3.0), 0.2
    s = (np.arange(20000) + 0.5) * dt / 20000
    integral = np.exp(lam * s).sum() * dt / 20000
    B = torch.tensor([[2.0 - 1.0j, 0.5j]], dtype=torch.complex128)
    Lambda_bar, B_bar = discretize_zoh(torch.tensor([lam]), B, torch.tensor([dt], dtype=torch.float64))
    assert Lambda_bar.item() == pytest.approx(np.exp(lam * dt), abs=1e-14)
    np.testing.assert_allclose(B_bar.numpy(), integral * B.numpy(), atol=1e-9)


def test_layer_discretizes_with_its_step():
    layer = S5Layer(3, 4, conj_sym=False).double()
    Lambda_bar, B_bar = layer.discretize()
    dt = torch.exp(layer.log_step)
    torch.testing.assert_close(Lambda_bar, torch.exp(layer.eigenvalues() * dt))
    assert ((dt >= 0.001 - 1e-12) & (dt <= 0.1 + 1e-12)).all()


def test_hippo_n_matches_hand_built_matrix():
    N = 4
    legs = np.zeros((N, N))  # HiPPO-LegS, entry by entry
    for n in range(N):
        for k in range(N):
            if n > k:
                legs[n, k] = -math.sqrt(2 * n + 1) * math.sqrt(2 * k + 1)
            elif n == k:
                legs[n, k] = -(n + 1)
    p = np.array([math.sqrt(n + 0.5) for n in range(N)])
    normal = legs + np.outer(p, p)  # HiPPO-N
    np.testing.assert_allclose(np.diag(normal), -0.5)
    np.testing.assert_allclose(normal + normal.T, -np.eye(N), atol=1e-12)  # -1/2 I + skew-symmetric

    Lambda, V = hippo_normal(N)
    expected = np.linalg.eigvals(normal)
    np.testing.assert_allclose(by_imag(Lambda), by_imag(expected), atol=1e-10)
    assert (Lambda.real < 0).all()
    np.testing.assert_allclose(V.conj().T @ V, np.eye(N), atol=1e-12)  # unitary
    np.testing.assert_allclose(normal @ V, V * Lambda, atol=1e-10)  # columns are eigenvectors


def test_eigenbasis_conjugate_half_and_blocks():
    Lambda_full, _ = hippo_normal(6)
    Lambda, V, V_inv = hippo_eigenbasis(12, blocks=2, conj_sym=True)
    assert Lambda.shape == (6,) and V.shape == (12, 6) and V_inv.shape == (6, 12)
    half = Lambda[:3]
    assert (half.imag < 0).all()
    np.testing.assert_allclose(by_imag(np.concatenate([half, half.conj()])), by_imag(Lambda_full), atol=1e-10)
    np.testing.assert_allclose(Lambda[3:], half)  # each block starts at the same HiPPO-N
    np.testing.assert_allclose(V[:6, 3:], 0)
    np.testing.assert_allclose(V[6:, :3], 0)
    np.testing.assert_allclose(V_inv @ V, np.eye(6), atol=1e-12)
    with pytest.raises(ValueError, match="multiple of blocks"):
        hippo_eigenbasis(10, blocks=3)
    with pytest.raises(ValueError, match="even block size"):
        hippo_eigenbasis(6, blocks=2, conj_sym=True)


def test_lambda_real_part_stays_negative():
    layer = S5Layer(4, 8)
    assert (layer.eigenvalues().real < 0).all()
    np.testing.assert_allclose(layer.eigenvalues().real.detach().numpy(), -0.5, rtol=1e-6)
    with torch.no_grad():
        layer.log_neg_real.copy_(torch.linspace(-30, 5, layer.n_state))
    assert (layer.eigenvalues().real < 0).all()
    assert (layer.discretize()[0].abs() <= 1).all()  # Re(Lambda) = -1e-13 rounds to |Lambda_bar| = 1 in float32


# --- the scan -------------------------------------------------------------------------------------

def test_scan_operator_is_associative():
    g = torch.Generator().manual_seed(0)
    e1, e2, e3 = (random_element(g, (64, 5), p_reset=0.5) for _ in range(3))
    left = scan_combine(scan_combine(e1, e2), e3)
    right = scan_combine(e1, scan_combine(e2, e3))
    for l, r in zip(left, right):
        torch.testing.assert_close(l, r, rtol=0, atol=1e-14)
    # ...and it composes the step maps x -> (1 - r) a x + b.
    x = torch.complex(torch.randn(64, 5, dtype=torch.float64, generator=g),
                      torch.randn(64, 5, dtype=torch.float64, generator=g))

    def apply(e, x):
        a, b, r = e
        return torch.where(r[:, None], b, a * x + b)

    torch.testing.assert_close(apply(left, x), apply(e3, apply(e2, apply(e1, x))), rtol=0, atol=1e-12)


@pytest.mark.parametrize("T", [1, 2, 37, 64])
def test_parallel_scan_equals_sequential_recurrence(T):
    g = torch.Generator().manual_seed(T)
    a, b, r = random_element(g, (3, T, 5))
    x0 = torch.complex(torch.randn(3, 5, dtype=torch.float64, generator=g),
                       torch.randn(3, 5, dtype=torch.float64, generator=g))
    expected = sequential(a, b, r, x0)
    torch.testing.assert_close(linear_recurrence(a, b, r, x0), expected, rtol=0, atol=1e-10)
    torch.testing.assert_close(linear_recurrence(a, b, r), sequential(a, b, r, torch.zeros_like(x0)),
                               rtol=0, atol=1e-10)
    _, _, R = parallel_scan(a, b, r)  # the composed flags: a reset somewhere in 0..t
    assert torch.equal(R, torch.cummax(r.int(), dim=1).values.bool())


# --- full pass == online steps --------------------------------------------------------------------

def test_layer_full_pass_equals_steps():
    g = torch.Generator().manual_seed(1)
    layer = S5Layer(6, 8, blocks=2, generator=g)
    u = torch.randn(3, 25, 6, generator=g)
    r = resets(g, 3, 25)
    state0 = torch.complex(torch.randn(3, layer.n_state, generator=g), torch.randn(3, layer.n_state, generator=g))
    y, xs = layer(u, r, state0)
    state, ys = state0, []
    for t in range(25):
        y_t, state = layer.step(u[:, t], state, r[:, t])
        torch.testing.assert_close(state, xs[:, t], rtol=0, atol=1e-5)
        ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=1), y, rtol=0, atol=1e-5)


@pytest.mark.parametrize("activation", ["gelu", "half_glu", "full_glu"])
def test_stack_full_pass_equals_steps(activation):
    g = torch.Generator().manual_seed(2)
    model = S5Stack(3, 16, 8, activation=activation, dropout=0.1, generator=g).eval()
    x = torch.randn(4, 30, 16, generator=g)
    r = resets(g, 4, 30)
    with torch.no_grad():
        y, states = model(x, r, return_states=True)
        state, ys = model.initial_state(4), []
        for t in range(30):
            y_t, state = model.step(x[:, t], state, r[:, t])
            ys.append(y_t)
    torch.testing.assert_close(torch.stack(ys, dim=1), y, rtol=0, atol=1e-5)
    torch.testing.assert_close(state, states[:, :, -1], rtol=0, atol=1e-5)


def test_stack_chunks_and_forked_states():
    g = torch.Generator().manual_seed(3)
    model = S5Stack(2, 8, 4, generator=g).eval()
    x = torch.randn(3, 20, 8, generator=g)
    r = resets(g, 3, 20)
    with torch.no_grad():
        y, states = model(x, r, return_states=True)
        y2 = model(x[:, 12:], r[:, 12:], state=states[:, :, 11])  # continue from a chunk's last state
        torch.testing.assert_close(y2, y[:, 12:], rtol=0, atol=1e-5)
        state = states[:, :, 11]
        fork = state[:, [2, 2, 0]].clone()  # rows picked and repeated, as a planner forks beams
        y_all, _ = model.step(x[:, 12], state, r[:, 12])
        y_fork, _ = model.step(x[[2, 2, 0], 12], fork, r[[2, 2, 0], 12])
    torch.testing.assert_close(y_fork, y_all[[2, 2, 0]], rtol=0, atol=1e-6)
    assert torch.equal(fork, state[:, [2, 2, 0]])  # step left its input state alone


def test_reset_cuts_off_the_past():
    g = torch.Generator().manual_seed(4)
    model = S5Stack(2, 8, 8, generator=g).eval()
    x = torch.randn(2, 24, 8, generator=g)
    r = torch.zeros(2, 24, dtype=torch.bool)
    r[:, 9] = True
    other = x.clone()
    other[:, :9] = torch.randn(2, 9, 8, generator=g)
    with torch.no_grad():
        y, y_other = model(x, r), model(other, r)
        y_fresh = model(x[:, 9:])  # the same tokens as a history of their own
    assert torch.equal(y_other[:, 9:], y[:, 9:])  # exactly: the scan selects, it does not multiply by 0
    torch.testing.assert_close(y_fresh, y[:, 9:], rtol=0, atol=1e-5)
    assert (y_other[:, :9] - y[:, :9]).abs().max() > 1e-2  # before the reset the inputs matter
    without = model(other, None)
    assert (without[:, 9:] - y[:, 9:]).abs().max() > 1e-4  # ...and after it, without the reset


# --- training -------------------------------------------------------------------------------------

def test_gradients_reach_every_ssm_parameter():
    g = torch.Generator().manual_seed(5)
    block = S5Block(6, 8, generator=g)
    x = torch.randn(2, 16, 6, generator=g)
    r = resets(g, 2, 16, p=0.2)
    y, _ = block(x, r)
    (y ** 2).mean().backward()
    for name in ("log_step", "log_neg_real", "imag", "B", "C", "D"):
        grad = getattr(block.ssm, name).grad
        assert grad is not None and torch.isfinite(grad).all(), name
        assert grad.abs().max() > 0, name


def test_bad_inputs_fail_loudly():
    model = S5Stack(2, 8, 4)
    with pytest.raises(ValueError, match="reset must have shape"):
        model(torch.randn(2, 5, 8), torch.zeros(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="n_layer=2"):
        model.step(torch.randn(2, 8), torch.zeros(3, 2, 2, dtype=torch.complex64))
    with pytest.raises(ValueError, match="activation"):
        S5Stack(1, 8, 4, activation="relu")
