"""Depth-limited negamax with alpha-beta pruning: the fixed opponent AlphaZero is measured against.

Values are for the player to move. A won position is worth +-(WIN + remaining depth) so faster wins (and slower
losses) are preferred. At the depth limit, tic-tac-toe scores 0 (its full tree is small enough to search to the
end: depth 9 is perfect play); Connect Four scores every four-cell window that only one side occupies,
(1, 4, 32) points for that side's (1, 2, 3) stones, plus 3 per stone in the centre column: a standard hand-made
evaluation. Ties between equally good moves are broken at random (from the caller's generator), so repeated games
differ.
"""

from __future__ import annotations

import math

import numpy as np

from tricklab.rl.alphazero.games import ConnectFour, State, TicTacToe

WIN = 100_000.0
_WINDOW_SCORE = (0.0, 1.0, 4.0, 32.0, 0.0)


class Minimax:
    def __init__(self, game: TicTacToe | ConnectFour, depth: int) -> None:
        if depth < 1:
            raise ValueError(f"minimax depth must be >= 1, got {depth}")
        self.game, self.depth = game, depth
        if isinstance(game, ConnectFour):
            self.windows = game.windows()
            self.center = sum(1 << (3 * 7 + r) for r in range(6))
            # centre-out move order makes alpha-beta prune far more
            self.order = [3, 2, 4, 1, 5, 0, 6]
        else:
            self.windows = []
            self.center = 0
            self.order = [4, 0, 2, 6, 8, 1, 3, 5, 7]

    def heuristic(self, s: State) -> float:
        if not self.windows:
            return 0.0
        me, other = s[0], s[1]
        score = 3.0 * ((me & self.center).bit_count() - (other & self.center).bit_count())
        for w in self.windows:
            a, b = (me & w).bit_count(), (other & w).bit_count()
            if b == 0:
                score += _WINDOW_SCORE[a]
            elif a == 0:
                score -= _WINDOW_SCORE[b]
        return score

    def negamax(self, s: State, depth: int, alpha: float, beta: float) -> float:
        if s[3] is not None:
            return s[3] * (WIN + depth) if s[3] != 0 else 0.0
        if depth == 0:
            return self.heuristic(s)
        legal = set(self.game.legal(s))
        best = -math.inf
        for a in self.order:
            if a not in legal:
                continue
            v = -self.negamax(self.game.play(s, a), depth - 1, -beta, -alpha)
            if v > best:
                best = v
            alpha = max(alpha, v)
            if alpha >= beta:
                break
        return best

    def values(self, s: State) -> dict[int, float]:
        """Exact depth-limited value of every legal move (full window: no pruning at the root)."""
        return {a: -self.negamax(self.game.play(s, a), self.depth - 1, -math.inf, math.inf)
                for a in self.game.legal(s)}

    def choose(self, s: State, rng: np.random.Generator) -> int:
        vals = self.values(s)
        best = max(vals.values())
        ties = sorted(a for a, v in vals.items() if v == best)
        return int(ties[rng.integers(len(ties))])
