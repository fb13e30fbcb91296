"""Monte Carlo tree search with PUCT (Silver et al. 2017/2018), batched across many games at once.

Each node keeps, per legal action a, the prior P(a), visit count N(a) and total value W(a) (from the point of view
of the player choosing at that node). A simulation descends by

    a* = argmax_a  Q(a) + c_puct P(a) sqrt(sum_b N(b)) / (1 + N(a)),    Q(a) = W(a) / N(a)  (0 when N(a) = 0)

to a leaf, which is either terminal (its exact value) or expanded with the evaluator's priors and value; the value
v (for the player to move at the leaf) is backed up the path with its sign flipped at every level. At the root,
the priors are mixed with Dirichlet noise, P = (1 - eps) P + eps Dir(alpha), so self-play explores.

``search`` runs the simulations of many roots in lock step: one leaf per root per simulation, all leaves
evaluated in one batch (one network call), which is what makes pure-Python search affordable on a CPU.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np

from tricklab.rl.alphazero.games import State

#: states -> (priors [B, action_size], values [B]) for the player to move in each state
Evaluator = Callable[[list[State]], tuple[np.ndarray, np.ndarray]]


class Node:
    __slots__ = ("state", "actions", "P", "N", "W", "children", "noisy_P")

    def __init__(self, state: State) -> None:
        self.state = state
        self.actions: list[int] | None = None  # None until expanded
        self.P = self.N = self.W = self.noisy_P = None
        self.children: dict[int, Node] = {}

    @property
    def expanded(self) -> bool:
        return self.actions is not None

    def expand(self, actions: list[int], priors: np.ndarray) -> None:
        self.actions = actions
        p = np.asarray(priors, dtype=np.float64)[actions]
        total = p.sum()
        self.P = p / total if total > 0 else np.full(len(actions), 1.0 / len(actions))
        self.N = np.zeros(len(actions))
        self.W = np.zeros(len(actions))

    def select(self, c_puct: float) -> int:
        """Index (into self.actions) of the PUCT-best action."""
        P = self.noisy_P if self.noisy_P is not None else self.P
        n = self.N
        q = np.divide(self.W, n, out=np.zeros_like(self.W), where=n > 0)
        u = c_puct * P * math.sqrt(n.sum() + 1e-8) / (1.0 + n)
        return int(np.argmax(q + u))

    def visit_distribution(self, action_size: int) -> np.ndarray:
        pi = np.zeros(action_size)
        pi[self.actions] = self.N
        return pi / pi.sum()


class MCTS:
    def __init__(self, game, evaluator: Evaluator, simulations: int, c_puct: float = 1.5,
                 dirichlet_alpha: float = 1.0, dirichlet_frac: float = 0.25) -> None:
        self.game, self.evaluator = game, evaluator
        self.simulations, self.c_puct = simulations, c_puct
        self.dirichlet_alpha, self.dirichlet_frac = dirichlet_alpha, dirichlet_frac

    def _expand_batch(self, nodes: list[Node]) -> np.ndarray:
        priors, values = self.evaluator([n.state for n in nodes])
        for node, p in zip(nodes, priors):
            node.expand(self.game.legal(node.state), p)
        return values

    def add_noise(self, root: Node, rng: np.random.Generator) -> None:
        noise = rng.dirichlet(np.full(len(root.actions), self.dirichlet_alpha))
        root.noisy_P = (1.0 - self.dirichlet_frac) * root.P + self.dirichlet_frac * noise

    def search(self, roots: list[Node], rng: np.random.Generator | None = None, noise: bool = False) -> None:
        """Run ``simulations`` simulations from each (non-terminal) root, in lock step across the roots."""
        fresh = [r for r in roots if not r.expanded]
        if fresh:
            self._expand_batch(fresh)
        if noise:
            assert rng is not None, "root noise needs a generator"
            for r in roots:
                self.add_noise(r, rng)
        for _ in range(self.simulations):
            leaves, paths = [], []
            for root in roots:
                node, path = root, []
                while True:
                    i = node.select(self.c_puct)
                    path.append((node, i))
                    a = node.actions[i]
                    child = node.children.get(a)
                    if child is None:
                        child = node.children[a] = Node(self.game.play(node.state, a))
                    node = child
                    if node.state[3] is not None or not node.expanded:
                        break
                if node.state[3] is not None:
                    self._backup(path, node.state[3])
                else:
                    leaves.append(node)
                    paths.append(path)
            if leaves:
                values = self._expand_batch(leaves)
                for path, v in zip(paths, values):
                    self._backup(path, float(v))

    @staticmethod
    def _backup(path: list[tuple[Node, int]], leaf_value: float) -> None:
        # leaf_value is for the player to move at the leaf; the parent chose the move, so it gets -leaf_value
        v = -leaf_value
        for node, i in reversed(path):
            node.N[i] += 1.0
            node.W[i] += v
            v = -v


def choose_action(root: Node, temperature: float, rng: np.random.Generator) -> int:
    """Sample from N^(1/T) (T = 1: proportional to visits); T = 0 plays the most visited (ties at random)."""
    n = root.N
    if temperature == 0:
        best = np.flatnonzero(n == n.max())
        return root.actions[int(best[rng.integers(len(best))])]
    p = n ** (1.0 / temperature)
    return root.actions[int(rng.choice(len(n), p=p / p.sum()))]


def uniform_rollout_evaluator(game, rng: np.random.Generator) -> Evaluator:
    """Classic MCTS without a network: uniform priors, and the value of one random playout to the end."""

    def evaluate(states: list[State]) -> tuple[np.ndarray, np.ndarray]:
        priors = np.zeros((len(states), game.action_size))
        values = np.zeros(len(states))
        for i, s in enumerate(states):
            priors[i, game.legal(s)] = 1.0
            cur, sign = s, 1.0
            while cur[3] is None:
                moves = game.legal(cur)
                cur = game.play(cur, moves[rng.integers(len(moves))])
                sign = -sign
            # cur[3] is for the player to move at the end; flip back to the leaf's player
            values[i] = cur[3] * sign
        return priors, values

    return evaluate
