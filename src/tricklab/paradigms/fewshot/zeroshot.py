"""Zero-shot classification from class attribute vectors: ESZSL, and attribute tables made by code.

Romera-Paredes & Torr, "An embarrassingly simple approach to zero-shot learning", ICML 2015, eq. (2)-(4): with
features ``X`` (d, m) of m training examples, their labels ``Y`` (m, z) in {-1, 1} over the z seen classes and
the seen classes' attributes ``S`` (a, z), the bilinear compatibility ``x^T V s`` is fitted by the closed form

    V = (X X^T + gamma I)^-1 X Y S^T (S S^T + lambda I)^-1                      (eq. 4)

which minimises ``||X^T V S - Y||^2 + gamma ||V S||^2 + lambda ||X^T V||^2 + gamma lambda ||V||^2`` (eq. 3). An
unseen class is predicted as ``argmax_c x^T V s_c`` over the unseen classes' attribute vectors. By default a
constant attribute is appended to every class (a bias): without it the -1 entries of Y must be produced by the real
attributes, and on unseen classes that becomes a class-dependent offset (in tests with random attributes it sent
every unseen example to one class).

Attribute tables (how they are made, both by code, nothing downloaded):

* ``fashion_mnist_attributes()``: a hand-written binary table of 12 properties of the ten Fashion-MNIST classes
  (worn on the upper body / legs / feet, sleeves, long sleeves, a collar or fastening, soft fabric, carried, ...);
  every class has a distinct vector. The table is the ``FASHION_ATTRIBUTES`` literal below, so its content is
  stated in the code and the docs.
* ``rotated_fashion_attributes()``: for the 40 classes of ``fashion-mnist-rot40`` (garment g turned by k quarter
  turns is class g + 10 k): the garment's 12 attributes above followed by a one-hot of the 4 orientations (16).
* ``mnist1d_template_attributes()``: each MNIST-1D digit's 12-point template from the ``mnist1d`` package
  (``get_templates()``), standardised: the class is described by the shape its signals are generated from.
"""

from __future__ import annotations

import torch
from torch import Tensor

from tricklab.errors import ConfigError

__all__ = ["FASHION_ATTRIBUTES", "FASHION_ATTRIBUTE_NAMES", "eszsl_fit", "eszsl_predict", "fashion_mnist_attributes",
           "mnist1d_template_attributes", "rotated_fashion_attributes"]

FASHION_ATTRIBUTE_NAMES = ["upper_body", "legs", "feet", "has_sleeves", "long_sleeves", "fastening_or_collar",
                           "knitted_or_soft", "one_piece_full_body", "carried", "covers_ankle", "open_or_strappy",
                           "sporty"]
# rows: T-shirt/top, Trouser, Pullover, Dress, Coat, Sandal, Shirt, Sneaker, Bag, Ankle boot
FASHION_ATTRIBUTES: list[list[int]] = [
    [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1],  # T-shirt/top
    [0, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0],  # Trouser
    [1, 0, 0, 1, 1, 0, 1, 0, 0, 0, 0, 0],  # Pullover
    [1, 1, 0, 0, 0, 0, 1, 1, 0, 0, 0, 0],  # Dress
    [1, 0, 0, 1, 1, 1, 0, 0, 0, 0, 0, 0],  # Coat
    [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 1, 0],  # Sandal
    [1, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 0],  # Shirt
    [0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 1],  # Sneaker
    [0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0],  # Bag
    [0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0, 0],  # Ankle boot
]


def fashion_mnist_attributes() -> Tensor:
    """(10, 12) float attribute table of the Fashion-MNIST classes (rows in class-id order)."""
    return torch.tensor(FASHION_ATTRIBUTES, dtype=torch.float32)


def rotated_fashion_attributes() -> Tensor:
    """(40, 16) attributes of ``fashion-mnist-rot40``'s classes: row g + 10 k is the garment g's 12 attributes and
    a one-hot of orientation k (0, 90, 180, 270 degrees)."""
    garments = fashion_mnist_attributes()
    return torch.cat([garments.repeat(4, 1), torch.eye(4).repeat_interleave(10, dim=0)], dim=1)


def mnist1d_template_attributes() -> Tensor:
    """(10, 12) standardised digit templates of MNIST-1D (needs the ``mnist1d`` extra)."""
    try:
        from mnist1d.data import get_templates
    except ImportError as exc:  # optional extra
        raise ConfigError('MNIST-1D template attributes need the mnist1d package: pip install "tricklab[mnist1d]"') \
            from exc
    t = torch.as_tensor(get_templates()["x"], dtype=torch.float32)  # (10, 12)
    return (t - t.mean(1, keepdim=True)) / t.std(1, keepdim=True).clamp_min(1e-6)


def _with_bias(attributes: Tensor, bias: bool) -> Tensor:
    # a constant attribute absorbs the common -1 of the label coding, which would otherwise have to come from the
    # real attributes and turn into a class-dependent offset for unseen classes
    if not bias:
        return attributes
    return torch.cat([torch.ones(attributes.shape[0], 1, dtype=attributes.dtype), attributes], dim=1)


def eszsl_fit(features: Tensor, labels: Tensor, attributes: Tensor, gamma: float = 1.0, lam: float = 1.0,
              bias: bool = True) -> Tensor:
    """ESZSL's V (d, a [+1]) from ``features`` (m, d), ``labels`` (m,) indexing rows of ``attributes`` (z, a) (the
    seen classes), eq. (4). Labels are coded +1 for the true class and -1 elsewhere, as in the paper. ``bias``
    appends a constant attribute (pass the same value to :func:`eszsl_predict`)."""
    if gamma <= 0 or lam <= 0:
        raise ConfigError(f"ESZSL needs gamma > 0 and lambda > 0, got {gamma}, {lam}")
    attributes = _with_bias(attributes, bias)
    x = features.double().T  # (d, m)
    s = attributes.double().T  # (a, z)
    y = -torch.ones(features.shape[0], attributes.shape[0], dtype=torch.float64)
    y[torch.arange(len(labels)), labels] = 1.0
    left = torch.linalg.solve(x @ x.T + gamma * torch.eye(x.shape[0], dtype=x.dtype), x @ y @ s.T)  # (d, a)
    right = torch.linalg.inv(s @ s.T + lam * torch.eye(s.shape[0], dtype=s.dtype))  # (a, a)
    return (left @ right).to(features.dtype)


def eszsl_predict(features: Tensor, v: Tensor, attributes: Tensor, bias: bool = True) -> Tensor:
    """Index (into ``attributes``' rows) of the most compatible class for each example: ``argmax_c x^T V s_c``."""
    return (features @ v @ _with_bias(attributes, bias).to(v.dtype).T).argmax(1)
