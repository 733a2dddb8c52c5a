"""One compiled pass for the proximity of scaled parts (optional: numba, the package's ``fast`` extra); without
numba, proximity.py computes the same numbers with tensor operations.

Given each part's signed linear term (from a matrix product), the pass multiplies in the part's coefficient, decides
whether the part can reach past any coordinate of y, and subtracts the exact correction on those coordinates
only, reading the part's direction once, in one sweep over the parts. The tensor path needs about ten sweeps
over tensors of the size of all parts (products, bounds, masks, sorts, gathers) and dominates long prompts.

The numbers are the same identity as proximity.py (see its docstring); only the order of floating-point sums
within a correction differs (within a few ulps of the tensor path's result).

Numba's workqueue threading layer (used where no OpenMP or TBB runtime is found) must not run two parallel kernels
at once (it aborts the process): calls are serialised by a lock, and run on as many threads as torch uses.
"""

from __future__ import annotations

import importlib.util
import os
import threading

import numpy as np
import torch

# An optional extra: everything works without it, only slower on long prompts. Imported on first use (importing
# numba takes ~0.3 s, more than the rest of the package), as are the kernels it compiles.
INSTALLED = importlib.util.find_spec("numba") is not None
numba = None
# LMTT_FUSED=0 turns the compiled pass off (the tensor path is then used everywhere; tests compare the two).
ENABLED = INSTALLED and os.environ.get("LMTT_FUSED", "1") != "0"
_lock = threading.Lock()
_KERNELS: dict = {}
_DTYPES = (torch.float32, torch.float64)


# Fewest parts (over a whole call, or a whole layer group of a trace) worth the sweep: below, the tensor path is as
# fast (SmolLM2, 128 tokens: 0.74M parts a group of 5 layers, no gain; 512 tokens, 2.4M a layer: 1.8x against 2.1x
# an sdpa forward), and a short prompt's first explain does not wait for the kernel to compile or load.
MIN_PARTS = 2**21


def worth(parts: int, *tensors: torch.Tensor | None) -> bool:
    """Whether to sweep this many parts with the compiled pass (see :func:`usable`)."""
    return parts >= MIN_PARTS and usable(*tensors)


def usable(*tensors: torch.Tensor | None) -> bool:
    """Whether the compiled pass can take these tensors (CPU, float32/64, one dtype; None entries are ignored)."""
    tensors = [t for t in tensors if t is not None]
    if not ENABLED:
        return False
    t0 = tensors[0]
    return all(t.device.type == "cpu" and t.dtype == t0.dtype and not t.requires_grad for t in tensors) and (
        t0.dtype in _DTYPES)


def proximity_in_place(prox, coef, reach, basis_t, y_sorted, order, signed_scale, abs_y, sums: bool):
    """prox[b, g, r, j] <- max(0, coef * prox - 2 * sum_k relu(s_k z_k - |y_k|)) for z = coef * scale * basis[b, g, j],
    returned as (prox, its sums over j [b, G, m], its sums over g [b, m, J]) with ``sums``, else (prox,).

    prox: [b, G, m, J] contiguous, the signed linear term of each part (before its coefficient); coef: [b, G, m, J]
    any strides; reach: [b, G, J'] the largest |coordinate| of each direction; basis_t: [b, G, d, J'] contiguous,
    the directions transposed (a coordinate of consecutive parts is contiguous); y_sorted/order: [b, m, w] each row's
    w smallest |y_k| / |scale_k| ascending and their coordinates (a part that reaches past the w-th is corrected on
    every coordinate); signed_scale, abs_y: [b, m, d] sign(y_k) * scale_k and |y_k|."""
    b, G, m, J = prox.shape
    if prox.numel() == 0:  # nothing to sweep (and no storage span to read coef through)
        return (prox, prox.new_zeros(b, G, m), prox.new_zeros(b, m, J)) if sums else (prox,)
    if coef.stride(-1) != 1:
        coef = coef.contiguous()
    by_group = prox.new_empty(b, G, m)
    by_part = prox.new_empty(b, m, J)
    # coef is read through its storage with its strides, so that the compiled loop sees unit-stride rows (a strided
    # array argument is not vectorised) and a block of the attention matrices is not copied
    span = 1 + sum((n - 1) * st for n, st in zip(coef.shape, coef.stride()))
    flat = torch.empty(0, dtype=coef.dtype).set_(coef.untyped_storage(), coef.storage_offset(), (span,), (1,))
    arrays = [t.detach().numpy() for t in (prox, flat, reach, basis_t, y_sorted, order, signed_scale, abs_y,
                                           by_group, by_part)]
    with _lock:
        kernel = _kernel(prox.dtype)
        threads = numba.get_num_threads()
        try:
            numba.set_num_threads(max(1, min(numba.config.NUMBA_NUM_THREADS, torch.get_num_threads())))
            kernel(*arrays[:2], *coef.stride()[:3], *arrays[2:], DENSE_COORDS)
        finally:
            numba.set_num_threads(threads)
    return (prox, by_group, by_part) if sums else (prox,)


