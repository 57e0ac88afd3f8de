"""Shared memory with no name on disk: a memfd one process allocates in and another maps.

The owner (``Arena``) creates an anonymous ``memfd``, sizes it with ``ftruncate`` (sparse: a
page costs memory only once written) and seals its size, so a peer can neither shrink it under
a live mapping (which would turn reads into SIGBUS) nor grow it. The peer receives the fd over
the control socket and maps it with ``ArenaMap``. Only the owner allocates; both sides read and
write through ``view``.

The allocator hands out 64-byte-aligned blocks (a cache line, and more than any numpy dtype
needs). It is a segregated-fit allocator in the spirit of TLSF: free blocks sit in power-of-two
size bins, found in O(1) through a bitmap of non-empty bins, and merged with their free
neighbours on ``free`` through two dicts (by start and by end), so alloc and free cost a few
dict operations whatever the fragmentation. In front of it, freed blocks up to 64 KiB wait in a
cache per exact size, since a model's requests come in a few sizes: the next message of that
size reuses one in a dict lookup, and the caches merge back when the arena runs short. A freed
block of 1 MiB or more gives its pages back to the kernel (``MADV_REMOVE`` punches a hole in the
memfd), so a 500 MB request does not stay resident after it is answered.
"""

from __future__ import annotations

import contextlib
import fcntl
import mmap
import os
import threading
from typing import NoReturn

ALIGNMENT = 64
# Freed blocks at least this large are returned to the kernel; smaller ones stay resident for
# reuse (a syscall per small message would cost more than the pages are worth).
RELEASE_THRESHOLD = 1 << 20
# Freed blocks up to this size wait in per-size caches (dlmalloc's "fast bins"), since messages
# of one model come in a few sizes; the caches merge into the free index when alloc runs short.
CACHED_MAX = 1 << 16
_PAGE = mmap.PAGESIZE
_SEALS = fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL


class ArenaError(ValueError):
    """A block the arena did not hand out (double free, foreign offset) or a view out of range."""


def _out_of_range(offset: int, nbytes: int, capacity: int) -> NoReturn:
    raise ArenaError(f"view [{offset}, {offset + nbytes}) is outside the arena's {capacity} bytes")


def _unmap(memory: memoryview, mapping: mmap.mmap) -> None:
    memory.release()
    # Views handed out and still alive keep the mapping; it goes with the last of them.
    with contextlib.suppress(BufferError):
        mapping.close()


