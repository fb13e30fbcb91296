"""AlphaZero: game rules against brute force, MCTS on tic-tac-toe (finds the win, blocks the loss, never loses to a
random player in 100 games), minimax as a perfect tic-tac-toe player, the loss against its formula, self-play
targets, and a short training run.

References: a brute-force four-in-a-row scan over a 6x7 array; the full game tree of tic-tac-toe (minimax to
depth 9 is exact, so it never loses); eq. 1 of Silver et al. 2018 written out in NumPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tricklab.errors import ConfigError
from tricklab.rl.metrics import ALPHAZERO_METRICS
from tricklab.rl.alphazero import (MCTS, AlphaZeroConfig, ConnectFour, Minimax, Node, TicTacToe, alphazero_loss,
                                   choose_action, run_alphazero, uniform_rollout_evaluator)
from tricklab.rl.alphazero.alphazero import evaluate_against, play_match, self_play


def brute_force_four(board: np.ndarray) -> bool:
    rows, cols = board.shape
    for r in range(rows):
        for c in range(cols):
            for dr, dc in ((0, 1), (1, 0), (1, 1), (1, -1)):
                cells = [(r + k * dr, c + k * dc) for k in range(4)]
                if all(0 <= rr < rows and 0 <= cc < cols and board[rr, cc] for rr, cc in cells):
                    return True
    return False


def test_connect_four_rules_match_brute_force() -> None:
    game, rng = ConnectFour(), np.random.default_rng(0)
    for _ in range(60):
        s = game.initial()
        board = np.zeros((6, 7), dtype=int)  # row 0 = bottom; 1 / 2 = first / second player
        heights = [0] * 7
        while s[3] is None:
            assert game.legal(s) == [c for c in range(7) if heights[c] < 6]
            c = int(rng.choice(game.legal(s)))
            player = 1 + s[2] % 2
            board[heights[c], c] = player
            heights[c] += 1
            s = game.play(s, c)
            won = brute_force_four(board == player)
            assert (s[3] == -1.0) == won
            if not won:
                assert (s[3] == 0.0) == (s[2] == 42)
        planes = game.encode([s])[0]  # mover's stones, opponent's stones; row 0 of the planes is the top
        mover = 1 + s[2] % 2
        np.testing.assert_array_equal(planes[0][::-1], (board == mover).astype(np.float32))
        np.testing.assert_array_equal(planes[1][::-1], ((board != mover) & (board > 0)).astype(np.float32))


def ttt_state(cells: str) -> tuple:
    """A tic-tac-toe state from 9 characters (X moves first; the player to move follows from the counts)."""
    game = TicTacToe()
    xs = [i for i, ch in enumerate(cells) if ch == "X"]
    os_ = [i for i, ch in enumerate(cells) if ch == "O"]
    s = game.initial()
    for k in range(len(xs) + len(os_)):
        s = game.play(s, xs[k // 2] if k % 2 == 0 else os_[k // 2])
    return s


@pytest.mark.parametrize("cells, best", [
    ("XX.OO....", 2),   # X to move wins at 2
    ("OO.XX.X..", 2),   # O to move wins at 2 (also has to: X threatens 5)
    ("X..XO....", 6),   # O to move must block column 0 at 6
])
def test_mcts_finds_the_winning_or_saving_move(cells: str, best: int) -> None:
    game = TicTacToe()
    rng = np.random.default_rng(0)
    mcts = MCTS(game, uniform_rollout_evaluator(game, rng), simulations=300)
    root = Node(ttt_state(cells))
    mcts.search([root])
    assert choose_action(root, 0.0, rng) == best, root.visit_distribution(9).round(2)


def test_mcts_never_loses_to_random_in_100_games() -> None:
    game = TicTacToe()
    rng = np.random.default_rng(1)
    mcts = MCTS(game, uniform_rollout_evaluator(game, rng), simulations=200)

    def mcts_player(s):
        root = Node(s)
        mcts.search([root])
        return choose_action(root, 0.0, rng)

    def random_player(s):
        return int(rng.choice(game.legal(s)))

    res = evaluate_against(game, mcts_player, random_player, games=100, opening_moves=0, rng=rng)
    assert res["losses"] == 0.0, res
    assert res["wins"] > 0.8, res


def test_minimax_plays_tic_tac_toe_perfectly() -> None:
    game, rng = TicTacToe(), np.random.default_rng(2)
    perfect = Minimax(game, depth=9)

    def player(s):
        return perfect.choose(s, rng)

    assert play_match(game, player, player, []) == 0.5  # perfect play draws
    res = evaluate_against(game, player, lambda s: int(rng.choice(game.legal(s))), 20, 0, rng)
    assert res["losses"] == 0.0
    # the value of the empty board is a draw; of "XX.OO....", X to move: a win
    assert max(perfect.values(game.initial()).values()) == 0.0
    assert perfect.values(ttt_state("XX.OO...."))[2] > 0


def test_minimax_takes_a_connect_four_win_and_blocks() -> None:
    game, rng = ConnectFour(), np.random.default_rng(3)
    s = game.initial()
    for c in (0, 6, 0, 6, 0):  # X has three in column 0; O to move must block at 0
        s = game.play(s, c)
    assert Minimax(game, 2).choose(s, rng) == 0
    s = game.play(s, 5)  # O plays elsewhere; X to move wins at 0
    assert Minimax(game, 1).choose(s, rng) == 0


def test_alphazero_loss_matches_formula() -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 7, generator=g, dtype=torch.float64, requires_grad=True)
    v = torch.tanh(torch.randn(8, generator=g, dtype=torch.float64)).requires_grad_(True)
    pi = torch.softmax(torch.randn(8, 7, generator=g, dtype=torch.float64), -1)
    z = torch.tensor([1, -1, 0, 1, 1, -1, 0, 0], dtype=torch.float64)
    vl, pl = alphazero_loss(logits, v, pi, z)
    L, P, Z, V = logits.detach().numpy(), pi.numpy(), z.numpy(), v.detach().numpy()
    logp = L - np.log(np.exp(L).sum(1, keepdims=True))
    assert vl.item() == pytest.approx(np.mean((Z - V) ** 2), rel=1e-12)
    assert pl.item() == pytest.approx(np.mean(-(P * logp).sum(1)), rel=1e-12)
    gl, gv = torch.autograd.grad(vl + pl, [logits, v])
    softmax = np.exp(logp)
    np.testing.assert_allclose(gl.numpy(), (softmax * P.sum(1, keepdims=True) - P) / 8, rtol=1e-10)
    np.testing.assert_allclose(gv.numpy(), -2 * (Z - V) / 8, rtol=1e-10)


def test_self_play_targets_alternate_with_the_outcome() -> None:
    game, rng = TicTacToe(), np.random.default_rng(4)
    mcts = MCTS(game, uniform_rollout_evaluator(game, rng), simulations=20)
    data, lengths = self_play(game, mcts, n_games=1, temperature_moves=9, rng=rng)
    assert len(data) == 8 * lengths[0]  # every position with its 8 symmetries
    z = np.array([d[2] for d in data]).reshape(lengths[0], 8)
    assert (z == z[:, :1]).all()  # symmetries share the outcome
    if z[0, 0] != 0:  # a decisive game: the players' outcomes alternate move by move
        assert (z[1:, 0] == -z[:-1, 0]).all()
    for planes, pi, _ in data:
        assert pi.sum() == pytest.approx(1.0) and (pi[planes[0].reshape(-1) + planes[1].reshape(-1) > 0] == 0).all()


def test_alphazero_config_errors() -> None:
    with pytest.raises(ConfigError, match="game"):
        AlphaZeroConfig(game="chess")
    with pytest.raises(ConfigError, match="even"):
        AlphaZeroConfig(eval_games=3)
    with pytest.raises(ConfigError, match="simulations"):
        AlphaZeroConfig(simulations=0)


@pytest.mark.slow
def test_alphazero_learns_tic_tac_toe() -> None:
    cfg = AlphaZeroConfig(game="tictactoe", self_play_games=160, games_per_iteration=40, simulations=30,
                          channels=32, blocks=1, train_steps=100, batch_size=128, temperature_moves=3, eval_every=0,
                          eval_simulations=30, minimax_depth=9, final_minimax_depths=(9,), final_eval_games=20,
                          opening_moves=0)
    res = run_alphazero(cfg, seed=0)
    assert res.metrics["win_rate_random"] >= 0.85, res.metrics
    assert res.metrics["loss_rate_minimax"] <= 0.5, res.metrics  # against perfect play the best is a draw
    assert set(res.metrics) == {m.key for m in ALPHAZERO_METRICS}


class Interrupt(Exception):
    pass


def test_resumed_alphazero_run_equals_uninterrupted(tmp_path) -> None:
    # reference: the same run without interruption (network, replay, RNGs and history all come from the checkpoint)
    cfg = AlphaZeroConfig(game="tictactoe", self_play_games=12, games_per_iteration=4, simulations=6, channels=8,
                          blocks=1, train_steps=3, batch_size=16, eval_every=0, eval_simulations=4,
                          minimax_depth=1, final_minimax_depths=(1,), final_eval_games=2, opening_moves=0,
                          checkpoint_every=1)
    full = run_alphazero(cfg, seed=3, run_dir=tmp_path / "full")

    def stop(row):
        if row["step"] == 2:
            raise Interrupt  # the checkpoint of iteration 2 is written before progress is called

    with pytest.raises(Interrupt):
        run_alphazero(cfg, seed=3, run_dir=tmp_path / "cut", progress=stop)
    seen: list[int] = []
    resumed = run_alphazero(cfg, seed=3, run_dir=tmp_path / "cut", resume=True,
                            progress=lambda row: seen.append(row["step"]))
    assert seen == [3]  # it continued from the checkpoint, it did not start over
    strip = [{k: v for k, v in r.items() if k != "seconds"} for r in full.history]
    assert [{k: v for k, v in r.items() if k != "seconds"} for r in resumed.history] == strip
    assert {k: v for k, v in resumed.metrics.items() if k != "train_seconds"} == \
        {k: v for k, v in full.metrics.items() if k != "train_seconds"}
    assert resumed.extras["final_evaluation"] == full.extras["final_evaluation"]
