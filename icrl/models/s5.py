"""S5 backbone: diagonal state space layers run by a parallel scan, with resets at history boundaries.

S5 (Smith, Warrington and Linderman 2023, "Simplified State Space Layers for Sequence Modeling")
replaces attention by one multi-input, multi-output linear state space model per layer,

    dx/dt = A x(t) + B u(t),    y(t) = C x(t) + D u(t),

with A diagonalised, A = V diag(Lambda) V^-1, so the state lives in the eigenbasis: B~ = V^-1 B,
C~ = C V, and every state coordinate evolves on its own. Discretised with a zero-order hold, the
layer is the linear recurrence ``x_t = Lambda_bar * x_{t-1} + B_bar u_t``, ``y_t = Re(C~ x_t) + D u_t``:
over a whole sequence it runs as a parallel (log-depth) associative scan, online it is one
multiply-add per step on a state of fixed size, however long the rollout.

Lu et al. 2023 ("Structured State Space Models for In-Context Reinforcement Learning") add a reset
flag to every element of the scan, so that one pass over a sequence that packs several
independent histories zeroes the carried state at each boundary (:func:`scan_combine`).

Shapes: B batch, T time, H = n_embd input and output features, N = ``state_size`` (the HiPPO size,
summed over blocks), P complex states stored (N / 2 with conjugate symmetry, else N).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ACTIVATIONS = ("gelu", "half_glu", "full_glu")

Element = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # (a, b, r) of the scan


# --- HiPPO-N initialisation ---------------------------------------------------------------------

def hippo_legs(N: int) -> np.ndarray:
    """The HiPPO-LegS state matrix (Gu et al. 2020, "HiPPO"), with the sign of a stable system.

    A_nk = -sqrt(2n + 1) sqrt(2k + 1) for n > k, -(n + 1) for n = k, 0 for n < k.

    Returns:
        (N, N) float64.
    """
    q = np.sqrt(1.0 + 2.0 * np.arange(N))  # (N,)
    return -(np.tril(q[:, None] * q[None, :]) - np.diag(np.arange(N)))  # (N, N)


def hippo_normal(N: int) -> tuple[np.ndarray, np.ndarray]:
    """Eigen-decomposition of HiPPO-N, the normal part of HiPPO-LegS (S5 paper, initialisation).

    HiPPO-LegS is normal plus low rank, A = A_N - p p^T with p_n = sqrt(n + 1/2); the normal part

        A_N = A + p p^T = -1/2 I + K,    K skew-symmetric, K_nk = -sign(n - k) sqrt(2n + 1) sqrt(2k + 1) / 2,

    is unitarily diagonalisable, A_N = V diag(Lambda) V^*, with Lambda = -1/2 + i w. The w come
    from the Hermitian matrix -iK (``eigh``, float64), so V is unitary to machine precision and
    the real parts are exactly -1/2.

    Args:
        N: size of the matrix.

    Returns:
        Lambda (N,) complex128 sorted by increasing imaginary part, V (N, N) complex128 whose
        columns are the eigenvectors.
    """
    p = np.sqrt(np.arange(N) + 0.5)  # (N,)
    normal = hippo_legs(N) + p[:, None] * p[None, :]  # (N, N) = -1/2 I + K
    skew = normal + 0.5 * np.eye(N)  # (N, N) K
    w, V = np.linalg.eigh(-1j * skew)  # (N,), (N, N): K v = i w v
    return -0.5 + 1j * w, V


def hippo_eigenbasis(state_size: int, blocks: int = 1, conj_sym: bool = True
                     ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Initial eigenvalues and eigenbasis of an S5 layer: J = ``blocks`` copies of HiPPO-N.

    As in S5, A starts block-diagonal with J blocks of size N / J, each the HiPPO-N matrix of that
    size, so Lambda repeats per block and V is block-diagonal. With conjugate symmetry a real A
    has eigenvalues in pairs (lambda, conj(lambda)); only the half with negative imaginary part is
    kept (P = N / 2) and the layer outputs 2 Re(C~ x), which equals Re over the full basis.

    Args:
        state_size: N, the total state size of the real system.
        blocks: J; must divide N (with conj_sym, into blocks of even size).
        conj_sym: keep one eigenvalue of each conjugate pair.

    Returns:
        Lambda (P,) complex128, V (N, P) complex128, V_inv (P, N) complex128 with V_inv = V^*
        (V unitary), so that B~ = V_inv B and C~ = C V.

    Raises:
        ValueError: if J does not divide N, or a block is odd with ``conj_sym``.
    """
    if state_size < 1 or blocks < 1 or state_size % blocks:
        raise ValueError(f"state_size ({state_size}) must be a positive multiple of blocks ({blocks})")
    n = state_size // blocks
    if conj_sym and n % 2:
        raise ValueError(
            f"conjugate symmetry needs an even block size, got state_size / blocks = {n}; "
            f"choose state_size = {2 * blocks * max(1, n // 2)} or conj_sym = False"
        )
    lam, V = hippo_normal(n)  # (n,), (n, n)
    k = n // 2 if conj_sym else n  # eigh sorts by w: the first n / 2 have w < 0
    lam, V = lam[:k], V[:, :k]  # (k,), (n, k)
    V_full = np.zeros((state_size, blocks * k), dtype=np.complex128)  # (N, P)
    for j in range(blocks):
        V_full[j * n:(j + 1) * n, j * k:(j + 1) * k] = V
    return np.tile(lam, blocks), V_full, V_full.conj().T  # (P,), (N, P), (P, N)


