"""Draw every registered schedule (factor vs step) to docs/schedules/<name>.svg.

Run from anywhere: ``python docs/schedules/plot_schedules.py``. Uses the example arguments of
``tricklab.schedules.EXAMPLE_ARGS`` over ``EXAMPLE_TOTAL`` steps (the same ones the registry sweep tests).
"""

from __future__ import annotations

import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from tricklab.schedules import EXAMPLE_ARGS, EXAMPLE_TOTAL, SCHEDULES  # noqa: E402

HERE = Path(__file__).resolve().parent


def plot(name: str, out_dir: Path = HERE) -> Path:
    fn = SCHEDULES.get(name)
    args = EXAMPLE_ARGS[name]
    steps = list(range(EXAMPLE_TOTAL + 1))
    factors = [fn(t, EXAMPLE_TOTAL, **args) for t in steps]
    fig, ax = plt.subplots(figsize=(5.0, 2.6))
    ax.plot(steps, factors, lw=1.6, color="#1f5fa8")
    shown = ", ".join(f"{k}={v}" for k, v in args.items())
    ax.set_title(f"{name}({shown})" if shown else name, fontsize=9)
    ax.set_xlabel(f"step (T = {EXAMPLE_TOTAL})", fontsize=8)
    ax.set_ylabel("lr factor", fontsize=8)
    ax.set_ylim(-0.03, 1.05)
    ax.grid(alpha=0.3)
    ax.tick_params(labelsize=7)
    fig.tight_layout()
    path = out_dir / f"{name}.svg"
    # fixed metadata and hash salt: re-running the script gives byte-identical files (clean diffs)
    plt.rcParams["svg.hashsalt"] = "tricklab"
    fig.savefig(path, format="svg", metadata={"Date": None, "Creator": None})
    plt.close(fig)
    return path


def main() -> int:
    for name in SCHEDULES.names():
        print(plot(name))
    return 0


if __name__ == "__main__":
    sys.exit(main())
