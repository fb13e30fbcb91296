"""AlphaZero (Silver et al. 2018): self-play with MCTS guided by a policy-value network, trained on
(state, visit distribution, outcome).

Loss per position (eq. 1): l = (z - v)^2 - pi^T log p, plus L2 on the weights (here AdamW's decoupled weight decay),
where pi is the root's visit distribution and z in {-1, 0, 1} the final outcome for the player to move.

Self-play plays ``games_per_iteration`` games in parallel (their searches batched into one network call per
simulation), with root Dirichlet noise and moves sampled in proportion to visits for the first
``temperature_moves`` moves, then the most visited. The tree below the chosen move is kept for the next move.
Positions enter a replay window with their board symmetries; each iteration trains ``train_steps`` minibatches.

Evaluation: the network with MCTS (no noise, most-visited move) against a random player and depth-limited minimax
(:mod:`tricklab.rl.alphazero.minimax`), half the games as the first player, each game from a random opening of
``opening_moves`` plies (the same openings for both colours) so the games differ; the score counts a win 1, a
draw 1/2.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from tricklab.errors import ConfigError
from tricklab.rl.alphazero.games import GAMES, State, make_game
from tricklab.rl.alphazero.mcts import MCTS, Evaluator, Node, choose_action
from tricklab.rl.alphazero.minimax import Minimax
from tricklab.rl.common import (Progress, check_positive, check_unit, load_run_checkpoint, numpy_rng_from_state,
                                numpy_rng_state, save_run_checkpoint)
from tricklab.rl.metrics import ParadigmResult
from tricklab.rl.networks import seeded


@dataclass
class AlphaZeroConfig:
    """AlphaZero settings; the budget is ``self_play_games`` (episodes). Defaults suit Connect Four on one core."""

    game: str = "connect4"
    self_play_games: int = 480
    games_per_iteration: int = 40
    simulations: int = 50
    c_puct: float = 1.5
    dirichlet_alpha: float = 1.0
    dirichlet_frac: float = 0.25
    temperature_moves: int = 8
    channels: int = 32
    blocks: int = 2
    lr: float = 1e-3
    weight_decay: float = 1e-4
    batch_size: int = 256
    train_steps: int = 100
    replay_positions: int = 40_000
    eval_every: int = 4
    eval_games: int = 20
    eval_simulations: int = 50
    minimax_depth: int = 2
    final_minimax_depths: tuple[int, ...] = (1, 2, 3)
    final_eval_games: int = 30
    opening_moves: int = 2
    checkpoint_every: int = 0

    def __post_init__(self) -> None:
        if self.game not in GAMES:
            raise ConfigError(f"game={self.game!r} is unknown; choose one of {', '.join(GAMES)}")
        for name in ("self_play_games", "games_per_iteration", "simulations", "channels", "blocks", "batch_size",
                     "train_steps", "replay_positions", "eval_games", "eval_simulations", "minimax_depth",
                     "final_eval_games"):
            check_positive(name, getattr(self, name), integer=True)
        for name in ("temperature_moves", "eval_every", "opening_moves", "checkpoint_every"):
            check_positive(name, getattr(self, name), integer=True, allow_zero=True)
        for name in ("c_puct", "dirichlet_alpha", "lr"):
            check_positive(name, getattr(self, name))
        check_positive("weight_decay", self.weight_decay, allow_zero=True)
        check_unit("dirichlet_frac", self.dirichlet_frac)
        if self.eval_games % 2 or self.final_eval_games % 2:
            raise ConfigError(f"eval_games={self.eval_games} and final_eval_games={self.final_eval_games} must be "
                              f"even: half the games are played as the first player")
        self.final_minimax_depths = tuple(self.final_minimax_depths)
        if any(d < 1 for d in self.final_minimax_depths):
            raise ConfigError(f"final_minimax_depths must be >= 1, got {self.final_minimax_depths}")


class PolicyValueNet(nn.Module):
    """Conv torso (3x3, BatchNorm, ReLU, residual blocks) with a policy head (logits over moves) and a value head
    (tanh scalar), as in AlphaZero at a small scale."""

    def __init__(self, rows: int, cols: int, actions: int, channels: int, blocks: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(2, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels),
                                  nn.ReLU())
        self.blocks = nn.ModuleList(nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels), nn.ReLU(),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False), nn.BatchNorm2d(channels))
            for _ in range(blocks))
        self.policy = nn.Sequential(nn.Conv2d(channels, 2, 1, bias=False), nn.BatchNorm2d(2), nn.ReLU(),
                                    nn.Flatten(), nn.Linear(2 * rows * cols, actions))
        self.value = nn.Sequential(nn.Conv2d(channels, 1, 1, bias=False), nn.BatchNorm2d(1), nn.ReLU(),
                                   nn.Flatten(), nn.Linear(rows * cols, 64), nn.ReLU(), nn.Linear(64, 1), nn.Tanh())

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.stem(x)
        for block in self.blocks:
            h = F.relu(h + block(h))
        return self.policy(h), self.value(h).squeeze(-1)


def alphazero_loss(logits: torch.Tensor, values: torch.Tensor, pi: torch.Tensor,
                   z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(value loss (z - v)^2, policy loss -pi^T log p), each averaged over the batch."""
    return (z - values).pow(2).mean(), -(pi * logits.log_softmax(-1)).sum(-1).mean()


