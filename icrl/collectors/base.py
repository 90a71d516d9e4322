"""The batched policy protocol and the runner that turns a policy into learning histories.

A source algorithm is a :class:`Policy` acting on N envs at once (numpy in, numpy out).
:func:`run_policy` drives it through gymnasium's native vector env of the family, honouring the
env's SAME_STEP autoreset (no fake steps: the step that ends an episode already returns the next
episode's first observation), and records every real step of every history. :func:`collect_block`
is the one entry point of the collection pipeline
(docs/architecture.md#collection-and-source-algorithms): it builds the policy and runs it.

Actions follow the family's :class:`~icrl.spaces.EnvSpec`: (N,) int64 for ``Discrete``, (N,
*action_shape) floats for ``Box``, clipped into the box by the runner (the stored action is the one
the env executes).

Determinism: a block's randomness comes from its ``seed_seq`` alone. Child 0 of it seeds the
vector env (reward noise), child 1 the policy's generator; the children are derived from the
sequence's entropy and spawn key, never from its mutable spawn counter, so running the same
block twice gives byte-identical data whatever else was spawned from the same object.
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Protocol

import gymnasium
import numpy as np

from icrl import envs
from icrl.collectors.bandit import BANDIT_POLICIES
from icrl.collectors.mdp import NoiseDistillPolicy, UniformRandomPolicy
from icrl.collectors.ppo import PPOPolicy
from icrl.collectors.psrl import PosteriorSamplingPolicy
from icrl.collectors.ucbvi import UCBVIPolicy
from icrl.histories import HistoryBatch
from icrl.spaces import EnvSpec, SpaceError

_ENV_CHILD, _POLICY_CHILD = 0, 1


class Policy(Protocol):
    """A source algorithm acting on N envs at once.

    Implementations take ``(num_envs, task_dist, rng, **params)`` in their constructor and draw
    all their randomness from ``rng``. Optional hook: a policy with a method
    ``set_tasks(tasks, episodes)`` gets the (N, *task_shape) tasks and the episodes per history
    from :func:`run_policy` before the first step (noise distillation needs the oracle and the
    history length); policies without it never see the tasks.
    """

    def act(self, obs: np.ndarray) -> np.ndarray:
        """Actions for the current observations.

        Args:
            obs: (N, *obs_shape) current observations.

        Returns:
            (N,) int64 actions (``Discrete``), or (N, *action_shape) finite floats (``Box``; the
            runner clips them into the box).
        """
        ...

    def update(self, obs: np.ndarray, actions: np.ndarray, rewards: np.ndarray, next_obs: np.ndarray,
               terminated: np.ndarray, truncated: np.ndarray) -> None:
        """Learn from one transition per env.

        Args:
            obs: (N, *obs_shape) observations the actions were taken in.
            actions: (N,) int64 actions taken, or (N, *action_shape) floats (``Box``: clipped into
                the box, as the env executed them).
            rewards: (N,) float64 rewards.
            next_obs: (N, *obs_shape) observations after the step; where an episode ended this is
                the episode's final observation, not the next episode's first one.
            terminated: (N,) bool.
            truncated: (N,) bool.
        """
        ...


PolicyFactory = Callable[..., Policy]

#: Registered source algorithms: name -> constructor ``(num_envs, task_dist, rng, **params)``.
POLICIES: dict[str, PolicyFactory] = {
    **BANDIT_POLICIES,
    "random": UniformRandomPolicy,  # any action space; on Discrete the same draws as the bandit-only one
    "noise_distill": NoiseDistillPolicy,
    "ppo": PPOPolicy,
    "psrl": PosteriorSamplingPolicy,  # needs the family's oracle and reward model
    "ucbvi": UCBVIPolicy,  # finite MDPs: Discrete/MultiDiscrete observations, Discrete actions
}


def _params_of(factory: PolicyFactory) -> set[str]:
    """The hyper-parameter names a policy constructor accepts (beyond the three common ones)."""
    sig = inspect.signature(factory)
    return {n for n, p in sig.parameters.items()
            if n not in ("self", "num_envs", "task_dist", "rng") and p.kind is not p.VAR_KEYWORD}


def make_policy(name: str, num_envs: int, task_dist: Any, rng: np.random.Generator, **params: Any) -> Policy:
    """Build the registered source algorithm ``name`` for ``num_envs`` envs.

    ``params`` may hold the hyper-parameters of every registered algorithm (the pipeline passes
    one shared set, e.g. ``ucb_c`` and ``linucb_beta`` together); each policy takes the ones it
    uses. A name that no registered algorithm accepts is an error, so typos do not pass silently.

    Args:
        name: a key of :data:`POLICIES`.
        num_envs: N, the number of envs acted on at once.
        task_dist: the env family's task distribution (arm count, features, noise level).
        rng: the policy's generator.
        **params: hyper-parameters (``ucb_c``, ``thompson_prior_mean``, ...).

    Returns:
        The policy.

    Raises:
        ValueError: unknown ``name`` or parameter, or a parameter value out of range.
    """
    if name not in POLICIES:
        raise ValueError(f"unknown source algorithm {name!r}; choose one of {sorted(POLICIES)}")
    if num_envs < 1:
        raise ValueError(f"num_envs must be >= 1; got {num_envs}")
    known = set().union(*(_params_of(f) for f in POLICIES.values()))
    unknown = sorted(set(params) - known)
    if unknown:
        raise ValueError(f"unknown source-algorithm parameter(s) {unknown}; valid names: {sorted(known)}")
    factory = POLICIES[name]
    own = _params_of(factory)
    return factory(num_envs, task_dist, rng, **{k: v for k, v in params.items() if k in own})


def child_seed_sequence(seed_seq: np.random.SeedSequence, i: int) -> np.random.SeedSequence:
    """Child ``i`` of ``seed_seq``, independent of how many children were spawned from it before.

    Same stream as the i-th ``seed_seq.spawn`` child of a fresh sequence, without mutating it.
    """
    return np.random.SeedSequence(seed_seq.entropy, spawn_key=(*seed_seq.spawn_key, i),
                                  pool_size=seed_seq.pool_size)


def _true_next_obs(next_obs: np.ndarray, done: np.ndarray, infos: dict) -> np.ndarray:
    """next_obs with the true final observation where an episode ended (SAME_STEP autoreset)."""
    if not done.any() or "final_obs" not in infos:
        return next_obs
    mask = np.asarray(infos.get("_final_obs", done), dtype=bool) & done
    if not mask.any():
        return next_obs
    out = np.array(next_obs, copy=True)
    out[mask] = np.stack(list(infos["final_obs"][mask])).astype(out.dtype, copy=False)
    return out


def _success(infos: dict, done: np.ndarray) -> np.ndarray | None:
    """(N,) bool ``infos["success"]`` of a step (False where its ``_success`` mask is), or None if not reported.

    Where an episode ended, SAME_STEP autoreset puts the ending step's info in ``final_info``;
    a ``success`` there wins over the top-level one (which then belongs to the reset).
    """
    final = infos.get("final_info")
    final_has = done.any() and isinstance(final, dict) and "success" in final
    if "success" not in infos and not final_has:
        return None
    out = np.zeros(len(done), dtype=bool)
    if "success" in infos:
        out[:] = np.asarray(infos["success"], dtype=bool)
        if "_success" in infos:
            out &= np.asarray(infos["_success"], dtype=bool)
    if final_has:
        mask = np.asarray(final.get("_success", done), dtype=bool) & done
        out[mask] = np.asarray(final["success"], dtype=bool)[mask]
    return out


def _check_finite(value: np.ndarray, rows: np.ndarray, env_id: str, step: int, task_index: np.ndarray,
                  what: str = "observation") -> None:
    """A one-line SpaceError naming the env, step and task if a float ``value`` (observations or
    rewards, one row per env) holds NaN or inf in one of ``rows``."""
    if value.dtype.kind != "f":
        return  # integers are always finite
    bad = ~np.isfinite(value.reshape(len(value), -1)).all(axis=1) & rows  # (N,)
    if bad.any():
        i = int(np.flatnonzero(bad)[0])
        raise SpaceError(f"{env_id} returned a non-finite {what} at step {step} of task {task_index[i]} "
                         f"(history {i}); check the env")


def run_policy(
    env_id: str,
    env_kwargs: dict[str, Any],
    policy: Policy,
    tasks: np.ndarray,
    seed_seq: np.random.SeedSequence,
    episodes: int = 1,
    task_index: np.ndarray | None = None,
    run_index: np.ndarray | None = None,
    source_index: int = 0,
) -> HistoryBatch:
    """Run ``policy`` on one vector env of ``len(tasks)`` envs until each has ``episodes`` episodes.

    Each env i holds task ``tasks[i]`` and produces one learning history. Envs that finish their
    episodes early keep stepping (the vector env steps all envs together) but those steps are
    masked out, so histories of different lengths come out right. The env must end its own
    episodes (icrl envs truncate at their horizon); the policy keeps learning across episodes.
    What the family's actions look like comes from its :class:`~icrl.spaces.EnvSpec`: a policy's
    actions are checked against it, and ``Box`` actions are clipped into the box before the step.

    Args:
        env_id: gymnasium id with a ``vector_entry_point`` (e.g. ``icrl/GaussianBandit-v0``).
        env_kwargs: constructor kwargs of the env (and of its task distribution).
        policy: the source algorithm, built for ``len(tasks)`` envs.
        tasks: (N, *task_shape) task parameters.
        seed_seq: the block's seed sequence; child 0 seeds the env (see the module docstring).
        episodes: episodes per history (>= 1).
        task_index: (N,) task ids; default ``arange(N)``.
        run_index: (N,) run ids within each task; default zeros.
        source_index: index of the source algorithm in the dataset's source list.

    Returns:
        The N histories. ``steps`` holds obs, action ((n,) int64, or (n, *action_shape) floats in
        the box: what the env executed), reward, next_obs (s' of the transition: the episode's
        final obs where it ended, not the autoreset obs), terminated, truncated; oracle_action
        (same shape and dtype as action) when the family has an oracle; regret when the env
        reports ``infos["regret"]``; success (bool) when it reports ``infos["success"]``.

    Raises:
        ValueError: bad ``tasks``, ``episodes``, index shapes, policy actions, oracle actions, or
            a non-finite observation from the env.
    """
    tasks = np.asarray(tasks, dtype=np.float64)
    if tasks.ndim < 1 or len(tasks) < 1:
        raise ValueError(f"tasks must have shape (N, *task_shape) with N >= 1; got shape {tasks.shape}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1; got {episodes}")
    n = len(tasks)
    task_index = np.arange(n, dtype=np.int64) if task_index is None else np.asarray(task_index, dtype=np.int64)
    run_index = np.zeros(n, dtype=np.int64) if run_index is None else np.asarray(run_index, dtype=np.int64)
    for label, arr in (("task_index", task_index), ("run_index", run_index)):
        if arr.shape != (n,):
            raise ValueError(f"{label} must have shape ({n},) (one per task); got {arr.shape}")

    task_dist = envs.task_distribution(env_id, **env_kwargs)
    spec = EnvSpec.of(task_dist)
    who = f"{type(policy).__name__}.act"  # names the policy in action errors
    action_shape = (n, *spec.action_shape)
    if not spec.discrete_actions:
        low, high = spec.action_space.low, spec.action_space.high  # (*action_shape,) each
    env_seed = int(child_seed_sequence(seed_seq, _ENV_CHILD).generate_state(1, np.uint64)[0])
    env = gymnasium.make_vec(env_id, num_envs=n, vectorization_mode="vector_entry_point", **env_kwargs)
    try:
        mode = env.metadata.get("autoreset_mode")
        if mode is not None and mode != gymnasium.vector.AutoresetMode.SAME_STEP:
            raise ValueError(f"run_policy needs a SAME_STEP autoreset vector env; {env_id} declares {mode}")
        obs, _ = env.reset(seed=env_seed, options={"task": tasks})
        set_tasks = getattr(policy, "set_tasks", None)  # the optional hook (see Policy)
        if set_tasks is not None:
            set_tasks(tasks, episodes)
        fields = ("obs", "action", "reward", "next_obs", "terminated", "truncated") + \
            (("oracle_action",) if spec.has_oracle else ())
        rec: dict[str, list[np.ndarray]] = {k: [] for k in fields}
        regrets: list[np.ndarray | None] = []
        successes: list[np.ndarray | None] = []
        masks: list[np.ndarray] = []
        active = np.ones(n, dtype=bool)  # env still inside its requested episodes
        n_done = np.zeros(n, dtype=np.int64)  # episodes completed
        ep_return = np.zeros(n)  # return of the running episode
        returns = np.zeros((n, episodes))  # (N, E) every env completes exactly E episodes
        step = 0  # index of the step within every active history (they run in lockstep)
        while active.any():
            _check_finite(obs, active, env_id, step, task_index)
            record: dict[str, np.ndarray] = {"obs": obs}
            if spec.has_oracle:
                oracle = np.asarray(task_dist.oracle_action(tasks, obs), dtype=spec.action_dtype)  # (N, *action_shape)
                if oracle.shape != action_shape:
                    raise SpaceError(f"{env_id}: oracle_action returned shape {oracle.shape}, expected "
                                     f"{action_shape}; return one action per task")
                record["oracle_action"] = oracle
            actions = spec.check_actions(policy.act(obs), n, what=who)  # (N,) int64 or (N, *action_shape)
            if not spec.discrete_actions:
                actions = np.clip(actions, low, high).astype(spec.action_dtype, copy=False)  # what the env executes
            next_obs, rewards, terminated, truncated, infos = env.step(actions)
            rewards = np.asarray(rewards, dtype=np.float64)
            terminated = np.asarray(terminated, dtype=bool)
            truncated = np.asarray(truncated, dtype=bool)
            done = terminated | truncated
            true_next = _true_next_obs(next_obs, done, infos)  # s', not the reset obs, at episode ends
            _check_finite(true_next, active, env_id, step, task_index)
            _check_finite(rewards, active, env_id, step, task_index, what="reward")
            record.update(action=actions, reward=rewards, next_obs=true_next, terminated=terminated,
                          truncated=truncated)
            for key in fields:
                rec[key].append(np.array(record[key]))  # a copy: envs and policies may reuse their buffers
            if "regret" in infos:
                reg = np.asarray(infos["regret"], dtype=np.float64)
                regrets.append(np.where(infos["_regret"], reg, np.nan) if "_regret" in infos else reg)
            else:
                regrets.append(None)
            successes.append(_success(infos, done))
            masks.append(active.copy())

            ep_return += rewards
            ended = done & active
            if ended.any():
                returns[ended, n_done[ended]] = ep_return[ended]
                n_done[ended] += 1
                active &= n_done < episodes
            ep_return[done] = 0.0
            policy.update(obs, actions, rewards, true_next, terminated, truncated)
            obs = next_obs
            step += 1
    finally:
        env.close()

    mask = np.stack(masks, axis=1)  # (N, T) True on the real steps of each history, a prefix per row
    steps = {k: _flatten(v, mask) for k, v in rec.items()}
    if any(r is not None for r in regrets):
        steps["regret"] = _flatten([np.full(n, np.nan) if r is None else r for r in regrets], mask)
    if any(s is not None for s in successes):
        steps["success"] = _flatten([np.zeros(n, dtype=bool) if s is None else s for s in successes], mask)
    batch = HistoryBatch(
        steps=steps,
        lengths=mask.sum(axis=1).astype(np.int64),
        task=task_index.copy(),
        task_params=tasks.reshape(n, -1).copy(),
        run=run_index.copy(),
        source=np.full(n, source_index, dtype=np.int64),
        episode_returns=[row.copy() for row in returns],
    )
    batch.validate()
    return batch


def _flatten(per_step: list[np.ndarray], mask: np.ndarray) -> np.ndarray:
    """T arrays of shape (N, ...) -> the masked steps, history after history: (mask.sum(), ...)."""
    stacked = np.stack(per_step, axis=1)  # (N, T, ...)
    if mask.all():  # every history ran all T steps (e.g. bandits): skip the masked gather's copy
        return stacked.reshape(-1, *stacked.shape[2:])
    return stacked[mask]


def collect_block(
    env_id: str,
    env_kwargs: dict[str, Any],
    name: str,
    params: dict[str, Any],
    tasks: np.ndarray,
    task_index: np.ndarray,
    run_index: np.ndarray,
    source_index: int,
    seed_seq: np.random.SeedSequence,
    episodes: int = 1,
) -> HistoryBatch:
    """Collect one block of histories with source algorithm ``name`` (the pipeline's entry point).

    The policy's generator is child 1 of ``seed_seq`` and the env's seed child 0, so the block's
    data depends only on ``seed_seq`` and its inputs.

    Args:
        env_id: gymnasium id of the family.
        env_kwargs: env and task-distribution kwargs.
        name: source algorithm (a key of :data:`POLICIES`).
        params: hyper-parameters for :func:`make_policy` (may include other algorithms' ones).
        tasks: (N, *task_shape) one task per history.
        task_index: (N,) task ids.
        run_index: (N,) run ids.
        source_index: index of ``name`` in the dataset's source list.
        seed_seq: the block's seed sequence.
        episodes: episodes per history.

    Returns:
        The block's N histories.
    """
    tasks = np.asarray(tasks, dtype=np.float64)
    task_dist = envs.task_distribution(env_id, **env_kwargs)
    rng = np.random.default_rng(child_seed_sequence(seed_seq, _POLICY_CHILD))
    policy = make_policy(name, len(tasks), task_dist, rng, **params)
    return run_policy(env_id, env_kwargs, policy, tasks, seed_seq, episodes=episodes,
                      task_index=task_index, run_index=run_index, source_index=source_index)
