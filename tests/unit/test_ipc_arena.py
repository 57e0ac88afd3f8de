"""The memfd arena: aligned, non-overlapping blocks, full coalescing, clear errors, pages handed
back to the kernel, and a size the peer cannot change."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from serving.ipc.arena import ALIGNMENT, Arena, ArenaError, ArenaMap

MiB = 1 << 20


@pytest.fixture
def arena():
    arena = Arena(1 * MiB, "test")
    yield arena
    arena.close()


# A program of (alloc size) or (free the i-th live block) steps.
_steps = st.lists(
    st.one_of(
        st.integers(min_value=0, max_value=40_000).map(lambda n: ("alloc", n)),
        st.integers(min_value=0, max_value=1_000).map(lambda i: ("free", i)),
    ),
    max_size=200,
)


@settings(derandomize=True, max_examples=200, deadline=None)
@given(_steps)
def test_blocks_are_aligned_disjoint_inside_and_everything_coalesces_back(steps):
    capacity = 256 * 1024
    arena = Arena(capacity, "property")
    try:
        live: dict[int, int] = {}  # offset -> requested bytes
        for kind, value in steps:
            if kind == "alloc":
                offset = arena.alloc(value)
                if offset is None:
                    # Refused only when no gap between live blocks could hold it.
                    size = max(ALIGNMENT, -(-value // ALIGNMENT) * ALIGNMENT)
                    edges = sorted(
                        (o, o + max(ALIGNMENT, -(-n // ALIGNMENT) * ALIGNMENT))
                        for o, n in live.items()
                    )
                    starts = [0] + [end for _, end in edges]
                    ends = [start for start, _ in edges] + [capacity]
                    assert all(end - start < size for start, end in zip(starts, ends, strict=True))
                    continue
                assert offset % ALIGNMENT == 0 and offset + value <= capacity
                for other, size in live.items():
                    assert offset + max(value, 1) <= other or other + max(size, 1) <= offset
                arena.view(offset, value)[:] = bytes([offset // ALIGNMENT % 251]) * value
                live[offset] = value
            elif live:
                offset = sorted(live)[value % len(live)]
                # What another block's writes could have clobbered is still this block's own.
                expected = bytes([offset // ALIGNMENT % 251]) * live[offset]
                assert bytes(arena.view(offset, live.pop(offset))) == expected
                arena.free(offset)
        for offset in list(live):
            arena.free(offset)
        assert arena.used == 0
        # Fully coalesced: the whole arena is one block again.
        assert arena.alloc(capacity) == 0
    finally:
        arena.close()


def test_fragmented_free_space_does_not_satisfy_a_larger_block_until_neighbours_merge(arena):
    blocks = []
    while (offset := arena.alloc(ALIGNMENT)) is not None:
        blocks.append(offset)
    assert len(blocks) == arena.capacity // ALIGNMENT
    for offset in blocks[::2]:
        arena.free(offset)
    assert arena.used == arena.capacity // 2
    assert arena.alloc(2 * ALIGNMENT) is None  # half the arena free, no two adjacent blocks
    assert arena.alloc(ALIGNMENT) is not None
    arena.free(blocks[1])  # joins blocks[0] (still free) and blocks[2]
    assert arena.alloc(2 * ALIGNMENT) in (blocks[0], blocks[1], blocks[2])


def test_sizes_round_up_to_the_alignment_and_zero_bytes_still_gets_a_block(arena):
    blocks = [arena.alloc(0), arena.alloc(1), arena.alloc(65)]
    assert len(set(blocks)) == 3 and all(offset % ALIGNMENT == 0 for offset in blocks)
    assert arena.used == 64 + 64 + 128


def test_no_room_returns_none_and_a_bad_free_or_view_is_a_clear_error(arena):
    assert arena.alloc(arena.capacity + 1) is None
    offset = arena.alloc(100)
    arena.free(offset)
    with pytest.raises(ArenaError, match="freed twice"):
        arena.free(offset)
    with pytest.raises(ArenaError, match="not an allocated block"):
        arena.free(12345)
    with pytest.raises(ArenaError, match="outside the arena"):
        arena.view(arena.capacity - 8, 16)
    with pytest.raises(ValueError, match="at least"):
        Arena(8, "tiny")


def test_freeing_a_large_block_gives_its_pages_back_a_small_one_stays(arena):
    big = Arena(256 * MiB, "release")
    try:
        assert big.resident_bytes == 0  # sparse: nothing touched yet
        small = big.alloc(64 * 1024)
        large = big.alloc(64 * MiB)
        big.view(small, 64 * 1024)[:] = b"s" * (64 * 1024)
        big.view(large, 64 * MiB)[:] = b"x" * (64 * MiB)
        touched = big.resident_bytes
        assert touched >= 64 * MiB + 64 * 1024
        big.free(large)
        assert big.resident_bytes <= touched - 64 * MiB + 2 * os.sysconf("SC_PAGESIZE")
        # The punched range reads back as zeros (a hole), and is reusable.
        assert bytes(big.view(large + 64 * MiB - 4096, 4096)) == bytes(4096)
        big.free(small)  # below the threshold: kept for reuse, no syscall per message
        assert big.resident_bytes >= 64 * 1024
        assert big.alloc(64 * MiB) is not None
    finally:
        big.close()


def test_the_peer_can_neither_shrink_nor_grow_the_arena(arena):
    with pytest.raises(PermissionError):
        os.ftruncate(arena.fd, 4096)
    with pytest.raises(PermissionError):
        os.ftruncate(arena.fd, 2 * arena.capacity)


def test_a_map_of_the_fd_shares_bytes_and_refuses_a_capacity_larger_than_the_fd(arena):
    offset = arena.alloc(16)
    arena.view(offset, 16)[:] = b"0123456789abcdef"
    peer = ArenaMap(os.dup(arena.fd), arena.capacity)
    try:
        assert bytes(peer.view(offset, 16)) == b"0123456789abcdef"
        peer.view(offset, 4)[:] = b"ABCD"
        assert bytes(arena.view(offset, 16)) == b"ABCD456789abcdef"
    finally:
        peer.close()
    with pytest.raises(ArenaError, match="fewer than"):
        ArenaMap(os.dup(arena.fd), arena.capacity * 2)


def test_close_with_a_view_still_alive_keeps_that_view_valid():
    arena = Arena(MiB, "close")
    view = arena.view(arena.alloc(8), 8)
    view[:] = b"survives"
    arena.close()
    assert bytes(view) == b"survives"
    arena.close()  # idempotent


def test_the_package_imports_neither_tensorflow_nor_other_serving_modules():
    code = (
        "import sys, serving.ipc.arena, serving.ipc.tensors, serving.ipc.channel\n"
        "print(','.join(sorted(m for m in sys.modules if m.startswith(('tensorflow', 'serving'))"
        " and not m.startswith('serving.ipc') and m not in ('serving', 'serving.version'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == ""
