"""Two-player board games as immutable states on bitboards: tic-tac-toe (tests) and Connect Four (evidence).

A state is a tuple ``(me, other, moves, result)`` seen from the player to move: ``me`` and ``other`` are bit masks of
that player's and the opponent's stones, ``moves`` the number of stones on the board, and ``result`` the game's
outcome for the player to move when it is over (-1: the opponent just won; 0: draw) or None while it goes on.
Playing a move swaps the perspective, so every value in the search is "for the player to move".

Connect Four uses the usual column-major layout with one guard bit per column (7 columns x 7 bits, the top bit of
each column always 0), so "four in a row" is a few shifts and ands per direction; the guard row keeps shifted
lines from wrapping into the next column.
"""

from __future__ import annotations

from typing import Any

import numpy as np

State = tuple[int, int, int, float | None]


class TicTacToe:
    name = "tictactoe"
    rows, cols = 3, 3
    action_size = 9
    LINES = tuple(sum(1 << c for c in line) for line in (
        (0, 1, 2), (3, 4, 5), (6, 7, 8), (0, 3, 6), (1, 4, 7), (2, 5, 8), (0, 4, 8), (2, 4, 6)))
    FULL = (1 << 9) - 1
    _BITS = np.arange(9, dtype=np.int64).reshape(3, 3)

    def initial(self) -> State:
        return (0, 0, 0, None)

    def legal(self, s: State) -> list[int]:
        taken = s[0] | s[1]
        return [a for a in range(9) if not taken >> a & 1]

    def legal_mask(self, s: State) -> np.ndarray:
        taken = s[0] | s[1]
        return np.array([not taken >> a & 1 for a in range(9)])

    def play(self, s: State, a: int) -> State:
        me, other, moves, _ = s
        mine = me | (1 << a)
        result: float | None = None
        if any(mine & line == line for line in self.LINES):
            result = -1.0  # the player who now moves has lost
        elif (mine | other) == self.FULL:
            result = 0.0
        return (other, mine, moves + 1, result)

    def encode(self, states: list[State]) -> np.ndarray:
        """[B, 2, 3, 3] float32 planes: the mover's stones, the opponent's."""
        bb = np.array([[s[0], s[1]] for s in states], dtype=np.int64)[:, :, None, None]
        return ((bb >> self._BITS) & 1).astype(np.float32)

    def symmetries(self, planes: np.ndarray, policy: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """The 8 symmetries of the square, applied to planes [C, 3, 3] and the policy [9] alike."""
        out = []
        p = policy.reshape(3, 3)
        for k in range(4):
            for flip in (False, True):
                x, q = np.rot90(planes, k, axes=(1, 2)), np.rot90(p, k)
                if flip:
                    x, q = x[:, :, ::-1], q[:, ::-1]
                out.append((np.ascontiguousarray(x), np.ascontiguousarray(q).reshape(-1)))
        return out

    def render(self, s: State) -> str:
        # X is the player to move when moves is even
        x, o = (s[0], s[1]) if s[2] % 2 == 0 else (s[1], s[0])
        return "\n".join("".join("X" if x >> (3 * r + c) & 1 else "O" if o >> (3 * r + c) & 1 else "."
                                 for c in range(3)) for r in range(3))


class ConnectFour:
    name = "connect4"
    rows, cols = 6, 7
    action_size = 7
    H1 = 7  # bits per column: 6 cells + 1 guard
    BOTTOM = tuple(1 << (c * 7) for c in range(7))
    TOP = tuple(1 << (c * 7 + 5) for c in range(7))
    # bit of row r (0 = bottom), column c, as [rows, cols] with row 0 drawn at the top of the planes
    _BITS = np.array([[c * 7 + (5 - r) for c in range(7)] for r in range(6)], dtype=np.int64)

    def initial(self) -> State:
        return (0, 0, 0, None)

    def legal(self, s: State) -> list[int]:
        taken = s[0] | s[1]
        return [c for c in range(7) if not taken & self.TOP[c]]

    def legal_mask(self, s: State) -> np.ndarray:
        taken = s[0] | s[1]
        return np.array([not taken & self.TOP[c] for c in range(7)])

    @staticmethod
    def four(p: int) -> bool:
        """Does stone mask p contain four in a row? (vertical, horizontal, both diagonals)"""
        for shift in (1, 7, 6, 8):
            m = p & (p >> shift)
            if m & (m >> (2 * shift)):
                return True
        return False

    def play(self, s: State, c: int) -> State:
        me, other, moves, _ = s
        taken = me | other
        new_taken = taken | (taken + self.BOTTOM[c])  # the lowest empty cell of column c
        mine = me | (new_taken ^ taken)
        result: float | None = None
        if self.four(mine):
            result = -1.0
        elif moves + 1 == 42:
            result = 0.0
        return (other, mine, moves + 1, result)

    def encode(self, states: list[State]) -> np.ndarray:
        """[B, 2, 6, 7] float32 planes: the mover's stones, the opponent's."""
        bb = np.array([[s[0], s[1]] for s in states], dtype=np.int64)[:, :, None, None]
        return ((bb >> self._BITS) & 1).astype(np.float32)

    def symmetries(self, planes: np.ndarray, policy: np.ndarray) -> list[tuple[np.ndarray, np.ndarray]]:
        """Identity and the left-right mirror."""
        return [(planes, policy), (np.ascontiguousarray(planes[:, :, ::-1]), np.ascontiguousarray(policy[::-1]))]

    def render(self, s: State) -> str:
        x, o = (s[0], s[1]) if s[2] % 2 == 0 else (s[1], s[0])
        return "\n".join("".join("X" if x >> (c * 7 + r) & 1 else "O" if o >> (c * 7 + r) & 1 else "."
                                 for c in range(7)) for r in range(5, -1, -1))

    # ---- for the minimax heuristic: every window of four cells, as masks
    @staticmethod
    def windows() -> list[int]:
        out = []
        for c in range(7):
            for r in range(6):
                for dc, dr in ((1, 0), (0, 1), (1, 1), (1, -1)):
                    cells = [(c + k * dc, r + k * dr) for k in range(4)]
                    if all(0 <= cc < 7 and 0 <= rr < 6 for cc, rr in cells):
                        out.append(sum(1 << (cc * 7 + rr) for cc, rr in cells))
        return out


GAMES: dict[str, Any] = {"tictactoe": TicTacToe, "connect4": ConnectFour}


def make_game(name: str) -> TicTacToe | ConnectFour:
    return GAMES[name]()