class Arena:
    """A memfd-backed heap: ``alloc`` / ``free`` 64-byte-aligned blocks, ``view`` their bytes.

    Thread-safe (one lock around the allocator's dicts): the model process may free a block
    from a batch thread while its event loop allocates.
    """

    def __init__(self, capacity: int, label: str) -> None:
        if capacity < ALIGNMENT:
            raise ValueError(f"arena capacity must be at least {ALIGNMENT} bytes, got {capacity}")
        self.capacity = capacity
        self.label = label
        self.fd = os.memfd_create(label, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        try:
            os.ftruncate(self.fd, capacity)
            fcntl.fcntl(self.fd, fcntl.F_ADD_SEALS, _SEALS)
            self._mmap = mmap.mmap(self.fd, capacity)
        except BaseException:
            os.close(self.fd)
            raise
        self._memory = memoryview(self._mmap)
        self._lock = threading.Lock()
        usable = capacity - capacity % ALIGNMENT
        self._allocated: dict[int, int] = {}  # offset -> size
        self._free_at: dict[int, int] = {}  # start -> size
        self._free_ending: dict[int, int] = {}  # end -> start
        self._bins: list[dict[int, int]] = [{} for _ in range(usable.bit_length())]
        self._nonempty = 0  # bit k set when bin k holds a block
        self._cached: dict[int, list[int]] = {}  # size -> freed small blocks of that size
        self.used = 0  # bytes in allocated blocks
        self._insert(0, usable)

    # The free-block index. A block of size s lives in bin s.bit_length() - 1, i.e. bin k holds
    # sizes in [2**k, 2**(k+1)).
    def _insert(self, start: int, size: int) -> None:
        self._free_at[start] = size
        self._free_ending[start + size] = start
        k = size.bit_length() - 1
        self._bins[k][start] = size
        self._nonempty |= 1 << k

    def _remove(self, start: int, size: int) -> None:
        del self._free_at[start]
        del self._free_ending[start + size]
        k = size.bit_length() - 1
        bin_ = self._bins[k]
        del bin_[start]
        if not bin_:
            self._nonempty &= ~(1 << k)

    def _find(self, size: int) -> tuple[int, int] | None:
        """A free block of at least ``size`` bytes: any block in a bin above size's own (all fit),
        else the first fitting block in its own bin."""
        k = size.bit_length() - 1
        above = self._nonempty >> (k + 1)
        if above:
            bin_ = self._bins[k + 1 + ((above & -above).bit_length() - 1)]
            start = next(iter(bin_))
            return start, bin_[start]
        if self._nonempty >> k & 1:
            for start, block in self._bins[k].items():
                if block >= size:
                    return start, block
        return None

    def alloc(self, nbytes: int) -> int | None:
        """The offset of a new block of at least ``nbytes`` bytes, or None when none is free."""
        if nbytes < 0:
            raise ValueError(f"cannot allocate {nbytes} bytes")
        size = max(ALIGNMENT, -(-nbytes // ALIGNMENT) * ALIGNMENT)
        with self._lock:
            cached = self._cached.get(size)
            if cached:
                start = cached.pop()
            else:
                found = self._find(size)
                if found is None:
                    if not self._cached:
                        return None
                    self._merge_cached()
                    found = self._find(size)
                    if found is None:
                        return None
                start, block = found
                self._remove(start, block)
                if block > size:
                    self._insert(start + size, block - size)
            self._allocated[start] = size
            self.used += size
            return start

    def free(self, offset: int) -> None:
        """Return a block from ``alloc``. A small block goes to the cache of its exact size (the
        next message of that size takes it back in a dict lookup); a larger one merges with its
        free neighbours, and from 1 MiB its pages go back to the kernel."""
        with self._lock:
            size = self._allocated.pop(offset, None)
            if size is None:
                raise ArenaError(
                    f"arena {self.label!r}: offset {offset} is not an allocated block "
                    "(freed twice, or never returned by alloc)"
                )
            self.used -= size
            if size <= CACHED_MAX:
                cached = self._cached.get(size)
                if cached is None:
                    self._cached[size] = [offset]
                else:
                    cached.append(offset)
                return
            start, end = self._coalesce(offset, size)
            if size >= RELEASE_THRESHOLD:
                self._release(start, end)

    def _coalesce(self, offset: int, size: int) -> tuple[int, int]:
        """Put a block back into the free index merged with its free neighbours: the range."""
        start, end = offset, offset + size
        after = self._free_at.get(end)
        if after is not None:
            self._remove(end, after)
            end += after
        before = self._free_ending.get(start)
        if before is not None:
            self._remove(before, start - before)
            start = before
        self._insert(start, end - start)
        return start, end

    def _merge_cached(self) -> None:
        """Return every cached block to the free index (when no free block is large enough), so
        the cache never makes alloc refuse what the arena could hold."""
        cached, self._cached = self._cached, {}
        for size, offsets in cached.items():
            for offset in offsets:
                self._coalesce(offset, size)

    def _release(self, start: int, end: int) -> None:
        """Punch the whole pages inside the free range [start, end) out of the memfd. Under the
        lock: a concurrent alloc must not hand out (and have written) a page being punched."""
        first = -(-start // _PAGE) * _PAGE
        last = end - end % _PAGE
        if last > first:
            self._mmap.madvise(mmap.MADV_REMOVE, first, last - first)

    def view(self, offset: int, nbytes: int) -> memoryview:
        """A writable view of ``nbytes`` bytes at ``offset``."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.capacity:
            _out_of_range(offset, nbytes, self.capacity)
        return self._memory[offset : offset + nbytes]

    @property
    def resident_bytes(self) -> int:
        """Memory the memfd holds now (allocated pages, from its st_blocks)."""
        return os.fstat(self.fd).st_blocks * 512

    def close(self) -> None:
        """Unmap and close the fd. Views still alive keep the mapping until they are released;
        the memory goes back to the kernel once no process holds the fd or a mapping."""
        if self.fd < 0:
            return
        _unmap(self._memory, self._mmap)
        os.close(self.fd)
        self.fd = -1


class ArenaMap:
    """A peer's arena mapped read/write from the fd it sent. Takes ownership of ``fd``."""

    def __init__(self, fd: int, capacity: int) -> None:
        try:
            size = os.fstat(fd).st_size
            if size < capacity:
                raise ArenaError(
                    f"the arena fd holds {size} bytes, fewer than the announced {capacity}"
                )
            self._mmap = mmap.mmap(fd, capacity)
        except BaseException:
            os.close(fd)
            raise
        self.fd = fd
        self.capacity = capacity
        self._memory = memoryview(self._mmap)

    def view(self, offset: int, nbytes: int) -> memoryview:
        """A writable view of ``nbytes`` bytes at ``offset``."""
        if offset < 0 or nbytes < 0 or offset + nbytes > self.capacity:
            _out_of_range(offset, nbytes, self.capacity)
        return self._memory[offset : offset + nbytes]

    def close(self) -> None:
        if self.fd < 0:
            return
        _unmap(self._memory, self._mmap)
        os.close(self.fd)
        self.fd = -1