# --- discretisation and scan --------------------------------------------------------------------

def discretize_zoh(Lambda: torch.Tensor, B: torch.Tensor, step: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Zero-order hold of a diagonal system (input held constant over each step of length dt).

        Lambda_bar = exp(Lambda dt),    B_bar = (Lambda_bar - 1) / Lambda * B  (= int_0^dt e^{Lambda s} ds B)

    Args:
        Lambda: (P,) complex continuous-time eigenvalues.
        B: (P, H) complex input matrix in the eigenbasis.
        step: (P,) positive step size dt of each state.

    Returns:
        Lambda_bar (P,) and B_bar (P, H), complex.
    """
    Lambda_bar = torch.exp(Lambda * step)  # (P,)
    return Lambda_bar, ((Lambda_bar - 1) / Lambda)[:, None] * B  # (P,), (P, H)


def scan_combine(earlier: Element, later: Element) -> Element:
    """The associative operator of the scan with resets (Lu et al. 2023).

    An element (a, b, r) stands for the step map x -> (1 - r) a x + b: r = 1 drops the carried
    state. Composing ``earlier`` = (a_i, b_i, r_i) and then ``later`` = (a_j, b_j, r_j) gives

        (a_i, b_i, r_i) . (a_j, b_j, r_j) = (a_j,       b_j,             1)    if r_j
                                            (a_j a_i,   a_j b_i + b_j,   r_i)  otherwise

    i.e. (r_j ? a_j : a_j a_i,  r_j ? b_j : a_j b_i + b_j,  r_i or r_j). It is associative because
    it is composition of maps: for three elements both bracketings give the third element when
    r_3 is set, (a_3 a_2, a_3 b_2 + b_3, 1) when only r_2 is, and plain affine composition with
    flag r_1 otherwise (``a`` of an element with r = 1 is never used, and both sides agree on it
    anyway). Without resets it is the S5 operator (a_j a_i, a_j b_i + b_j).

    Args:
        earlier, later: (a, b, r) with a, b of shape (..., P) and r bool of shape (...).

    Returns:
        The combined element, same shapes.
    """
    a_i, b_i, r_i = earlier
    a_j, b_j, r_j = later
    cut = r_j.unsqueeze(-1)  # (..., 1)
    return torch.where(cut, a_j, a_j * a_i), torch.where(cut, b_j, a_j * b_i + b_j), r_i | r_j


def parallel_scan(a: torch.Tensor, b: torch.Tensor, reset: torch.Tensor) -> Element:
    """Inclusive scan of (a_t, b_t, reset_t) under :func:`scan_combine` along dim 1, in log2(T) rounds.

    Hillis-Steele doubling: in round k every position t >= 2^k combines with the partial result at
    t - 2^k, so after ceil(log2 T) rounds position t holds e_0 . e_1 . ... . e_t. Each round is a
    few whole-tensor ops (no Python loop over time); work is O(T log T), depth O(log T).

    Args:
        a: (B, T, P) complex multipliers.
        b: (B, T, P) complex offsets.
        reset: (B, T) bool.

    Returns:
        (A, Bc, R), each of the input's shape: position t composes steps 0..t.
    """
    T = a.shape[1]
    d = 1
    while d < T:
        a_new, b_new, r_new = scan_combine((a[:, :-d], b[:, :-d], reset[:, :-d]), (a[:, d:], b[:, d:], reset[:, d:]))
        a = torch.cat((a[:, :d], a_new), dim=1)  # (B, T, P)
        b = torch.cat((b[:, :d], b_new), dim=1)  # (B, T, P)
        reset = torch.cat((reset[:, :d], r_new), dim=1)  # (B, T)
        d *= 2
    return a, b, reset


def linear_recurrence(a: torch.Tensor, b: torch.Tensor, reset: torch.Tensor,
                      x0: torch.Tensor | None = None) -> torch.Tensor:
    """All states of x_t = (0 if reset_t else a_t x_{t-1}) + b_t, x_{-1} = x0, by a parallel scan.

    Args:
        a: (B, T, P) complex.
        b: (B, T, P) complex.
        reset: (B, T) bool, True where step t drops the carried state.
        x0: (B, P) state before step 0; None for zeros.

    Returns:
        (B, T, P) states x_0 .. x_{T-1}.
    """
    A, Bc, R = parallel_scan(a, b, reset)  # (B, T, P), (B, T, P), (B, T)
    if x0 is None:
        return Bc  # (B, T, P)
    return torch.where(R.unsqueeze(-1), Bc, A * x0.unsqueeze(1) + Bc)  # (B, T, P)


# --- layers -------------------------------------------------------------------------------------

class S5Layer(nn.Module):
    """One S5 state space model, H inputs -> H outputs through P complex states.

    Parameters (complex ones stored as real tensors with a trailing (re, im) axis, so optimisers,
    DDP and checkpoints see plain real tensors):

    - ``log_neg_real`` (P,), ``imag`` (P,): Lambda = -exp(log_neg_real) + i imag, so Re(Lambda) < 0
      whatever the optimiser does and |Lambda_bar| < 1 (the recurrence cannot blow up on long
      rollouts); initialised at HiPPO-N (:func:`hippo_eigenbasis`).
    - ``B`` (P, H, 2): B~ = V^-1 B with B real, N(0, 1/N) entries (the reference's LeCun-normal
      draw on an (N, H) array).
    - ``C`` (H, P, 2): C~ = C V with C complex, real and imaginary parts N(0, 1/N).
    - ``D`` (H,): feedthrough, N(0, 1).
    - ``log_step`` (P,): dt = exp(log_step), one step size per state, log-uniform in
      [dt_min, dt_max] at initialisation.

    The layer computes in the dtype of its parameters with autocast off: under bf16 autocast the
    recurrence and the complex arithmetic stay in float32.
    """

    def __init__(self, n_embd: int, state_size: int, *, blocks: int = 1, conj_sym: bool = True,
                 dt_min: float = 0.001, dt_max: float = 0.1, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if not 0 < dt_min <= dt_max:
            raise ValueError(f"need 0 < dt_min <= dt_max, got dt_min={dt_min}, dt_max={dt_max}")
        Lambda, V, V_inv = hippo_eigenbasis(state_size, blocks, conj_sym)  # (P,), (N, P), (P, N)
        N, P, H = state_size, Lambda.shape[0], n_embd
        self.n_embd, self.state_size, self.n_state, self.conj_sym = H, N, P, conj_sym
        dtype = torch.get_default_dtype()
        f64 = dict(dtype=torch.float64, generator=generator)
        B = torch.randn(N, H, **f64) / math.sqrt(N)  # (N, H)
        C = torch.complex(torch.randn(H, N, **f64), torch.randn(H, N, **f64)) / math.sqrt(N)  # (H, N)
        B_tilde = torch.from_numpy(V_inv) @ B.to(torch.complex128)  # (P, H)
        C_tilde = C @ torch.from_numpy(V)  # (H, P)
        log_dt = math.log(dt_min) + torch.rand(P, **f64) * (math.log(dt_max) - math.log(dt_min))  # (P,)
        self.log_neg_real = nn.Parameter(torch.from_numpy(np.log(-Lambda.real)).to(dtype))  # (P,)
        self.imag = nn.Parameter(torch.from_numpy(Lambda.imag.copy()).to(dtype))  # (P,)
        self.B = nn.Parameter(torch.view_as_real(B_tilde).to(dtype).clone())  # (P, H, 2)
        self.C = nn.Parameter(torch.view_as_real(C_tilde).to(dtype).clone())  # (H, P, 2)
        self.D = nn.Parameter(torch.randn(H, **f64).to(dtype))  # (H,)
        self.log_step = nn.Parameter(log_dt.to(dtype))  # (P,)

    def eigenvalues(self) -> torch.Tensor:
        """Continuous-time Lambda, (P,) complex with negative real parts."""
        return torch.complex(-torch.exp(self.log_neg_real), self.imag)  # (P,)

    def discretize(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Lambda_bar (P,) and B_bar (P, H) by zero-order hold (:func:`discretize_zoh`)."""
        return discretize_zoh(self.eigenvalues(), torch.view_as_complex(self.B), torch.exp(self.log_step))

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The state before any input: (batch_size, P) complex zeros."""
        dtype = torch.complex128 if self.D.dtype == torch.float64 else torch.complex64
        return torch.zeros(batch_size, self.n_state, dtype=dtype, device=device or self.D.device)

    def _input(self, u: torch.Tensor, B_bar: torch.Tensor) -> torch.Tensor:
        """B_bar u for real u (..., H) -> (..., P) complex, as two real matmuls."""
        return torch.complex(u @ B_bar.real.T, u @ B_bar.imag.T)  # (..., P)

    def _output(self, x: torch.Tensor, u: torch.Tensor) -> torch.Tensor:
        """y = Re(C~ x) (twice that with conjugate symmetry) + D u: x (..., P), u (..., H) -> (..., H)."""
        C = torch.view_as_complex(self.C)  # (H, P)
        y = x.real @ C.real.T - x.imag @ C.imag.T  # (..., H) = Re(C x)
        return (2 * y if self.conj_sym else y) + self.D * u  # (..., H)

    def forward(self, u: torch.Tensor, reset: torch.Tensor | None = None,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Full pass over a sequence by the parallel scan.

        Args:
            u: (B, T, H) inputs.
            reset: (B, T) bool, True where step t starts a new history (the state carried into
                step t is dropped); None for no resets.
            state: (B, P) complex state before step 0 (e.g. the last state of a previous chunk);
                None for zeros.

        Returns:
            y (B, T, H) outputs in u's dtype and x (B, T, P) the state after every step
            (``x[:, -1]`` continues the sequence).
        """
        Bsz, T, H = u.shape
        if H != self.n_embd:
            raise ValueError(f"S5 layer of width {self.n_embd} got inputs of width {H}")
        reset = _check_reset(reset, (Bsz, T), u.device)
        with torch.autocast(u.device.type, enabled=False):
            v = u.to(self.D.dtype)  # (B, T, H)
            Lambda_bar, B_bar = self.discretize()  # (P,), (P, H)
            a = Lambda_bar.expand(Bsz, T, self.n_state)  # (B, T, P)
            x = linear_recurrence(a, self._input(v, B_bar), reset, state)  # (B, T, P)
            y = self._output(x, v)  # (B, T, H)
        return y.to(u.dtype), x

    def step(self, u: torch.Tensor, state: torch.Tensor,
             reset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x = (0 if reset else Lambda_bar * state) + B_bar u, y = Re(C~ x) + D u.

        Args:
            u: (B, H) input of the step.
            state: (B, P) complex state after the previous step (not modified).
            reset: (B,) bool, True where this step starts a new history; None for no reset.

        Returns:
            y (B, H) and the new state (B, P).
        """
        reset = _check_reset(reset, u.shape[:1], u.device)
        if state.shape != (u.shape[0], self.n_state):
            raise ValueError(f"state must be (B, P) = {(u.shape[0], self.n_state)}, got {tuple(state.shape)}")
        with torch.autocast(u.device.type, enabled=False):
            v = u.to(self.D.dtype)  # (B, H)
            Lambda_bar, B_bar = self.discretize()  # (P,), (P, H)
            carried = torch.where(reset.unsqueeze(-1), torch.zeros_like(state), Lambda_bar * state)  # (B, P)
            x = carried + self._input(v, B_bar)  # (B, P)
            y = self._output(x, v)  # (B, H)
        return y.to(u.dtype), x


def _check_reset(reset: torch.Tensor | None, shape: tuple[int, ...] | torch.Size, device: torch.device) -> torch.Tensor:
    """Reset flags as bool of ``shape`` (all False for None); a wrong shape is a ValueError."""
    if reset is None:
        return torch.zeros(tuple(shape), dtype=torch.bool, device=device)
    if tuple(reset.shape) != tuple(shape):
        raise ValueError(f"reset must have shape {tuple(shape)} (batch, time), got {tuple(reset.shape)}")
    return reset.to(device=device, dtype=torch.bool)


class S5Block(nn.Module):
    """Pre-norm residual block: x + dropout(mix(S5(LayerNorm(x)))).

    ``mix`` is the nonlinearity after the SSM, as in the S5 reference: ``gelu`` (GELU),
    ``half_glu`` (g = GELU(y); g * sigmoid(W g)) or ``full_glu`` (g = GELU(y); W1 g * sigmoid(W2 g);
    the variant Lu et al. use on POPGym).
    """

    def __init__(self, n_embd: int, state_size: int, *, blocks: int = 1, conj_sym: bool = True,
                 activation: str = "full_glu", dropout: float = 0.0, bias: bool = True, dt_min: float = 0.001,
                 dt_max: float = 0.1, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {', '.join(ACTIVATIONS)}, got {activation!r}")
        self.activation = activation
        self.ln = nn.LayerNorm(n_embd, bias=bias)
        self.ssm = S5Layer(n_embd, state_size, blocks=blocks, conj_sym=conj_sym, dt_min=dt_min, dt_max=dt_max,
                           generator=generator)
        self.out1 = nn.Linear(n_embd, n_embd, bias=bias) if activation == "full_glu" else None
        self.out2 = nn.Linear(n_embd, n_embd, bias=bias) if activation != "gelu" else None
        self.drop = nn.Dropout(dropout)
        for lin in (self.out1, self.out2):
            if lin is not None:  # LeCun normal, zero bias (the reference's Dense defaults)
                nn.init.normal_(lin.weight, 0.0, 1.0 / math.sqrt(n_embd), generator=generator)
                if lin.bias is not None:
                    nn.init.zeros_(lin.bias)

    def _mix(self, y: torch.Tensor) -> torch.Tensor:
        g = F.gelu(y)  # (..., C)
        if self.activation == "gelu":
            return g
        if self.activation == "half_glu":
            return g * torch.sigmoid(self.out2(g))  # (..., C)
        return self.out1(g) * torch.sigmoid(self.out2(g))  # (..., C)

    def forward(self, x: torch.Tensor, reset: torch.Tensor | None = None,
                state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Full pass: x (B, T, C) -> (B, T, C), and the SSM states (B, T, P); see ``S5Layer.forward``."""
        y, states = self.ssm(self.ln(x), reset, state)  # (B, T, C), (B, T, P)
        return x + self.drop(self._mix(y)), states  # (B, T, C)

    def step(self, x: torch.Tensor, state: torch.Tensor,
             reset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One step: x (B, C), state (B, P) -> (B, C), new state (B, P); see ``S5Layer.step``."""
        y, state = self.ssm.step(self.ln(x), state, reset)  # (B, C), (B, P)
        return x + self.drop(self._mix(y)), state  # (B, C)


class S5Stack(nn.Module):
    """n_layer S5 blocks and a final LayerNorm over already-embedded tokens (the S5 backbone).

    Mirrors ``Transformer``: dropout on the input embeddings, pre-norm residual blocks, final
    LayerNorm. The online state is one tensor (n_layer, B, P) complex: ``state.clone()`` copies it
    and ``state[:, idx]`` selects (or repeats) batch rows, so a planner can fork rollouts; ``step``
    never writes into the state it is given.
    """

    def __init__(self, n_layer: int, n_embd: int, state_size: int, *, blocks: int = 1, conj_sym: bool = True,
                 activation: str = "full_glu", dropout: float = 0.0, bias: bool = True, dt_min: float = 0.001,
                 dt_max: float = 0.1, generator: torch.Generator | None = None) -> None:
        super().__init__()
        if n_layer < 1:
            raise ValueError(f"n_layer must be >= 1, got {n_layer}")
        self.n_layer = n_layer
        self.drop = nn.Dropout(dropout)
        self.h = nn.ModuleList(
            S5Block(n_embd, state_size, blocks=blocks, conj_sym=conj_sym, activation=activation, dropout=dropout,
                    bias=bias, dt_min=dt_min, dt_max=dt_max, generator=generator)
            for _ in range(n_layer)
        )
        self.ln_f = nn.LayerNorm(n_embd, bias=bias)
        self.n_state = self.h[0].ssm.n_state

    def initial_state(self, batch_size: int, device: torch.device | str | None = None) -> torch.Tensor:
        """The state before any input: (n_layer, batch_size, P) complex zeros."""
        return torch.stack([block.ssm.initial_state(batch_size, device) for block in self.h])  # (L, B, P)

    def forward(self, x: torch.Tensor, reset: torch.Tensor | None = None, state: torch.Tensor | None = None,
                return_states: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Full pass over a sequence of embedded tokens.

        Args:
            x: (B, T, C) token embeddings.
            reset: (B, T) bool, True where token t starts a new history; None for none.
            state: (n_layer, B, P) state before token 0 (a previous chunk's last state); None for zeros.
            return_states: also return every layer's state after every token.

        Returns:
            (B, T, C) final hidden states; with ``return_states`` also (n_layer, B, T, P), whose
            ``[:, :, t]`` is the state ``step`` would hold after token t.
        """
        if state is not None and state.shape[0] != self.n_layer:
            raise ValueError(f"state must be (n_layer={self.n_layer}, B, P), got {tuple(state.shape)}")
        x = self.drop(x)  # (B, T, C)
        states = []
        for i, block in enumerate(self.h):
            x, s = block(x, reset, None if state is None else state[i])  # (B, T, C), (B, T, P)
            if return_states:
                states.append(s)
        y = self.ln_f(x)  # (B, T, C)
        return (y, torch.stack(states)) if return_states else y  # (B, T, C)[, (L, B, T, P)]

    def step(self, x: torch.Tensor, state: torch.Tensor,
             reset: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """One token of every rollout; equal to ``forward`` at that token.

        Args:
            x: (B, C) embedding of the new token.
            state: (n_layer, B, P) from ``initial_state`` or a previous step (not modified).
            reset: (B,) bool, True where this token starts a new history; None for no reset.

        Returns:
            (B, C) final hidden state of the token and the new state (n_layer, B, P).
        """
        if state.shape[0] != self.n_layer:
            raise ValueError(f"state must be (n_layer={self.n_layer}, B, P), got {tuple(state.shape)}")
        x = self.drop(x)  # (B, C)
        new = []
        for i, block in enumerate(self.h):
            x, s = block.step(x, state[i], reset)  # (B, C), (B, P)
            new.append(s)
        return self.ln_f(x), torch.stack(new)  # (B, C), (L, B, P)


# --- the backbone -------------------------------------------------------------------------------

class S5State:
    """Online state of :class:`S5Backbone`: every layer's SSM state after the committed tokens.

    Attributes:
        x: (n_layer, B, P) complex.
        pos: tokens committed so far.
    """

    def __init__(self, x: torch.Tensor) -> None:
        self.x, self.pos = x, 0

    @property
    def batch_size(self) -> int:
        return self.x.shape[1]

    def copy(self) -> "S5State":
        """An independent copy (a forked rollout)."""
        out = S5State(self.x.clone())
        out.pos = self.pos
        return out

    def index(self, idx: torch.Tensor) -> "S5State":
        """The states of batch rows ``idx`` (repeats allowed)."""
        out = S5State(self.x[:, idx])  # (L, len(idx), P)
        out.pos = self.pos
        return out

    def fork(self, rows: torch.Tensor) -> "S5State":
        """Search nodes continuing rows ``rows``: ``index(rows)``, the state being small (n_layer x P
        per node) and of fixed size, so there is no context to share."""
        return self.index(rows)


class S5Backbone(nn.Module):
    """``model.backbone: s5``: an :class:`S5Stack` under the backbone contract (icrl.models.backbones).

    The stream runs through the parallel scan, resets at history starts. A readout after prefix j
    (DPT) is, in every layer, one more step from the state after the first j stream tokens,
    ``x' = Lambda_bar x_j + B_bar u``, ``y = Re(C~ x') + D u``, which is not kept: exactly what
    ``step(..., commit=False)`` computes online. No window and no positions: the state carries
    the whole history at a fixed size, so a rollout of any length costs the same per step.
    HiPPO-N initialisation (drawn in the constructor from ``generator``); Lambda, B and the step
    sizes are kept out of weight decay, as in the S5 reference.
    """

    own_init = True  # the model's GPT-2 init leaves these weights alone

    @staticmethod
    def capacity_of(config: Any) -> None:
        """No bound on a rollout's length."""
        return None

    def __init__(self, config: Any, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.stack = S5Stack(config.n_layer, config.n_embd, config.state_size, dropout=config.dropout,
                             bias=config.bias, generator=generator)

    def forward(self, x: torch.Tensor, structure: Any) -> torch.Tensor:
        """Full pass: (B, T, C) -> (B, T, C) (see the class doc for readouts)."""
        n = structure.n_stream
        if structure.readouts is None:
            return self.stack(x, structure.resets)  # (B, T, C)
        if structure.resets is not None:
            raise ValueError("a structure with readouts takes no resets")
        B, C = x.shape[0], x.shape[-1]
        prefixes = structure.readouts.to(x.device)  # (J,)
        J = len(prefixes)
        h, r = self.stack.drop(x[:, :n]), self.stack.drop(x[:, n:])  # (B, n, C), (B, J, C)
        for block in self.stack.h:
            y, states = block.ssm(block.ln(h))  # (B, n, C), (B, n, P)
            before = torch.cat((block.ssm.initial_state(B, x.device)[:, None], states), dim=1)[:, prefixes]  # (B, J, P)
            y_r, _ = block.ssm.step(block.ln(r).reshape(B * J, C), before.reshape(B * J, -1))  # (B*J, C)
            h = h + block.drop(block._mix(y))  # (B, n, C)
            r = r + block.drop(block._mix(y_r.view(B, J, C)))  # (B, J, C)
        return self.stack.ln_f(torch.cat((h, r), dim=1))  # (B, n+J, C)

    def init_state(self, batch_size: int, device: torch.device | str, dtype: torch.dtype) -> S5State:
        """Zero states for ``batch_size`` rollouts (complex in the parameters' precision)."""
        return S5State(self.stack.initial_state(batch_size, device))

    def step(self, x: torch.Tensor, state: S5State, commit: bool = True) -> torch.Tensor:
        """One token: (B, 1, C) -> (B, 1, C); ``commit=False`` (a readout) leaves ``state`` as it was."""
        if x.shape[0] != state.batch_size:
            raise ValueError(f"batch of {x.shape[0]} tokens for a state of {state.batch_size} rollouts")
        h, new = self.stack.step(x[:, 0], state.x)  # (B, C), (L, B, P)
        if commit:
            state.x, state.pos = new, state.pos + 1
        return h[:, None]  # (B, 1, C)

    def after_init(self, generator: torch.Generator | None) -> None:
        """Nothing: the HiPPO initialisation happened in the constructor."""

    def aux_loss(self) -> torch.Tensor | None:
        """No auxiliary loss: None."""
        return None

    def after_step(self) -> None:
        """Nothing to update after an optimiser step."""

    def no_weight_decay(self) -> set[nn.Parameter]:
        """Lambda (real and imaginary parts), B~ and the log step sizes of every layer."""
        return {p for block in self.stack.h for p in (block.ssm.log_neg_real, block.ssm.imag, block.ssm.B,
                                                      block.ssm.log_step)}
