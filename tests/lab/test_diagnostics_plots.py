"""diagnostic_figures: the four figures from real diagnostics records, valid inline SVG naming the layers,
figures without data left out, bad input refused. (Plots have no numerical reference; the assertions are on
the structure and content of the SVG.)"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest
import torch
from torch import nn

from tricklab.data import InMemoryLoader
from tricklab.lab.diagnostics_plots import diagnostic_figures
from tricklab.techniques.diagnostics import Diagnostics
from tricklab.train import Trainer


def _records(model: nn.Module, steps: int = 4) -> dict:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
    diag = Diagnostics(every=2, bins=8)
    Trainer(model, torch.optim.SGD(model.parameters(), lr=0.1), InMemoryLoader(x, y, 8, seed=0), techniques=[diag],
            max_steps=steps).fit()
    return json.loads(json.dumps(diag.records))  # as read back from diagnostics.json


def test_all_four_figures_from_a_relu_mlp() -> None:
    torch.manual_seed(0)
    records = _records(nn.Sequential(nn.Linear(6, 10), nn.ReLU(), nn.Linear(10, 10), nn.ReLU(), nn.Linear(10, 3)))
    figs = diagnostic_figures(records)
    assert [f[0] for f in figs] == ["activation_std", "dead_fraction", "grad_norm", "activation_histograms"]
    for name, svg, caption in figs:
        assert svg.startswith("<svg") and svg.rstrip().endswith("</svg>")
        ET.fromstring(svg)  # well-formed XML, embeddable inline
        assert caption and len(caption) > 20
    by_name = {n: s for n, s, _ in figs}
    assert "0.weight" in by_name["grad_norm"] and "4.weight" in by_name["grad_norm"]
    assert "ReLU" in by_name["activation_histograms"]  # panel titles name the layer kind
    assert "step 2" in figs[-1][2]  # histograms of the last record (steps 0 and 2)


def test_no_dead_fraction_figure_without_relu_layers() -> None:
    torch.manual_seed(0)
    records = _records(nn.Sequential(nn.Linear(6, 10), nn.Tanh(), nn.Linear(10, 3)), steps=2)
    assert [f[0] for f in diagnostic_figures(records)] == ["activation_std", "grad_norm", "activation_histograms"]


def test_empty_records_give_no_figures_and_bad_input_is_refused() -> None:
    assert diagnostic_figures(Diagnostics().records) == []
    with pytest.raises(ValueError, match="records dict"):
        diagnostic_figures({"steps": []})
    with pytest.raises(ValueError, match="records dict"):
        diagnostic_figures([])  # type: ignore[arg-type]
