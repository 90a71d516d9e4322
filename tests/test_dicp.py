"""DICP (Son et al. 2025): the world-model loss on hand cases, its labels, online queries equal to
the full pass on every backbone, the beam search on a controlled model and on real ones (forked
state on shared forks == on copies == re-encoding), and the commands end to end."""
from __future__ import annotations

import json
import math
from pathlib import Path

import gymnasium as gym
import jsonschema
import numpy as np
import pytest
import torch

from icrl.cli import main
from icrl.data import HistorySampler
from icrl.histories import HistoryBatch
from icrl.methods import make_model, method_loss
from icrl.models import ADModel, BACKBONES, DPTModel, ModelConfig, head_loss
from icrl.models.backbones import ATTENTION
from icrl.models.encoders import first_action
from icrl.planning import CachedImaginer, ReencodeImaginer, action_order, beam_search, candidate_search
from icrl.spaces import space_to_dict

ROOT = Path(__file__).parent.parent
SCHEMA = json.loads((ROOT / "icrl" / "results.schema.json").read_text())
GRID = {"obs_space": space_to_dict(gym.spaces.MultiDiscrete([9, 9])),
        "action_space": space_to_dict(gym.spaces.Discrete(5))}
POINT = {"obs_space": space_to_dict(gym.spaces.Box(-2, 2, (2,))),
         "action_space": space_to_dict(gym.spaces.Box(-1, 1, (2,)))}


def config(kind: str = "ad", backbone: str = "transformer", spaces: dict = GRID, **kw) -> ModelConfig:
    base = dict(kind=kind, **spaces, backbone=backbone, n_layer=2, n_head=2, n_embd=16, block_size=16,
                window=None if backbone == "s5" else 6, state_size=8, n_token_experts=4, n_task_experts=4,
                world_model=True, reward_values=[0.0, 1.0])
    return ModelConfig(**{**base, **kw})


