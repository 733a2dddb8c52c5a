"""The proximity kernel's per-part work as one compiled loop (optional: needs numba, ``pip install lmtt-widgets[fast]``).

The tensor version in :mod:`.proximity` makes about ten passes over the parts of a chunk (coefficient times linear
term, bound, mask, ``nonzero``, gathers, buckets, corrections, clamp), each a read and a write of every part: at
2,048 tokens on SmolLM2 that is 600 million parts a pass. This loop reads each part once: coefficient x linear
term; where the linear term is positive and the part can exceed a coordinate of y, the correction of the module
docstring of :mod:`.proximity` over the row's coordinates in ascending order of |y_k| / |scale_k|, stopping at the
first one the part cannot exceed (no coordinate after it can need the correction); then the clamp at 0.
The same identity and the same inputs (the linear term still comes from the tensor product), so the results equal
the tensor version's to float rounding (the order of the corrections' additions differs); ``tests/test_scoring_exact``
checks both against direct computations.

The loop holds no GIL: the rows of a chunk are split between threads (torch's own threads are idle meanwhile).
numba's threading layers are not used: two traces of two models on two threads must not abort the process.
"""

from __future__ import annotations

import os
import warnings
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

try:  # an optional extra: without it the tensor version runs
    import numba
except ImportError:  # pragma: no cover - exercised where numba is absent
    numba = None


class _NeverRaised(Exception):
    pass


# what numba raises when it cannot compile the loop for the arrays it is given (typing or lowering errors)
CompileError = numba.core.errors.NumbaError if numba is not None else _NeverRaised

# LMTT_FUSED=0 turns the compiled loop off (the tensor version runs; tests compare the two).
ENABLED = numba is not None and os.environ.get("LMTT_FUSED", "1") != "0"
# Parts per thread below which one thread does the whole chunk (a thread hand-off costs ~50 us).
MIN_PARTS_PER_THREAD = 1 << 16

_pool: ThreadPoolExecutor | None = None


def available(*tensors: torch.Tensor) -> bool:
    """The compiled loop can take these tensors (CPU, float32 or float64, one dtype)."""
    if not ENABLED:
        return False
    dtype = tensors[0].dtype
    return dtype in (torch.float32, torch.float64) and all(t.device.type == "cpu" and t.dtype == dtype
                                                            for t in tensors)


def finish_chunk(prox: torch.Tensor, coef: torch.Tensor, reach: torch.Tensor, basis: torch.Tensor,
                 signed_scale: torch.Tensor, absy: torch.Tensor, y_eff: torch.Tensor, sums: bool = False):
    """(proximities of one chunk, in place in ``prox``; their sums over parts [b, G, m] and over groups [b, m, J],
    or None, None without ``sums``).

    prox [b, G, m, J]: the linear terms' products (signed rows . direction), contiguous; coef [b, G, m, J] any
    strides; reach [b, G, J'] = max |direction|; basis [b, G, J', d] contiguous; signed_scale, absy, y_eff
    [b * m, d]: sign(y_k) x scale_k, |y_k| and |y_k| / |scale_k| (inf where scale_k = 0) of each row.
    """
    b, G, m, J = prox.shape
    y_eff = y_eff.numpy()
    order = np.argsort(y_eff, axis=1)  # each row's coordinates, ascending |y_eff| (numpy's sort: ~9x torch's here)
    y_sorted = np.take_along_axis(y_eff, order, axis=1)
    # the sums are written whether asked or not (one [b, G, m] and one [b, m, J] array: small beside the parts)
    by_group, by_part = prox.new_zeros(b, G, m), prox.new_zeros(b, m, J)
    args = [t.numpy() for t in (prox, coef, reach, basis, signed_scale, absy)] + [order, y_sorted] + [
        by_group.numpy(), by_part.numpy()]
    result = (prox, by_group, by_part) if sums else (prox, None, None)
    threads = min(torch.get_num_threads(), max(1, prox.numel() // MIN_PARTS_PER_THREAD), m)
    if threads <= 1:
        _kernel(*args, 0, m)
        return result
    global _pool
    if _pool is None or _pool._max_workers < threads:
        _pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="lmtt-fused")
    bounds = [m * k // threads for k in range(threads + 1)]
    for job in [_pool.submit(_kernel, *args, r0, r1) for r0, r1 in zip(bounds, bounds[1:])]:
        job.result()
    return result


def _loop(prox, coef, reach, basis, signed_scale, absy, order, y_sorted, by_group, by_part, r0, r1):
    b, G, m, J = prox.shape
    d = basis.shape[3]
    for bb in range(b):
        for g in range(G):
            for r in range(r0, r1):
                row = bb * m + r
                smallest = y_sorted[row, 0]
                total = 0.0  # (float64: a row's sum over thousands of parts)
                for j in range(J):
                    a = coef[bb, g, r, j]
                    lin = prox[bb, g, r, j] * a
                    if lin > 0:
                        bound = abs(a) * reach[bb, g, j]
                        if bound > smallest:  # it may exceed some |y_k|: correct on those coordinates
                            corr = 0.0
                            for k in range(d):
                                if y_sorted[row, k] >= bound:
                                    break
                                c = order[row, k]
                                t = a * basis[bb, g, j, c] * signed_scale[row, c] - absy[row, c]
                                if t > 0:
                                    corr += t
                            lin -= 2 * corr
                            if lin < 0:
                                lin = 0.0
                        prox[bb, g, r, j] = lin
                        value = prox[bb, g, r, j]  # as stored: the sums add what the caller reads
                        total += value
                        by_part[bb, r, j] += value
                    else:
                        prox[bb, g, r, j] = 0.0
                by_group[bb, g, r] = total


def _compile(fn):
    """The loop compiled (and cached on disk where numba finds a place); None where numba cannot."""
    if numba is None:
        return None
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except Exception:  # noqa: BLE001 - no cache location (a read-only install): compile per process instead
        try:
            return numba.njit(nogil=True)(fn)
        except Exception:  # noqa: BLE001
            return None


_kernel = _compile(_loop)
ENABLED = ENABLED and _kernel is not None


def disable(reason: str) -> None:
    """Run the tensor version from now on (the compiled loop failed: say so once)."""
    global ENABLED
    ENABLED = False
    warnings.warn(f"lmtt-widgets: the compiled proximity loop is off ({reason}); the tensor version runs instead "
                  "(same results, slower on long prompts).", RuntimeWarning, stacklevel=3)