def net_evaluator(game, net: PolicyValueNet) -> Evaluator:
    """Priors (softmax over legal moves) and values from the network, in eval mode, one batch per call."""

    def evaluate(states: list[State]) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            logits, v = net(torch.from_numpy(game.encode(states)))
        mask = torch.from_numpy(np.stack([game.legal_mask(s) for s in states]))
        priors = logits.masked_fill(~mask, float("-inf")).softmax(-1)
        return priors.numpy(), v.numpy()

    return evaluate


def self_play(game, mcts: MCTS, n_games: int, temperature_moves: int, rng: np.random.Generator,
              ) -> tuple[list[tuple[np.ndarray, np.ndarray, float]], list[int]]:
    """Play ``n_games`` games at once; returns (planes, pi, z) per position and each game's length."""
    roots = [Node(game.initial()) for _ in range(n_games)]
    records: list[list[tuple[np.ndarray, np.ndarray, int]]] = [[] for _ in range(n_games)]
    outcomes: list[tuple[float, int] | None] = [None] * n_games
    lengths = [0] * n_games
    while any(o is None for o in outcomes):
        live = [g for g in range(n_games) if outcomes[g] is None]
        mcts.search([roots[g] for g in live], rng, noise=True)
        for g in live:
            root = roots[g]
            s = root.state
            pi = root.visit_distribution(game.action_size)
            records[g].append((game.encode([s])[0], pi, s[2] % 2))
            a = choose_action(root, 1.0 if s[2] < temperature_moves else 0.0, rng)
            child = root.children[a]
            child.noisy_P = None  # its priors get fresh noise when it becomes the root
            roots[g] = child
            if child.state[3] is not None:
                # result is for the player to move at the end; store (result, that player's parity)
                outcomes[g] = (child.state[3], child.state[2] % 2)
                lengths[g] = child.state[2]
    data = []
    for g in range(n_games):
        result, parity = outcomes[g]
        for planes, pi, who in records[g]:
            z = result if who == parity else -result
            for sp, spi in game.symmetries(planes, pi):
                data.append((sp, spi, float(z)))
    return data, lengths


def play_match(game, first: Any, second: Any, opening: list[int]) -> float:
    """One game from ``opening``; each player is ``f(state) -> action``. Returns the first player's score."""
    s = game.initial()
    for a in opening:
        s = game.play(s, a)
    players = (first, second)
    while s[3] is None:
        s = game.play(s, players[s[2] % 2](s))
    # s[3] is for the player to move at the end (parity s[2] % 2); the first player has parity 0
    value_first = s[3] if s[2] % 2 == 0 else -s[3]
    return (value_first + 1.0) / 2.0


