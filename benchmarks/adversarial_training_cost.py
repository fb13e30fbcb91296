"""Cost of PGD adversarial training per optimizer step, against a clean step, on the MNIST-1D paper CNN.

Three contenders train the same model (Adam 1e-2, batch 100) through the trainer, interleaved in one process
so that they share whatever load the machine has: ``clean`` and ``clean-again`` (identical: their difference is
the noise floor of this measurement) and ``adversarial_training`` (the technique at its defaults, PGD with 7
steps). Each repeat trains every contender for ``--steps`` steps from a fresh model; the time per step is the
median over ``--repeats`` repeats. Reported: milliseconds per step, the ratio adversarial / clean, and the noise
ratio clean-again / clean (a timing difference is only real where it exceeds that noise).

    python benchmarks/adversarial_training_cost.py [--steps 100] [--repeats 5] [--threads 1]

Writes ``benchmarks/results/adversarial_training_cost.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from pathlib import Path

import torch

from tricklab.data import InMemoryLoader, load_dataset
from tricklab.models import build_model
from tricklab.techniques import AdversarialTraining
from tricklab.train import Trainer

OUT = Path(__file__).resolve().parent / "results" / "adversarial_training_cost.json"


def seconds_per_step(adversarial: bool, steps: int, data: object, seed: int) -> float:
    torch.manual_seed(seed)
    model = build_model("cnn", data.input_shape, data.num_classes)
    trainer = Trainer(model, torch.optim.Adam(model.parameters(), lr=1e-2),
                      InMemoryLoader(data.x_train, data.y_train, 100, seed=seed),
                      techniques=[AdversarialTraining()] if adversarial else [], max_steps=steps)
    start = time.perf_counter()
    trainer.fit()
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    data = load_dataset("mnist1d")
    contenders = {"clean": False, "clean-again": False, "adversarial_training": True}
    times: dict[str, list[float]] = {name: [] for name in contenders}
    for r in range(args.repeats):
        for name, adversarial in contenders.items():  # interleaved: each repeat times all three in turn
            times[name].append(seconds_per_step(adversarial, args.steps, data, seed=r))
    median = {name: statistics.median(v) for name, v in times.items()}
    result = {
        "ms_per_step": {name: 1e3 * m for name, m in median.items()},
        "ratio_adversarial_over_clean": median["adversarial_training"] / median["clean"],
        "noise_ratio_clean_again_over_clean": median["clean-again"] / median["clean"],
        "all_seconds_per_step": times, "steps": args.steps, "repeats": args.repeats, "threads": args.threads,
        "machine": {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__},
    }
    print(f"{'contender':<22} {'ms/step (median)':>18}")
    for name, m in median.items():
        print(f"{name:<22} {1e3 * m:>18.2f}")
    print(f"adversarial / clean: {result['ratio_adversarial_over_clean']:.2f}x "
          f"(noise between identical runs: {result['noise_ratio_clean_again_over_clean']:.2f}x)")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text(json.dumps(result, indent=2))
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
