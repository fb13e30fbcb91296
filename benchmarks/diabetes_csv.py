"""Write scikit-learn's bundled diabetes data (Efron et al. 2004; 442 patients, 10 features, a disease
progression score one year later) to a CSV file, for the regression card in docs/cards/diabetes-regression.

The features are written as scikit-learn ships them (already mean-centred and scaled); the target is the raw
progression score (25 to 346). Nothing is downloaded: the data set is bundled with scikit-learn.

    python benchmarks/diabetes_csv.py runs/diabetes/diabetes.csv
    tricklab ablate recipes/diabetes-regression.yaml --techniques ema,swa,sam,weight_penalty:l2=0.01 \
        --seeds 3 --jobs 2 --out runs/diabetes/ablation
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path


def write_diabetes_csv(path: Path) -> int:
    """Write the 442 rows (10 features and ``progression``) to ``path``; returns the number of rows."""
    from sklearn.datasets import load_diabetes

    bunch = load_diabetes()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow([*bunch.feature_names, "progression"])
        for row, target in zip(bunch.data, bunch.target):
            w.writerow([*(f"{v:.10g}" for v in row), f"{target:g}"])
    tmp.replace(path)  # atomic: a half-written CSV is never read
    return len(bunch.target)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, nargs="?", default=Path("runs/diabetes/diabetes.csv"))
    args = parser.parse_args()
    n = write_diabetes_csv(args.out)
    print(f"wrote {n} rows to {args.out}")


if __name__ == "__main__":
    main()