def model(cfg: ModelConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    return make_model(cfg, torch.Generator().manual_seed(0)).double().eval()


# ---- loss ---------------------------------------------------------------------------------------

def test_world_losses_on_a_hand_case():
    """Reward classes and a MultiDiscrete o' by cross-entropy (summed over components); a
    zero-weight sample adds nothing."""
    cfg = config(spaces={"obs_space": space_to_dict(gym.spaces.MultiDiscrete([2, 3])), **{"action_space": GRID["action_space"]}})
    m = model(cfg)
    r_out = torch.tensor([[[0.0, math.log(3.0)]], [[9.0, -9.0]]], dtype=torch.float64)  # (B=2, M=1, R=2)
    o_out = torch.tensor([[[0.0, 0.0, math.log(2.0), 0.0, 0.0]], [[5.0, 0, 0, 0, 0]]], dtype=torch.float64)  # (2, 1, 2+3)
    reward = torch.tensor([[1.0], [1.0]])  # class 1
    next_obs = torch.tensor([[[1, 0]], [[1, 2]]])
    l_r, l_o = m.world_losses(r_out, o_out, reward, next_obs, torch.tensor([1.0, 0.0]))
    assert l_r.item() == pytest.approx(math.log(4 / 3))  # -log(3 / (1 + 3))
    assert l_o.item() == pytest.approx(math.log(2) + math.log(2))  # -log(1/2) - log(2/4)


def test_world_losses_regress_rewards_and_box_observations_in_normalised_units():
    m = model(config(spaces=POINT, reward_values=[], head="gaussian"))
    m.world.set_reward_stats(np.array([1.0, 3.0]))  # mean 2, std 1
    m.obs_enc.set_stats(np.array([[0.0, 0.0], [2.0, 4.0]]))  # mean (1, 2), std (1, 2)
    r_out = torch.tensor([[[0.5]]], dtype=torch.float64)
    o_out = torch.tensor([[[0.0, 1.0]]], dtype=torch.float64)
    l_r, l_o = m.world_losses(r_out, o_out, torch.tensor([[4.0]]), torch.tensor([[[2.0, 2.0]]]), torch.ones(1))
    assert l_r.item() == pytest.approx((0.5 - 2.0) ** 2)  # target (4 - 2) / 1
    assert l_o.item() == pytest.approx(((0.0 - 1.0) ** 2 + (1.0 - 0.0) ** 2) / 2)  # targets (1, 0)
    reward, next_obs = m.predict_world(torch.zeros(1, 16, dtype=torch.float64))
    assert reward.shape == (1,) and next_obs.shape == (1, 2)


@pytest.mark.parametrize("kind", ["ad", "dpt"])
def test_dicp_loss_is_policy_plus_lambda_world(kind):
    """L = L_policy + lambda (L_reward + L_next_obs), and the queries leave the policy's outputs
    as the plain model computes them."""
    cfg = config(kind, world_model_coef=0.5)
    m = model(cfg)
    s = HistorySampler(_grid_batch(), kind, 8, readouts=3, world_model=True)
    batch = s.sample(np.random.default_rng(0), 4)
    total, parts = method_loss(m, kind, batch)
    assert total.item() == pytest.approx((parts["loss_policy"] + 0.5 * (parts["loss_reward"] + parts["loss_next_obs"])).item())
    plain_cfg = ModelConfig(**{**cfg.to_dict(), "world_model": False})
    plain = (ADModel if kind == "ad" else DPTModel)(plain_cfg, torch.Generator().manual_seed(0)).double()
    plain.load_state_dict({k: v for k, v in m.state_dict().items() if not k.startswith("world.")})
    if kind == "ad":
        out = plain(batch["obs"], batch["prev_action"], batch["prev_reward"])
    else:
        out = plain(batch["ctx_obs"], batch["ctx_action"], batch["ctx_reward"], batch["ctx_next_obs"], batch["query_obs"],
                    batch.get("prefixes"))
    assert parts["loss_policy"].item() == pytest.approx(head_loss(plain.head, out, batch["target"], batch["weights"]).item())


def test_base_weights_are_drawn_as_without_the_world_model():
    """DICP draws its heads after the base model: the AD/DPT weights equal those of the plain model."""
    for kind in ("ad", "dpt"):
        cfg = config(kind)
        dicp = make_model(cfg, torch.Generator().manual_seed(3))
        plain = make_model(ModelConfig(**{**cfg.to_dict(), "world_model": False}), torch.Generator().manual_seed(3))
        assert type(plain) in (ADModel, DPTModel)
        for k, v in plain.state_dict().items():
            assert torch.equal(dicp.state_dict()[k], v), k


# ---- labels -------------------------------------------------------------------------------------

def _grid_batch(lengths=(12, 10), horizon=4):
    """Histories on a 9x9 grid: step t at cell (t % 9, h); each episode ends after ``horizon`` steps,
    where next_obs is the episode's last cell (8, 8) and the next step restarts at (t+1 % 9, h)."""
    n = sum(lengths)
    h = np.repeat(np.arange(len(lengths)), lengths)
    t = np.concatenate([np.arange(L) for L in lengths])
    obs = np.stack((t % 9, h), -1).astype(np.int64)
    end = (t % horizon) == horizon - 1
    next_obs = np.where(end[:, None], 8, np.stack(((t + 1) % 9, h), -1)).astype(np.int64)
    steps = {"obs": obs, "next_obs": next_obs, "action": ((3 * h + t) % 5).astype(np.int64),
             "reward": end.astype(np.float32), "terminated": np.zeros(n, bool), "truncated": end,
             "oracle_action": (t % 5).astype(np.int64)}
    return HistoryBatch(steps=steps, lengths=np.array(lengths), task=np.arange(len(lengths)),
                        task_params=np.zeros((len(lengths), 1)), run=np.zeros(len(lengths), np.int64),
                        source=np.zeros(len(lengths), np.int64), episode_returns=[np.zeros(3), np.zeros(2)])


def test_ad_labels_are_r_t_and_the_stored_next_obs_across_an_episode_end():
    s = HistorySampler(_grid_batch(), "ad", 8, world_model=True)
    b = s.sample(np.random.default_rng(0), 32)
    obs, r, o2 = b["obs"].numpy(), b["wm_reward"].numpy(), b["wm_next_obs"].numpy()
    assert np.array_equal(r[:, :-1], b["prev_reward"].numpy()[:, 1:])  # r_t is the next token's r_{t-1}
    end = r == 1  # the last step of an episode
    assert end.any() and np.all(o2[end] == 8)  # the episode's real last cell ...
    inner = end[:, :-1]
    assert np.all(np.any(obs[:, 1:][inner] != o2[:, :-1][inner], axis=-1))  # ... not the next episode's first one
    assert np.array_equal(o2[:, :-1][~inner], obs[:, 1:][~inner])  # elsewhere o_{t+1}
    assert "wm_steps" not in b


def test_world_model_draws_come_after_the_plain_ones():
    """The world model's subsets are drawn last: every other field equals the plain sampler's."""
    for kind in ("ad", "dpt"):
        plain = HistorySampler(_grid_batch(), kind, 8, readouts=3).sample(np.random.default_rng(5), 6)
        dicp = HistorySampler(_grid_batch(), kind, 8, readouts=3, world_model=True).sample(np.random.default_rng(5), 6)
        for k, v in plain.items():
            assert torch.equal(v, dicp[k]), (kind, k)
        subset = dicp["wm_steps" if kind == "ad" else "wm_prefixes"]
        assert len(subset) == 3 and torch.all(subset[1:] > subset[:-1]) and int(subset.max()) < 8


# ---- online == full pass ------------------------------------------------------------------------

@pytest.mark.parametrize("backbone", list(BACKBONES))
@pytest.mark.parametrize("kind", ["ad", "dpt"])
def test_online_queries_equal_the_full_pass(kind, backbone):
    """A query read out of the online state equals its row of the training pass (every backbone,
    a window on the attention ones), and the state is left as it was."""
    m = model(config(kind, backbone))
    b = HistorySampler(_grid_batch(lengths=(12, 12)), kind, 12, world_model=True).sample(np.random.default_rng(1), 2, h=np.array([0, 1]))
    cache = m.new_cache(2)
    if kind == "ad":
        b["prev_action"][:, 0], b["prev_reward"][:, 0] = -1, 0.0
        pol, r_out, o_out = m(b["obs"], b["prev_action"], b["prev_reward"], query_action=b["target"])
        for t in range(12):
            out = m.step(cache, b["obs"][:, t], b["prev_action"][:, t], b["prev_reward"][:, t])
            assert torch.allclose(out, pol[:, t], atol=1e-8)
            h = m.backbone.step(m.query_token(b["obs"][:, t], b["target"][:, t]), cache, commit=False)[:, 0]
            got = m.world_outputs(h)
            assert torch.allclose(got[0], r_out[:, t], atol=1e-8) and torch.allclose(got[1], o_out[:, t], atol=1e-8)
    else:
        pol, r_out, o_out = m(b["ctx_obs"], b["ctx_action"], b["ctx_reward"], b["ctx_next_obs"], b["query_obs"], world=True)
        for j in range(12):
            assert torch.allclose(m.readout(cache, b["query_obs"]), pol[:, j], atol=1e-8)
            h = m.backbone.step(m.query_token(b["ctx_obs"][:, j], b["ctx_action"][:, j]), cache, commit=False)[:, 0]
            got = m.world_outputs(h)
            assert torch.allclose(got[0], r_out[:, j], atol=1e-8) and torch.allclose(got[1], o_out[:, j], atol=1e-8)
            m.append(cache, b["ctx_obs"][:, j], b["ctx_action"][:, j], b["ctx_reward"][:, j], b["ctx_next_obs"][:, j])


def test_dpt_world_pass_with_n_plus_one_readouts_keeps_its_own_mask():
    """J + M = n + 1 readouts that are not the prefixes 0..n: the outputs equal those of the two sets apart."""
    m = model(config("dpt"))
    b = HistorySampler(_grid_batch(), "dpt", 8, world_model=True).sample(np.random.default_rng(2), 2)
    args = (b["ctx_obs"], b["ctx_action"], b["ctx_reward"], b["ctx_next_obs"], b["query_obs"])
    pol, r, o = m(*args, prefixes=torch.tensor([0, 3, 5, 8]), world=True, world_prefixes=torch.tensor([1, 2, 6, 7, 0]))
    _, r_all, o_all = m(*args, world=True)
    assert torch.allclose(r, r_all[:, [1, 2, 6, 7, 0]], atol=1e-8) and torch.allclose(o, o_all[:, [1, 2, 6, 7, 0]], atol=1e-8)
    assert torch.allclose(pol, m(*args)[:, [0, 3, 5, 8]], atol=1e-8)


# ---- the planner on a controlled world model ----------------------------------------------------

class StubImaginer:
    """Nodes whose observation is the action path so far; reward 1 for each step that follows
    ``target``, 0 elsewhere; fixed policy logits. Records the batch size of every query."""

    def __init__(self, logits: torch.Tensor, target: list[int], paths: torch.Tensor | None = None, log: list | None = None):
        self.logits, self.target = logits, target
        self.paths = torch.zeros(len(logits), 0, dtype=torch.long) if paths is None else paths
        self.n, self.log = len(logits), [] if log is None else log

    def fork(self, rows):
        return StubImaginer(self.logits[rows], self.target, self.paths[rows], self.log)

    def policy(self):
        return self.logits

    def imagine(self, actions):
        self.log.append(self.n)
        d = self.paths.shape[1]
        on_target = torch.ones(self.n, dtype=torch.bool) if d == 0 else torch.all(
            self.paths == torch.tensor(self.target[:d]), dim=1) if d <= len(self.target) else torch.zeros(self.n, dtype=torch.bool)
        hit = on_target & (actions == (self.target[d] if d < len(self.target) else -1))
        return hit.double(), torch.cat((self.paths, actions[:, None]), 1)

    def advance(self, actions, reward, next_obs):
        self.paths = next_obs


LOGITS = torch.tensor([[0.0, 1.0, 5.0, 2.0, 0.5]], dtype=torch.float64)  # greedy order 2, 3, 1, 4, 0


@pytest.mark.parametrize("order", ["policy", "root"])
def test_beam_search_finds_the_rewarded_path_within_width_and_depth(order):
    root = StubImaginer(LOGITS.repeat(2, 1), target=[0, 4, 1, 3])
    plan = beam_search(root, 5, torch.tensor([4, 4]), beam_width=10, rng=np.random.default_rng(0), greedy=True, order=order)
    assert plan.path.tolist() == [[0, 4, 1, 3]] * 2 and plan.action.tolist() == [0, 0]
    assert plan.score.tolist() == [4.0, 4.0]
    assert plan.beams == 10 and root.log == [2 * 5, 2 * 5 * 5, 2 * 10 * 5, 2 * 10 * 5]  # width 10, depth 4


def test_beam_search_without_reward_takes_the_policys_first_action():
    """The stable sort keeps the policy's order: greedy -> its argmax; sampled -> the first action
    of the order the policy's generator draws."""
    stub = StubImaginer(LOGITS.repeat(64, 1), target=[])  # never any reward
    plan = beam_search(stub, 5, torch.full((64,), 8), beam_width=10, rng=np.random.default_rng(0), greedy=True)
    assert plan.action.tolist() == [2] * 64 and plan.path.shape == (64, 8) and plan.score.abs().sum() == 0
    plan = beam_search(stub, 5, torch.full((64,), 8), beam_width=10, rng=np.random.default_rng(7), temperature=1.0)
    own = action_order(LOGITS.repeat(64, 1), np.random.default_rng(7), False, 1.0)[:, 0]
    assert torch.equal(plan.action, own) and len(set(own.tolist())) > 1  # sampled, and as the policy samples


def test_beam_search_stops_each_row_at_its_own_depth():
    """A reward beyond a row's depth (the episode's end) does not count for that row."""
    root = StubImaginer(LOGITS.repeat(2, 1), target=[4, 4, 4])
    plan = beam_search(root, 5, torch.tensor([3, 1]), beam_width=10, rng=np.random.default_rng(0), greedy=True)
    assert plan.action.tolist() == [4, 4] and plan.score.tolist() == [3.0, 1.0]
    root = StubImaginer(LOGITS.repeat(1, 1), target=[1, 4, 4])  # the first step is rewarded only along [1, ...]
    assert beam_search(root, 5, torch.tensor([1]), 10, np.random.default_rng(0), greedy=True).action.tolist() == [1]


def test_candidate_search_takes_the_candidate_of_highest_predicted_reward():
    class Box:
        n = 3

        def __init__(self, n=3):
            self.n = n

        def fork(self, rows):
            return type(self)(len(rows))

        def policy(self):
            return torch.zeros(self.n, 4)  # mean 0, log-std 0 in [-1, 1] units

        def imagine(self, actions):
            return -(actions - 0.5).pow(2).sum(-1), actions

    m = model(config(spaces=POINT, reward_values=[], head="gaussian"))
    got = candidate_search(Box(), m.head, 50, np.random.default_rng(0))
    assert got.shape == (3, 2) and torch.all((got - 0.5).abs() < 0.5)  # the best of 50 draws is near (0.5, 0.5)
    flat = type("Flat", (Box,), {"imagine": lambda self, a: (torch.zeros(len(a)), a)})()
    assert torch.equal(candidate_search(flat, m.head, 5, np.random.default_rng(0)), torch.zeros(3, 2))  # ties: the mean


# ---- the planner on real models: shared forks == copied forks == re-encoding -----------------------

def _rollout(m, kind, steps, n=3, seed=0):
    """A random rollout of ``steps`` steps: the online cache and the root nodes on shared forks
    (``state.fork``), on copied forks (``state.index``) and re-encoding the embedded tokens."""
    g = torch.Generator().manual_seed(seed)
    obs = torch.randint(0, 9, (n, steps + 1, 2), generator=g)
    act = torch.randint(0, 5, (n, steps), generator=g)
    rew = torch.randint(0, 2, (n, steps), generator=g).double()
    cache, tokens, out = m.new_cache(n), [], None
    if kind == "ad":
        pa, pr = first_action(m.config.action, n), torch.zeros(n, dtype=torch.float64)
        for t in range(steps):
            out = m.step(cache, obs[:, t], pa, pr)
            tokens.append(m.embed_tokens(obs[:, t, None], pa[:, None], pr[:, None]))
            pa, pr = act[:, t], rew[:, t]
        last = obs[:, steps - 1]
    else:
        for t in range(steps):
            m.append(cache, obs[:, t], act[:, t], rew[:, t], obs[:, t + 1])
            tokens.append(m.transition_token(obs[:, t], act[:, t], rew[:, t], obs[:, t + 1]))
        last = obs[:, steps]
    return (cache, CachedImaginer(m, cache, last, out), CachedImaginer(m, cache, last, out, share=False),
            ReencodeImaginer(m, torch.cat(tokens, 1), last))


# every backbone; the attention ones with windows 6 and 4 (a 14-step context wraps the ring, and a
# depth of 7 > 4 lets a node's own first imagined tokens leave the window too) and without one
PLANNER_CASES = [(b, w) for b in BACKBONES for w in ((6, 4, None) if b in ATTENTION else (None,))]


@pytest.mark.parametrize("backbone, window", PLANNER_CASES)
@pytest.mark.parametrize("kind", ["ad", "dpt"])
def test_planner_on_shared_forks_equals_copied_forks_and_reencoding(kind, backbone, window):
    """The beam search on forks that share the rollout's context chooses the same actions, paths
    and scores as on full copies of the state and as re-encoding every node's context."""
    m = model(config(kind, backbone, window=window, block_size=32))
    with torch.no_grad():
        m.world.reward.bias.copy_(torch.tensor([0.0, 0.02]))  # some rewards predicted, not all
    cache, shared, copied, naive = _rollout(m, kind, 14)
    depth = torch.tensor([7, 2, 5])
    scores = set()
    for greedy, order in ((True, "policy"), (False, "policy"), (False, "root")):
        a, b, c = (beam_search(root, 5, depth, 10, np.random.default_rng(3), greedy=greedy, order=order)
                   for root in (shared, copied, naive))
        for other in (b, c):
            assert torch.equal(a.action, other.action) and torch.equal(a.path, other.path)
            assert torch.equal(a.score, other.score)
        scores.update(a.score.tolist())
    assert len(scores) > 1  # the world model tells paths apart: the equality is not between constant plans
    assert cache.pos == 14  # the search only forked the rollout's state
    # along one imagined path of 7 steps, forked twice on the way, the policy outputs agree to rounding
    path = torch.randint(0, 5, (7, 6), generator=torch.Generator().manual_seed(4))  # (depth, nodes) actions
    walks = [_walk(root, path) for root in (shared, copied, naive)]
    for other in walks[1:]:
        for got, want in zip(walks[0], other):
            assert torch.allclose(got, want, atol=1e-10)


def _walk(root, path):
    """The policy outputs of nodes that follow ``path`` (depth, n) from repeated and reordered rows
    of ``root`` (re-forked every two steps), each step taking the world model's predicted outcome."""
    node, out = root.fork(torch.tensor([2, 0, 1, 2, 0, 1])), []
    for d, actions in enumerate(path):
        out.append(node.policy())
        reward, next_obs = node.imagine(actions)
        node.advance(actions, reward, next_obs)
        if d % 2:
            node = node.fork(torch.tensor([1, 0, 3, 2, 5, 4]))
    return out + [node.policy()]


def test_forked_candidate_search_equals_reencoding_on_box_actions():
    m = model(config(spaces=POINT, reward_values=[], head="gaussian"))
    g = torch.Generator().manual_seed(0)
    obs, act, rew = torch.randn(2, 9, 2, generator=g), torch.rand(2, 8, 2, generator=g) * 2 - 1, torch.randn(2, 8, generator=g)
    cache, tokens = m.new_cache(2), []
    pa, pr = first_action(m.config.action, 2).double(), torch.zeros(2, dtype=torch.float64)
    for t in range(8):
        out = m.step(cache, obs[:, t].double(), pa, pr)
        tokens.append(m.embed_tokens(obs[:, t, None].double(), pa[:, None], pr[:, None]))
        pa, pr = act[:, t].double(), rew[:, t].double()
    a = candidate_search(CachedImaginer(m, cache, obs[:, 7].double(), out), m.head, 10, np.random.default_rng(1))
    b = candidate_search(ReencodeImaginer(m, torch.cat(tokens, 1), obs[:, 7].double()), m.head, 10, np.random.default_rng(1))
    assert torch.allclose(a, b)


# ---- config and commands ------------------------------------------------------------------------

def test_model_config_checks_the_dicp_fields():
    with pytest.raises(ValueError, match="reward_values"):
        config(reward_values=[1.0])
    with pytest.raises(ValueError, match="world_model_coef"):
        config(world_model_coef=-1.0)
    cfg = config()
    assert cfg.method == "dicp_ad" and ModelConfig.from_dict(cfg.to_dict()) == cfg
    old = {k: v for k, v in cfg.to_dict().items() if k not in ("world_model", "world_model_coef", "reward_values")}
    assert ModelConfig.from_dict(old).method == "ad"  # a model.json from before DICP loads as it was


def test_dicp_ad_run_then_eval_with_and_without_planning(tmp_path, capsys):
    """DICP-AD end to end on Dark Room: a tiny dataset, a few training steps, evaluation with the
    planner (key dicp_ad), the same checkpoint with its policy alone (dicp_ad_noplan)."""
    data, run = tmp_path / "data", tmp_path / "run"
    common = ["env.id=icrl/DarkRoom-v0", "collect.algorithms=ppo"]
    assert main(["collect", "--quiet", "--out", str(data), *common, "collect.n_tasks=2", "collect.episodes=4",
                 "collect.histories_per_shard=2"]) == 0
    code = main(["run", "--quiet", "--config", str(ROOT / "configs/darkroom_dicp_ad.yaml"), "--out", str(run), "seeds=[]",
                 f"data.dataset={data}", "model.n_layer=1", "model.n_head=2", "model.n_embd=16", "model.window=10",
                 "data.seq_len=40", "data.episode_stride=1", "data.readouts=8", "train.steps=3", "train.batch_size=2",
                 "train.warmup_steps=1", "train.eval_every=0", "eval.episodes=2", "eval.baselines=random",
                 "eval.beam_width=3", "eval.plan_depth=4"])
    assert code == 0, capsys.readouterr().err
    results = json.loads((run / "results.json").read_text())
    jsonschema.validate(results, SCHEMA)
    assert "dicp_ad" in results["summary"] and len(results["curves"]["dicp_ad"]["mean"]) == 2
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert any("train/loss_next_obs" in r and "train/loss_reward" in r for r in rows)
    out = tmp_path / "noplan"
    assert main(["eval", "--quiet", "--checkpoint", str(run / "checkpoint"), "--out", str(out), "eval.planning=false",
                 "eval.episodes=2", "eval.baselines=random"]) == 0
    again = json.loads((out / "results.json").read_text())
    jsonschema.validate(again, SCHEMA)
    assert "dicp_ad_noplan" in again["summary"] and "dicp_ad" not in again["summary"]


def test_planning_needs_room_to_imagine():
    """A full-context model has no room for imagined steps once its context is full: a clear error."""
    from icrl.config import ConfigError, load_config
    from icrl.evaluation import check_model_fits

    cfg = load_config(ROOT / "configs/darkroom_dicp_ad.yaml", ["eval.episodes=2"])
    mcfg = config(window=None, block_size=64)
    with pytest.raises(ConfigError, match="eval.planning"):
        check_model_fits(cfg, mcfg)
    check_model_fits(load_config(ROOT / "configs/darkroom_dicp_ad.yaml", ["eval.episodes=2", "eval.planning=false"]), mcfg)