# Each row's this many smallest |y_k| are corrected for every part at once (a loop that vectorises, and whose term
# is exactly 0 for a part that cannot reach the coordinate); the parts that reach further are then corrected one by
# one. Measured on SmolLM2 at 2,048 tokens: 2 beat 0, 4 and 8.
DENSE_COORDS = 2


def _make_kernel(zero):
    """The compiled sweep for one float type (``zero`` of that type keeps every temporary in it)."""
    inf = zero + float("inf")

    @numba.njit(parallel=True, cache=True, nogil=True, boundscheck=False, fastmath={"reassoc", "contract"})
    def kernel(prox, coef, s0, s1, s2, reach, basis_t, y_sorted, order, signed_scale, abs_y, by_group, by_part,
               dense):
        B, G, m, J = prox.shape
        d, w = basis_t.shape[2], y_sorted.shape[2]
        for row in numba.prange(B * m):  # one target row of one block per iteration: its sums are its own
            b, r = row // m, row % m
            K = min(dense, w)
            last = y_sorted[b, r, w - 1]
            # parts whose bound |a| max|b_k| exceeds split may need coordinates past the first K
            split = y_sorted[b, r, K] if K < w else (inf if w == d else last)
            excess = np.empty(J, prox.dtype)  # each part's sum of relu(s_k z_k - |y_k|)
            some = np.empty(J, np.int32)  # the parts that need more than the first K coordinates
            part_sum = by_part[b, r]
            part_sum[:] = zero
            for g in range(G):
                p, a, reach_g = prox[b, g, r], coef[b * s0 + g * s1 + r * s2:], reach[b, g]
                for j in range(J):
                    p[j] = p[j] * a[j]  # the linear term
                    excess[j] = zero
                for k in range(K):  # the K smallest |y_k|, for every part
                    c = order[b, r, k]
                    s, y_abs, u = signed_scale[b, r, c], abs_y[b, r, c], basis_t[b, g, c]
                    for j in range(J):
                        excess[j] += max(a[j] * u[j] * s - y_abs, zero)
                n = 0
                for j in range(J):  # (a linear term <= 0 stays 0 whatever the correction: skipped)
                    some[n] = j
                    n += (p[j] > zero) & (abs(a[j]) * reach_g[j] > split)
                for t in range(n):
                    j = some[t]
                    bound = abs(a[j]) * reach_g[j]
                    more = zero
                    if bound <= last or w == d:  # the next smallest |y_k|, ascending, up to the bound
                        for k in range(K, w):
                            if y_sorted[b, r, k] >= bound:
                                break
                            c = order[b, r, k]
                            more += max(a[j] * basis_t[b, g, c, j] * signed_scale[b, r, c] - abs_y[b, r, c], zero)
                        excess[j] += more
                    else:  # past the w smallest: every coordinate, from scratch
                        for c in range(d):
                            more += max(a[j] * basis_t[b, g, c, j] * signed_scale[b, r, c] - abs_y[b, r, c], zero)
                        excess[j] = more
                group = zero
                for j in range(J):
                    value = max(p[j] - (excess[j] + excess[j]), zero)
                    p[j] = value
                    group += value
                    part_sum[j] += value
                by_group[b, g, r] = group

    return kernel


def _kernel(dtype: torch.dtype):
    """The sweep for one float type, numba imported and the kernel made on first use (called under _lock)."""
    global numba
    if dtype not in _KERNELS:
        import numba as imported

        numba = imported  # the kernels' code reads the module global
        _KERNELS[dtype] = _make_kernel(np.float32(0) if dtype == torch.float32 else np.float64(0))
    return _KERNELS[dtype]
