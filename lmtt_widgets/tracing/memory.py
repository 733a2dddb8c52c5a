"""The C allocator during a long trace: reuse freed memory across layers, hand it back when too much is free.

A long trace allocates and frees the same large tensors in every layer: a [H, T, T] attention, the eager
attention's temporaries, the scoring's chunks (~450 MB a layer at 2,048 tokens on SmolLM2). glibc's malloc serves
blocks past 32 MB with a fresh mmap each time and unmaps them when freed, so every layer faults every page of them
in again; on a virtual machine that cost about a third of explain's time at 2,048 tokens. During the pass
(:func:`reusing_heap`), malloc serves every block from its heap (M_MMAP_MAX = 0) and keeps what is freed
(M_TRIM_THRESHOLD high), so the next layer reuses the same pages; after a layer, once more than FREE_LIMIT bytes
are resident but free (the heap fragments: at 2,048 tokens the resident memory once grew ~2.2 GB for ~1.6 GB of
live tensors), malloc_trim(0) hands the free pages back. Afterwards mmap is allowed again and the heap trimmed.
Resident-but-free is the resident memory less what malloc has handed out, less what the process held outside
malloc when the pass began.

Setting these thresholds turns glibc's own adaptive thresholds off for the rest of the process (malloc(3)); the
values put back are the ones they adapt to in a process that has freed large blocks (every PyTorch one).
Elsewhere (macOS, Windows, musl) all of this is a no-op.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import threading

# Bytes resident but free after a layer past which they are handed back (what a long trace may hold beyond its live
# tensors and the layer at work).
FREE_LIMIT = 768 * 2**20
# A layer's transient memory is about three times its [H, T, T] attention; the heap is reused while one attention
# takes at most this many bytes (2,048 tokens on SmolLM2: 151 MB). Past it, a layer alone would fill FREE_LIMIT:
# memory is handed back after every layer, as malloc's own mmap would (4,096 tokens: 604 MB, peak +2.3 GB).
REUSE_ATTENTION_LIMIT = 256 * 2**20
# mallopt parameters (malloc.h) and what is put back after the pass: glibc's default mmap count, the largest
# adaptive mmap threshold (32 MB on 64-bit) and twice it, the trim threshold glibc adapts to with it.
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_MMAP_MAX = 65536
_ADAPTED_MMAP_THRESHOLD = 32 * 2**20
_ADAPTED_TRIM_THRESHOLD = 2 * _ADAPTED_MMAP_THRESHOLD
_KEEP_FREED = 2**31 - 1  # an int (mallopt's value): keep up to 2 GB at the top of the heap


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks",
                 "keepcost")]


def _libc_function(name: str, restype=ctypes.c_int):
    try:  # the C library the process already runs on (find_library would spawn ldconfig at import)
        fn = getattr(ctypes.CDLL(None), name)
    except (OSError, AttributeError, TypeError):
        return None
    fn.restype = restype
    return fn


_TRIM = _libc_function("malloc_trim")
_MALLOPT = _libc_function("mallopt")
_MALLINFO2 = _libc_function("mallinfo2", _Mallinfo2)
_PAGE = os.sysconf("SC_PAGE_SIZE") if os.path.exists("/proc/self/statm") else None
_passes = 0  # traces inside reusing_heap now (threads may trace different models at once)
_passes_lock = threading.Lock()


def release_freed_memory() -> bool:
    """Return the allocator's free pages to the system; False where the C library has no malloc_trim."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


def resident_bytes() -> int:
    """The process's resident memory (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * _PAGE


def malloc_bytes() -> int:
    """Bytes malloc has handed out and not had back (heap and mmapped blocks, all arenas). Where another allocator
    is preloaded (jemalloc, tcmalloc), glibc's count misses its blocks: everything then looks free and memory is
    handed back after every layer, as without this module."""
    info = _MALLINFO2()
    return int(info.uordblks) + int(info.hblkhd)


def release_when_much_free(limit: int | None = None):
    """A function to call after each layer: hands the free pages back once more than ``limit`` (default
    FREE_LIMIT) bytes are resident but free, counted from now."""
    outside = resident_bytes() - malloc_bytes()  # what the process holds outside malloc (code, mapped files)

    def after_layer() -> bool:
        if resident_bytes() - malloc_bytes() - outside <= (FREE_LIMIT if limit is None else limit):
            return False
        return release_freed_memory()

    return after_layer


def reuses_heap(attention_bytes: int) -> bool:
    """Whether :func:`reusing_heap` keeps freed memory for a trace whose layers' attention takes this many bytes."""
    controlled = None not in (_MALLOPT, _MALLINFO2, _TRIM, _PAGE)
    return controlled and attention_bytes <= REUSE_ATTENTION_LIMIT


@contextlib.contextmanager
def reusing_heap(attention_bytes: int):
    """Within the block, malloc keeps freed memory for reuse (see the module docstring) when :func:`reuses_heap`;
    yields what to call after each layer (:func:`release_when_much_free`, else :func:`release_freed_memory`).
    Nested and concurrent blocks share one setting."""
    global _passes
    if not reuses_heap(attention_bytes):
        yield release_freed_memory  # large layers, or no control over the allocator: hand back after every layer
        return
    entered = False
    try:
        with _passes_lock:
            _passes += 1
            entered = True
            if _passes == 1:
                _MALLOPT(_M_MMAP_MAX, 0)
                _MALLOPT(_M_TRIM_THRESHOLD, _KEEP_FREED)
        yield release_when_much_free()
    finally:
        if entered:  # (an interrupt before the count went up leaves nothing to put back)
            with _passes_lock:
                _passes -= 1
                if _passes == 0:
                    _MALLOPT(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)
                    _MALLOPT(_M_TRIM_THRESHOLD, _ADAPTED_TRIM_THRESHOLD)
                    _MALLOPT(_M_MMAP_THRESHOLD, _ADAPTED_MMAP_THRESHOLD)
                    release_freed_memory()
