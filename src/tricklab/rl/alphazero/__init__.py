"""AlphaZero: games on bitboards, batched PUCT search, a policy-value network, self-play and evaluation against
random and minimax players."""

from tricklab.rl.alphazero.alphazero import (AlphaZero, AlphaZeroConfig, PolicyValueNet, alphazero_loss,
                                             run_alphazero)
from tricklab.rl.alphazero.games import ConnectFour, TicTacToe, make_game
from tricklab.rl.alphazero.mcts import MCTS, Node, choose_action, uniform_rollout_evaluator
from tricklab.rl.alphazero.minimax import Minimax

__all__ = ["MCTS", "AlphaZero", "AlphaZeroConfig", "ConnectFour", "Minimax", "Node", "PolicyValueNet", "TicTacToe",
           "alphazero_loss", "choose_action", "make_game", "run_alphazero", "uniform_rollout_evaluator"]
