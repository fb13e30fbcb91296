"""SimCLR, MoCo and BYOL.

References: NT-Xent by a slow per-pair Python loop over the 2N views (SimCLR eq. 1, with the 1[k != i] sum),
outputs and gradients; MoCo's logits by a loop over the queue, the queue as a Python FIFO list (collections.deque
with maxlen K), the key encoder's update as the closed form ``m theta_k + (1 - m) theta_q`` in float64; BYOL's
loss as the NumPy closed form ``2 - 2 cos`` and its EMA as the closed form ``tau xi + (1 - tau) theta``.
"""

from __future__ import annotations

import copy
import math
from collections import deque

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from tricklab.paradigms.selfsup.methods import (BYOL, MoCo, SimCLR, byol_loss, byol_tau, enqueue_, moco_logits,
                                       momentum_update_)


def _slow_nt_xent(z1: torch.Tensor, z2: torch.Tensor, tau: float) -> torch.Tensor:
    z = torch.cat([z1, z2])
    n2 = z.shape[0]
    n = n2 // 2
    total = z.new_zeros(())
    for i in range(n2):
        j = (i + n) % n2
        sim = [torch.dot(z[i], z[k]) / (z[i].norm() * z[k].norm()) / tau for k in range(n2)]
        denom = sum(torch.exp(sim[k]) for k in range(n2) if k != i)
        total = total - torch.log(torch.exp(sim[j]) / denom)
    return total / n2


def test_simclr_loss_equals_the_per_pair_reference() -> None:
    torch.manual_seed(0)
    enc = nn.Linear(5, 4).double()
    model = SimCLR(enc, 4, proj_dim=3, hidden=6, temperature=0.3).double()
    x1, x2 = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    loss = model.loss(x1, x2)
    grads = torch.autograd.grad(loss, list(model.parameters()))
    z1, z2 = model.projector(enc(torch.cat([x1, x2]))).chunk(2)
    ref = _slow_nt_xent(z1, z2, 0.3)
    ref_grads = torch.autograd.grad(ref, list(model.parameters()))
    torch.testing.assert_close(loss, ref)
    for a, b in zip(grads, ref_grads):
        torch.testing.assert_close(a, b)


def test_enqueue_is_first_in_first_out_with_wrap_around() -> None:
    queue = torch.zeros(5, 2)
    ref: deque[float] = deque(maxlen=5)  # the FIFO reference: appending to a full deque drops the oldest
    ptr, seen = 0, 0
    for b, size in enumerate([2, 2, 3, 1, 4]):
        keys = torch.arange(size, dtype=torch.float32)[:, None].repeat(1, 2) + 10 * b
        ptr = enqueue_(queue, ptr, keys)
        ref.extend(keys[:, 0].tolist())
        seen += size
        if seen < 5:
            assert queue[:seen, 0].tolist() == list(ref)
        else:  # read from the pointer on: oldest to newest
            assert [queue[(ptr + i) % 5, 0].item() for i in range(5)] == list(ref)
    assert ptr == 12 % 5


def test_moco_logits_match_a_loop_over_the_queue() -> None:
    torch.manual_seed(0)
    q, k = F.normalize(torch.randn(3, 4), dim=1), F.normalize(torch.randn(3, 4), dim=1)
    queue = F.normalize(torch.randn(6, 4), dim=1)
    logits = moco_logits(q, k, queue, 0.2)
    for i in range(3):
        assert logits[i, 0] == pytest.approx(float(q[i] @ k[i]) / 0.2, rel=1e-5)
        for j in range(6):
            assert logits[i, 1 + j] == pytest.approx(float(q[i] @ queue[j]) / 0.2, rel=1e-5, abs=1e-6)


def _encoder() -> nn.Module:
    return nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 5))


def test_moco_keys_carry_no_gradient_and_the_key_encoder_follows_the_momentum_formula() -> None:
    torch.manual_seed(0)
    model = MoCo(_encoder(), 5, proj_dim=4, hidden=8, queue_size=8, momentum=0.9, temperature=0.2).double()
    with torch.no_grad():  # make the query encoder differ from its copy, so the update is visible
        for p in model.encoder.parameters():
            p.add_(0.1)
    theta_q = [p.detach().clone() for p in [*model.encoder.parameters(), *model.projector.parameters()]]
    theta_k = [p.detach().clone() for p in [*model.key_encoder.parameters(), *model.key_projector.parameters()]]
    x1, x2 = torch.randn(4, 6, dtype=torch.float64), torch.randn(4, 6, dtype=torch.float64)
    queue_before = model.queue.clone()
    loss = model.loss(x1, x2)
    loss.backward()
    assert all(p.grad is None for p in [*model.key_encoder.parameters(), *model.key_projector.parameters()])
    assert all(p.grad is not None for p in model.encoder.parameters())
    assert not model.keys(x2).requires_grad
    for tk, tq, now in zip(theta_k, theta_q, [*model.key_encoder.parameters(), *model.key_projector.parameters()]):
        torch.testing.assert_close(now, 0.9 * tk + 0.1 * tq)
    # this batch's keys went to the first 4 slots (FIFO); the loss used the queue from before them
    torch.testing.assert_close(model.queue[:4], model.keys(x2))
    torch.testing.assert_close(model.queue[4:], queue_before[4:])
    assert int(model.queue_ptr) == 4
    q = F.normalize(model.projector(model.encoder(x1)), dim=1)
    ref = F.cross_entropy(moco_logits(q, model.queue[:4], queue_before, 0.2), torch.zeros(4, dtype=torch.long))
    torch.testing.assert_close(loss.detach(), ref.detach())


def test_byol_loss_matches_numpy() -> None:
    torch.manual_seed(0)
    p, z = torch.randn(5, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    pn, zn = p.numpy(), z.numpy()
    cos = (pn * zn).sum(1) / (np.linalg.norm(pn, axis=1) * np.linalg.norm(zn, axis=1))
    assert float(byol_loss(p, z)) == pytest.approx(float(np.mean(2 - 2 * cos)), rel=1e-12)


def test_byol_target_gets_no_gradient_and_follows_the_ema() -> None:
    torch.manual_seed(0)
    model = BYOL(_encoder(), 5, proj_dim=4, hidden=8).double()
    opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.5)
    xi = [p.detach().clone() for p in [*model.target_encoder.parameters(), *model.target_projector.parameters()]]
    model.loss(torch.randn(6, 6, dtype=torch.float64), torch.randn(6, 6, dtype=torch.float64)).backward()
    target = [*model.target_encoder.parameters(), *model.target_projector.parameters()]
    assert all(p.grad is None and not p.requires_grad for p in target)
    assert set(map(id, opt.param_groups[0]["params"])).isdisjoint(map(id, target))
    opt.step()
    for a, b in zip(xi, target):  # the optimizer did not move the target
        assert torch.equal(a, b)
    theta = [p.detach().clone() for p in [*model.encoder.parameters(), *model.projector.parameters()]]
    tau = byol_tau(3, 10, 0.99)
    assert tau == pytest.approx(1 - 0.01 * (math.cos(math.pi * 0.3) + 1) / 2)
    model.update_target_(tau)
    for x0, th, now in zip(xi, theta, target):
        torch.testing.assert_close(now, tau * x0 + (1 - tau) * th)


def test_momentum_update_copies_buffers() -> None:
    a, b = nn.BatchNorm1d(3), nn.BatchNorm1d(3)
    a.running_mean.fill_(2.0)
    b2 = copy.deepcopy(b)
    momentum_update_(b2, a, 0.5)
    assert torch.equal(b2.running_mean, a.running_mean)