def random_opening(game, plies: int, rng: np.random.Generator) -> list[int]:
    while True:
        s, moves = game.initial(), []
        for _ in range(plies):
            a = int(rng.choice(game.legal(s)))
            moves.append(a)
            s = game.play(s, a)
            if s[3] is not None:
                break
        if s[3] is None:
            return moves


def mcts_player(game, evaluator: Evaluator, simulations: int, c_puct: float, rng: np.random.Generator):
    mcts = MCTS(game, evaluator, simulations, c_puct)

    def play(s: State) -> int:
        root = Node(s)
        mcts.search([root])
        return choose_action(root, 0.0, rng)

    return play


def evaluate_against(game, player, opponent, games: int, opening_moves: int,
                     rng: np.random.Generator) -> dict[str, float]:
    """Score, win, draw and loss rates of ``player`` over ``games`` games (half as first player)."""
    scores = []
    for _ in range(games // 2):
        opening = random_opening(game, opening_moves, rng)
        scores.append(play_match(game, player, opponent, opening))
        scores.append(1.0 - play_match(game, opponent, player, opening))
    s = np.array(scores)
    return {"score": float(s.mean()), "wins": float((s == 1).mean()), "draws": float((s == 0.5).mean()),
            "losses": float((s == 0).mean())}


class AlphaZero:
    def __init__(self, config: AlphaZeroConfig, seed: int) -> None:
        self.config = c = config
        self.game = make_game(c.game)
        with seeded(seed):
            self.net = PolicyValueNet(self.game.rows, self.game.cols, self.game.action_size, c.channels, c.blocks)
        self.opt = torch.optim.AdamW(self.net.parameters(), lr=c.lr, weight_decay=c.weight_decay, foreach=True)
        self.rng = np.random.default_rng(seed + 104729)
        self.eval_rng_seed = seed + 1_000_003
        self.gen = torch.Generator().manual_seed(seed + 7919)
        self.planes = np.zeros((0, 2, self.game.rows, self.game.cols), dtype=np.float32)
        self.pis = np.zeros((0, self.game.action_size), dtype=np.float32)
        self.zs = np.zeros(0, dtype=np.float32)
        self.games = 0
        self.iteration = 0

    def evaluator(self) -> Evaluator:
        self.net.eval()
        return net_evaluator(self.game, self.net)

    def iterate(self) -> dict[str, float]:
        c = self.config
        n = min(c.games_per_iteration, c.self_play_games - self.games)
        mcts = MCTS(self.game, self.evaluator(), c.simulations, c.c_puct, c.dirichlet_alpha, c.dirichlet_frac)
        data, lengths = self_play(self.game, mcts, n, c.temperature_moves, self.rng)
        self.games += n
        self.planes = np.concatenate([self.planes, np.stack([d[0] for d in data])])[-c.replay_positions:]
        self.pis = np.concatenate([self.pis, np.stack([d[1] for d in data]).astype(np.float32)])[
            -c.replay_positions:]
        self.zs = np.concatenate([self.zs, np.array([d[2] for d in data], dtype=np.float32)])[-c.replay_positions:]
        self.net.train()
        vl, pl = [], []
        size = len(self.zs)
        for _ in range(c.train_steps):
            idx = torch.randint(0, size, (min(c.batch_size, size),), generator=self.gen)
            logits, v = self.net(torch.from_numpy(self.planes[idx.numpy()]))
            v_loss, p_loss = alphazero_loss(logits, v, torch.from_numpy(self.pis[idx.numpy()]),
                                            torch.from_numpy(self.zs[idx.numpy()]))
            self.opt.zero_grad(set_to_none=True)
            (v_loss + p_loss).backward()
            self.opt.step()
            vl.append(v_loss.item())
            pl.append(p_loss.item())
        self.net.eval()
        self.iteration += 1
        return {"value_loss": float(np.mean(vl)), "policy_loss": float(np.mean(pl)),
                "game_length": float(np.mean(lengths)), "replay": float(size)}

    def evaluate(self, opponent: str, depth: int, games: int, seed_offset: int) -> dict[str, float]:
        c = self.config
        rng = np.random.default_rng(self.eval_rng_seed + seed_offset)
        me = mcts_player(self.game, self.evaluator(), c.eval_simulations, c.c_puct, rng)
        if opponent == "random":
            def other(s: State) -> int:
                return int(rng.choice(self.game.legal(s)))
        else:
            mm = Minimax(self.game, depth)

            def other(s: State) -> int:
                return mm.choose(s, rng)
        return evaluate_against(self.game, me, other, games, c.opening_moves, rng)

    def state_dict(self) -> dict[str, Any]:
        return {"net": self.net.state_dict(), "opt": self.opt.state_dict(), "rng": numpy_rng_state(self.rng),
                "gen": self.gen.get_state(), "planes": self.planes, "pis": self.pis, "zs": self.zs,
                "games": self.games, "iteration": self.iteration}

    def load_state_dict(self, s: dict[str, Any]) -> None:
        self.net.load_state_dict(s["net"])
        self.opt.load_state_dict(s["opt"])
        self.rng = numpy_rng_from_state(s["rng"])
        self.gen.set_state(s["gen"])
        self.planes, self.pis, self.zs = s["planes"], s["pis"], s["zs"]
        self.games, self.iteration = int(s["games"]), int(s["iteration"])


def run_alphazero(config: AlphaZeroConfig, *, seed: int, run_dir: Path | None = None,
                  progress: Progress | None = None, resume: bool = False) -> ParadigmResult:
    """Self-play and train until ``self_play_games`` games; evaluate against minimax every ``eval_every``
    iterations (the learning curve) and, at the end, against a random player and minimax of each depth in
    ``final_minimax_depths``. Metrics: the score against random and against ``minimax_depth``."""
    c = config
    agent = AlphaZero(c, seed)
    history: list[dict[str, Any]] = []
    train_seconds = 0.0
    if resume:
        state = load_run_checkpoint(run_dir, c)
        if state is not None:
            agent.load_state_dict(state["agent"])
            history, train_seconds = state["history"], float(state["train_seconds"])
    while agent.games < c.self_play_games:
        t0 = time.perf_counter()
        info = agent.iterate()
        train_seconds += time.perf_counter() - t0
        row: dict[str, Any] = {"step": agent.iteration, "games": agent.games, "seconds": train_seconds, **info}
        if c.eval_every and agent.iteration % c.eval_every == 0:
            res = agent.evaluate("minimax", c.minimax_depth, c.eval_games, seed_offset=agent.iteration)
            row["win_rate_minimax"] = res["score"]
        history.append(row)
        if run_dir is not None and c.checkpoint_every and (agent.iteration % c.checkpoint_every == 0
                                                           or agent.games >= c.self_play_games):
            save_run_checkpoint(run_dir, agent.iteration, c, {"agent": agent.state_dict(), "history": history,
                                                              "train_seconds": train_seconds})
        if progress is not None:
            progress(row)
    final: dict[str, Any] = {"random": agent.evaluate("random", 0, c.final_eval_games, seed_offset=10**6)}
    for d in c.final_minimax_depths:
        final[f"minimax{d}"] = agent.evaluate("minimax", d, c.final_eval_games, seed_offset=10**6 + d)
    main = final.get(f"minimax{c.minimax_depth}") or agent.evaluate("minimax", c.minimax_depth,
                                                                     c.final_eval_games, seed_offset=10**6 + 99)
    if history and "win_rate_minimax" not in history[-1]:
        history[-1]["win_rate_minimax"] = main["score"]
    metrics = {"win_rate_random": final["random"]["score"], "win_rate_minimax": main["score"],
               "loss_rate_minimax": main["losses"], "self_play_games": float(agent.games),
               "train_seconds": train_seconds}
    return ParadigmResult(metrics=metrics, history=history,
                          extras={"algorithm": "alphazero", "game": c.game, "final_evaluation": final,
                                  "minimax_depth": c.minimax_depth})
