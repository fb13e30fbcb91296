"""Tests for tricklab.data.loader: coverage, reproducibility, resume, sharding, streaming parity, errors.

Reference for every order check: the rule in the loader docstring (epoch e's order is
``torch.randperm(n, generator seeded by seed*1_000_003 + e)``; global batch b = perm[b*B*W:(b+1)*B*W],
rank r takes [r*B:(r+1)*B]); the tests compare loaders against each other and against that rule.
"""

from __future__ import annotations

import io

import pytest
import torch
from torch.utils.data import Dataset, TensorDataset

from tricklab.data.loader import InMemoryLoader, StreamingLoader, epoch_permutation, iterate_eval_batches


def make_data(n: int = 103, features: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    # Inputs encode their own index so every batch can be traced back to sample ids.
    x = torch.arange(n, dtype=torch.float32).unsqueeze(1).repeat(1, features)
    y = torch.arange(n, dtype=torch.int64)
    return x, y


def drain(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The remaining batches of the current epoch, via next_batch (does not start the next epoch)."""
    out = []
    while loader.batch_index < len(loader):
        out.append(loader.next_batch())
    return out


def assert_same_batches(a, b) -> None:
    assert len(a) == len(b)
    for (xa, ya), (xb, yb) in zip(a, b):
        assert torch.equal(xa, xb)
        assert torch.equal(ya, yb)


# -- coverage ----------------------------------------------------------------------------------------


def test_each_sample_exactly_once_per_epoch_without_drop_last() -> None:
    x, y = make_data(103)
    loader = InMemoryLoader(x, y, 10, drop_last=False, seed=3)
    assert len(loader) == 11
    for epoch in range(3):
        assert loader.epoch == epoch
        batches = list(loader)  # the for-loop form: rest of the epoch, then start_next_epoch()
        assert [b[1].numel() for b in batches] == [10] * 10 + [3]
        seen = torch.cat([b[1] for b in batches])
        assert torch.equal(seen.sort().values, torch.arange(103))
        # inputs and targets stay paired
        assert all(torch.equal(xb[:, 0].long(), yb) for xb, yb in batches)
    assert loader.epoch == 3 and loader.batch_index == 0


def test_drop_last_drops_only_the_incomplete_batch() -> None:
    x, y = make_data(103)
    loader = InMemoryLoader(x, y, 10, drop_last=True)
    batches = drain(loader)
    assert len(batches) == len(loader) == 10
    seen = torch.cat([b[1] for b in batches])
    assert seen.unique().numel() == 100


def test_no_shuffle_is_sequential() -> None:
    x, y = make_data(20)
    loader = InMemoryLoader(x, y, 5, shuffle=False)
    assert torch.equal(torch.cat([b[1] for b in drain(loader)]), torch.arange(20))


# -- reproducibility -----------------------------------------------------------------------------------


def test_permutation_follows_the_documented_rule() -> None:
    x, y = make_data(50)
    loader = InMemoryLoader(x, y, 50, seed=7)
    g = torch.Generator().manual_seed(7 * 1_000_003 + 0)
    assert torch.equal(loader.next_batch()[1], torch.randperm(50, generator=g))


def test_permutation_reproducible_from_seed_and_differs_across_epochs() -> None:
    x, y = make_data(64)
    a = InMemoryLoader(x, y, 8, seed=11)
    b = InMemoryLoader(x, y, 8, seed=11)
    other_seed = InMemoryLoader(x, y, 8, seed=12)
    per_epoch = []
    for _ in range(3):
        ya = torch.cat([t[1] for t in a])
        yb = torch.cat([t[1] for t in b])
        assert torch.equal(ya, yb)
        per_epoch.append(ya)
    assert not torch.equal(per_epoch[0], per_epoch[1])
    assert not torch.equal(per_epoch[1], per_epoch[2])
    assert not torch.equal(per_epoch[0], torch.cat([t[1] for t in other_seed]))


def test_epoch_order_does_not_depend_on_history_or_global_rng() -> None:
    x, y = make_data(40)
    walked = InMemoryLoader(x, y, 4, seed=5)
    for _ in range(3):
        list(walked)
    jumped = InMemoryLoader(x, y, 4, seed=5)
    jumped.load_state_dict(
        {"epoch": 3, "batch_index": 0, "seed": 5, "permutation": epoch_permutation(40, 5, 3)}
    )
    torch.manual_seed(0)
    rng_before = torch.get_rng_state()
    assert_same_batches(drain(walked), drain(jumped))
    torch.rand(1)  # touching the global RNG between epochs must not matter either
    assert torch.equal(walked.permutation(), jumped.permutation())
    # the loaders themselves never draw from the global RNG
    torch.manual_seed(0)
    InMemoryLoader(x, y, 4, seed=5).next_batch()
    assert torch.equal(torch.get_rng_state(), rng_before)


# -- resume ----------------------------------------------------------------------------------------------


def test_state_dict_round_trip_mid_epoch_gives_identical_remaining_batches() -> None:
    x, y = make_data(103)
    reference = InMemoryLoader(x, y, 8, seed=21)
    list(reference)  # finish epoch 0
    for _ in range(5):
        reference.next_batch()
    state = reference.state_dict()
    assert state["epoch"] == 1 and state["batch_index"] == 5 and state["seed"] == 21
    # through a real serialisation, as a checkpoint would do
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    restored_state = torch.load(buf)

    resumed = InMemoryLoader(x, y, 8, seed=999)  # the constructor seed is replaced by the stored one
    resumed.load_state_dict(restored_state)
    assert (resumed.epoch, resumed.batch_index, resumed.seed) == (1, 5, 21)
    assert_same_batches(drain(reference), drain(resumed))
    # and the following epoch too
    reference.start_next_epoch()
    resumed.start_next_epoch()
    assert_same_batches(drain(reference), drain(resumed))


def test_load_state_dict_detects_changed_data_seed_or_batch() -> None:
    x, y = make_data(100)
    loader = InMemoryLoader(x, y, 10, seed=1)
    loader.next_batch()
    state = loader.state_dict()

    bigger = InMemoryLoader(*make_data(101), 10, seed=1)
    with pytest.raises(ValueError, match="data changed"):
        bigger.load_state_dict(state)

    tampered = dict(state, permutation=state["permutation"].flip(0))
    with pytest.raises(ValueError, match="seed"):
        InMemoryLoader(x, y, 10).load_state_dict(tampered)

    with pytest.raises(ValueError, match="global batch size 10"):
        InMemoryLoader(x, y, 20).load_state_dict(state)

    with pytest.raises(ValueError, match="missing"):
        InMemoryLoader(x, y, 10).load_state_dict({"epoch": 0})

    fresh = InMemoryLoader(x, y, 10)
    with pytest.raises(ValueError):
        fresh.load_state_dict(tampered)
    assert (fresh.epoch, fresh.batch_index) == (0, 0)  # a rejected state leaves the loader untouched


# -- sharding --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("world_size", [2, 3])
def test_rank_shards_union_equals_single_process_batch(world_size: int) -> None:
    x, y = make_data(50)
    B = 4
    single = InMemoryLoader(x, y, B * world_size, seed=9)
    ranks = [InMemoryLoader(x, y, B, seed=9, rank=r, world_size=world_size) for r in range(world_size)]
    assert all(len(r) == len(single) == 50 // (B * world_size) for r in ranks)
    for _ in range(2):  # two epochs
        for _ in range(len(single)):
            xs, ys = single.next_batch()
            parts = [r.next_batch() for r in ranks]
            assert torch.equal(torch.cat([p[0] for p in parts]), xs)
            assert torch.equal(torch.cat([p[1] for p in parts]), ys)
        single.start_next_epoch()
        for r in ranks:
            r.start_next_epoch()


def test_ranks_are_disjoint() -> None:
    x, y = make_data(64)
    ranks = [InMemoryLoader(x, y, 8, seed=2, rank=r, world_size=2) for r in range(2)]
    s0 = set(torch.cat([b[1] for b in drain(ranks[0])]).tolist())
    s1 = set(torch.cat([b[1] for b in drain(ranks[1])]).tolist())
    assert not s0 & s1 and len(s0 | s1) == 64


# -- streaming -------------------------------------------------------------------------------------------


class RecordingDataset(Dataset):
    """A TensorDataset that records which indices were fetched (main process only)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y
        self.fetched: list[int] = []

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        self.fetched.append(int(i))
        return self.x[i], self.y[i]


@pytest.mark.parametrize("num_workers", [0, 2])
def test_streaming_matches_in_memory_and_resumes(num_workers: int) -> None:
    x, y = make_data(37)
    mem = InMemoryLoader(x, y, 5, seed=4, drop_last=False)
    stream = StreamingLoader(TensorDataset(x, y), 5, seed=4, drop_last=False, num_workers=num_workers)
    assert len(stream) == len(mem) == 8
    for _ in range(2):
        assert_same_batches([b for b in mem], [b for b in stream])
    assert stream.epoch == mem.epoch == 2

    # resume mid-epoch from the in-memory loader's state
    for _ in range(3):
        mem.next_batch()
    resumed = StreamingLoader(TensorDataset(x, y), 5, seed=0, drop_last=False, num_workers=num_workers)
    resumed.load_state_dict(mem.state_dict())
    assert_same_batches(drain(mem), drain(resumed))


def test_streaming_resume_does_not_load_skipped_samples() -> None:
    x, y = make_data(30)
    ds = RecordingDataset(x, y)
    stream = StreamingLoader(ds, 3, seed=8)
    mem = InMemoryLoader(x, y, 3, seed=8)
    for _ in range(4):
        mem.next_batch()
    stream.load_state_dict(mem.state_dict())
    remaining = drain(mem)
    assert_same_batches(remaining, drain(stream))
    assert ds.fetched == torch.cat([b[1] for b in remaining]).tolist()


def test_streaming_sharding_matches_in_memory() -> None:
    x, y = make_data(40)
    for r in range(2):
        mem = InMemoryLoader(x, y, 4, seed=6, rank=r, world_size=2)
        stream = StreamingLoader(TensorDataset(x, y), 4, seed=6, rank=r, world_size=2)
        assert_same_batches(drain(mem), drain(stream))


# -- eval batches ----------------------------------------------------------------------------------------


def test_iterate_eval_batches_sequential_keeps_last_partial_batch() -> None:
    x, y = make_data(23)
    batches = list(iterate_eval_batches(x, y, 10))
    assert [b[1].numel() for b in batches] == [10, 10, 3]
    assert torch.equal(torch.cat([b[1] for b in batches]), torch.arange(23))
    assert torch.equal(torch.cat([b[0] for b in batches]), x)


# -- errors ----------------------------------------------------------------------------------------------


def test_bad_inputs_give_clear_errors() -> None:
    x, y = make_data(10)
    with pytest.raises(ValueError, match="differ in length: 10 inputs vs 9 targets"):
        InMemoryLoader(x, y[:9], 2)
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        InMemoryLoader(x, y, 0)
    with pytest.raises(TypeError, match="batch_size must be an int"):
        InMemoryLoader(x, y, 2.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="larger than the data set"):
        InMemoryLoader(x, y, 11)
    with pytest.raises(ValueError, match=r"global batch .* = 12"):
        InMemoryLoader(x, y, 6, world_size=2)
    with pytest.raises(ValueError, match="rank must be in"):
        InMemoryLoader(x, y, 2, rank=2, world_size=2)
    with pytest.raises(ValueError, match="drop_last=False is not supported with world_size > 1"):
        InMemoryLoader(x, y, 2, world_size=2, drop_last=False)
    with pytest.raises(ValueError, match="differ in length"):
        iterate_eval_batches(x, y[:3], 2)  # checked at call time, not at first next()
    with pytest.raises(ValueError, match="persistent_workers need num_workers > 0"):
        StreamingLoader(TensorDataset(x, y), 2, persistent_workers=True)

    loader = InMemoryLoader(x, y, 5)
    drain(loader)
    with pytest.raises(RuntimeError, match="exhausted.*start_next_epoch"):
        loader.next_batch()
    loader.start_next_epoch()
    assert loader.next_batch()[0].shape == (5, 3)


def test_streaming_persistent_workers_across_epochs_and_resume() -> None:
    x, y = make_data(37)
    mem = InMemoryLoader(x, y, 5, seed=3, drop_last=False)
    stream = StreamingLoader(
        TensorDataset(x, y), 5, seed=3, drop_last=False, num_workers=2, persistent_workers=True, prefetch_factor=2
    )
    for _ in range(2):
        assert_same_batches(list(mem), list(stream))
    mem.next_batch()
    state = mem.state_dict()
    mem.next_batch()
    stream.next_batch()  # a position jump with batches already prefetched by the persistent workers
    stream.load_state_dict(state)
    mem.load_state_dict(state)
    assert_same_batches(drain(mem), drain(stream))


def test_dropping_a_multi_worker_loader_mid_epoch_is_prompt() -> None:
    # Regression: a reference cycle through the batch sampler left the worker iterator to the cycle
    # collector, whose teardown waited 5 s per worker.
    import gc
    import time

    x, y = make_data(37)
    stream = StreamingLoader(TensorDataset(x, y), 5, num_workers=2)
    stream.next_batch()
    t0 = time.perf_counter()
    del stream
    gc.collect()
    assert time.perf_counter() - t0 < 3.0
