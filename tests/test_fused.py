"""Issue 10, point 8: the compiled proximity sweep (contributions/fused.py) gives the tensor path's numbers, and long
traces reuse the heap across layers (tracing/memory.py) without holding more than they say."""

import threading

import numpy as np
import pytest
import torch

from lmtt_widgets import explain
from lmtt_widgets.contributions import fused, proximity
from tiny_models import FAMILIES, build, loaded

PROMPT = "the cat sat on the mat because the mat was warm"


@pytest.fixture(autouse=True)
def sweep_everything(monkeypatch):
    """Tiny models and parts: the compiled sweep runs whatever the size (it skips small jobs by default)."""
    monkeypatch.setattr(fused, "MIN_PARTS", 0)


def test_small_jobs_take_the_tensor_path_and_a_layer_group_decides_once(monkeypatch):
    monkeypatch.setattr(fused, "MIN_PARTS", 2**21)
    calls = []
    kernel = fused.proximity_in_place
    monkeypatch.setattr(fused, "proximity_in_place", lambda *a: calls.append(a[0].shape) or kernel(*a))
    y, coef, basis, scale = random_parts(torch.float32, False, 64)
    proximity.grouped_part_proximity(y, coef, basis, scale)
    assert calls == []  # 2 x 3 x 17 x 23 parts: not worth it
    proximity.grouped_part_proximity(y, coef, basis, scale, compiled=True)
    assert calls  # a caller that splits a large job decides for all its calls
    calls.clear()
    explain(loaded("llama"), PROMPT)
    assert calls == []  # a short prompt's first explain neither compiles nor loads the kernel
    monkeypatch.setattr(fused, "MIN_PARTS", 1)
    explain(loaded("llama"), PROMPT)
    assert calls


def test_numba_is_installed_where_the_tests_run():
    # the test extra brings numba: without it every comparison below would compare the tensor path with itself
    assert fused.INSTALLED and fused.ENABLED


def direct(y, coef, basis, scale):
    """max(|y|_1 - |y - z|_1, 0) for every part, from the full vectors (the definition)."""
    z = coef[..., None] * basis[:, :, None, :, :] * (1 if scale is None else scale[:, None, :, None, :])
    return (y.abs().sum(-1)[:, None, :, None] - (y[:, None, :, None, :] - z).abs().sum(-1)).clamp_min(0)


def random_parts(dtype, scaled, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    B, G, N, J = 2, 3, 17, 23
    y = torch.randn(B, N, d, generator=g, dtype=dtype)
    y[0, 0, : d // 4] = 0  # coordinates where either sign works
    coef = torch.rand(B, G, N + 2, J + 5, generator=g, dtype=dtype)[:, :, 1 : N + 1, 2 : J + 2]  # strided view
    coef[1, :, :, 7] = 0  # absent parts
    basis = torch.randn(B, G, J, d, generator=g, dtype=dtype) * 4  # large against y: many coordinates flip
    scale = torch.rand(B, N, d, generator=g, dtype=dtype) if scaled else None
    if scaled:
        scale[0, 1, :3] = 0  # a frozen post-norm that zeroes coordinates
    return y, coef, basis, scale


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("scaled", [False, True])
# d = 2 and 9: every coordinate sorted (the w == d branches); 8, 64, 300: parts past the w sorted ones
@pytest.mark.parametrize("d", [2, 8, 9, 64, 300])
def test_compiled_sweep_equals_the_definition_and_the_tensor_path(dtype, scaled, d, monkeypatch):
    y, coef, basis, scale = random_parts(dtype, scaled, d)
    calls = []
    kernel = fused.proximity_in_place
    monkeypatch.setattr(fused, "proximity_in_place", lambda *a: calls.append(1) or kernel(*a))
    compiled, by_group, by_part = proximity.grouped_part_proximity(y, coef, basis, scale, sums=True)
    assert calls  # the compiled sweep ran
    monkeypatch.setattr(fused, "ENABLED", False)
    tensor = proximity.grouped_part_proximity(y, coef, basis, scale)
    want = direct(y, coef, basis, scale)
    tol = dict(rtol=0, atol=(2e-5 if dtype == torch.float32 else 1e-12) * float(y.abs().sum(-1).max()))
    torch.testing.assert_close(compiled, want, **tol)
    torch.testing.assert_close(tensor, want, **tol)
    assert 0 < int((want > 0).sum()) < want.numel()  # some parts score 0, others not: the cases are exercised
    assert bool(((want > 0) & (want < coef[..., None].mul(basis[:, :, None]).abs().sum(-1) * 0.99)).any())
    torch.testing.assert_close(by_group, compiled.sum(-1), **tol)
    torch.testing.assert_close(by_part, compiled.sum(1), **tol)


@pytest.mark.parametrize("buckets", [(1,), (4,), (2, 8)])
def test_compiled_sweep_with_few_sorted_coordinates(buckets):
    """Few sorted coordinates (width = largest bucket + 1): most corrected parts take the every-coordinate branch,
    or every coordinate is sorted when d is small."""
    for d in (2, 3, 6, 40):
        y, coef, basis, scale = random_parts(torch.float64, d % 2 == 0, d, seed=d)
        got = proximity.grouped_part_proximity(y, coef, basis, scale, buckets=buckets)
        torch.testing.assert_close(got, direct(y, coef, basis, scale), rtol=0, atol=1e-12)


def test_compiled_sweep_of_nothing():
    y, coef, basis, _ = random_parts(torch.float32, False, 16)
    prox, by_group, by_part = proximity.grouped_part_proximity(y, coef[..., :0], basis[:, :, :0], sums=True)
    assert prox.shape == (2, 3, 17, 0) and by_group.shape == (2, 3, 17) and not by_group.any()
    assert by_part.shape == (2, 17, 0)


def test_compiled_sweep_over_row_chunks_and_a_small_budget():
    y, coef, basis, scale = random_parts(torch.float64, True, 64, seed=3)
    whole = proximity.grouped_part_proximity(y, coef, basis, scale, sums=True)
    chunked = proximity.grouped_part_proximity(y, coef, basis, scale, sums=True, budget=3 * 23 * 4 * 5)
    for a, b in zip(whole, chunked):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-12)


def test_concurrent_calls_under_the_workqueue_layer_do_not_abort():
    """Numba's workqueue threading layer (where no OpenMP or TBB runtime is found) aborts the whole process when two
    threads launch parallel kernels at once: the sweep's lock serialises them."""
    import subprocess
    import sys
    from pathlib import Path

    code = (
        "import threading, torch\n"
        "from lmtt_widgets.contributions import proximity\n"
        "g = torch.Generator().manual_seed(0)\n"
        "y = torch.randn(1, 64, 32, generator=g); c = torch.rand(1, 4, 64, 200, generator=g)\n"
        "b = torch.randn(1, 4, 200, 32, generator=g) * 4\n"
        "want = proximity.grouped_part_proximity(y, c, b, compiled=True)\n"
        "bad = []\n"
        "def run():\n"
        "    for _ in range(30):\n"
        "        bad.append(not torch.equal(proximity.grouped_part_proximity(y, c, b, compiled=True), want))\n"
        "ts = [threading.Thread(target=run) for _ in range(4)]\n"
        "[t.start() for t in ts]; [t.join() for t in ts]\n"
        "import numba; print(numba.threading_layer(), sum(bad), len(bad))\n"
    )
    env = {**__import__("os").environ, "NUMBA_THREADING_LAYER": "workqueue", "NUMBA_NUM_THREADS": "2"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=Path(__file__).resolve().parent.parent)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["workqueue", "0", "120"]


def test_concurrent_calls_are_serialised_and_exact():
    """Numba's threading layers must not run two parallel kernels at once (the workqueue layer aborts): threads
    scoring at the same time each get their own exact numbers."""
    cases = [random_parts(torch.float32, s % 2 == 1, 64, seed=s) for s in range(6)]
    alone = [proximity.grouped_part_proximity(*c) for c in cases]
    got, errors = [None] * len(cases), []

    def run(k):
        try:
            for _ in range(5):
                got[k] = proximity.grouped_part_proximity(*cases[k])
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(k,)) for k in range(len(cases))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for a, b in zip(alone, got):
        assert torch.equal(a, b)


def scores_of(ex):
    out = []
    for ls in ex.scores.layers:
        out += [ls.edge_ptr, ls.edge_col, ls.edge_val, ls.head_total, ls.head_ptr, ls.head_col, ls.head_val,
                ls.resid_attn, ls.bias_attn, ls.mlp]
    return out


@pytest.mark.parametrize("family", FAMILIES)
def test_explain_gives_the_same_scores_with_and_without_the_compiled_sweep(family, monkeypatch):
    lm = loaded(family)
    calls = []
    kernel = fused.proximity_in_place
    monkeypatch.setattr(fused, "proximity_in_place", lambda *a: calls.append(1) or kernel(*a))
    with_kernel = explain(lm, PROMPT)
    assert calls
    monkeypatch.setattr(fused, "ENABLED", False)
    without = explain(lm, PROMPT)
    for a, b in zip(scores_of(with_kernel), scores_of(without)):
        if a.dtype.is_floating_point:
            torch.testing.assert_close(a, b, rtol=0, atol=1e-9)
        else:
            assert torch.equal(a, b)
    assert np.array_equal(with_kernel.route().nodes, without.route().nodes)


def test_float32_model_scores_agree_with_the_tensor_path(monkeypatch):
    from lmtt_widgets import load_model
    from tiny_models import ToyTokenizer

    lm = load_model(build("llama", dtype=torch.float32), ToyTokenizer())
    a = explain(lm, PROMPT)
    monkeypatch.setattr(fused, "ENABLED", False)
    b = explain(lm, PROMPT)
    for x, y in zip(scores_of(a), scores_of(b)):
        if x.dtype.is_floating_point:
            torch.testing.assert_close(x, y, rtol=0, atol=2e-6)


def test_neuron_importance_through_the_compiled_sweep(monkeypatch):
    ex = explain(loaded("llama"), PROMPT)
    compiled = [ex.neuron_importance(layer, ex.n_tokens - 1) for layer in range(ex.n_layers)]
    monkeypatch.setattr(fused, "ENABLED", False)
    ex._neuron_rows.clear()  # computed again, through the tensor path
    for layer, got in enumerate(compiled):
        want = ex.neuron_importance(layer, ex.n_tokens - 1)
        torch.testing.assert_close(got, want, rtol=0, atol=1e-9)
        assert float(want.abs().sum()) > 0


def glibc_heap_control():
    from lmtt_widgets.tracing import memory

    return memory.reuses_heap(0)


# where the C library is not glibc >= 2.33 on Linux (mallinfo2, /proc), the trace hands memory back after every
# layer as before, which test_tracing.py checks
needs_glibc = pytest.mark.skipif(not glibc_heap_control(), reason="malloc is not glibc >= 2.33 on Linux")


def mmapped_bytes():
    from lmtt_widgets.tracing import memory

    return int(memory._MALLINFO2().hblkhd)


def where_a_large_block_comes_from():
    """"mmap" or "heap": where malloc takes a block larger than all its free heap memory (so that only the mmap
    setting decides; not touched: only its address space is taken)."""
    from lmtt_widgets.tracing import memory

    size = int(memory._MALLINFO2().fordblks) + 64 * 2**20
    before = mmapped_bytes()
    block = torch.empty(size, dtype=torch.uint8)
    mapped = mmapped_bytes() >= before + size
    del block
    return "mmap" if mapped else "heap"


@needs_glibc
def test_long_traces_serve_large_blocks_from_the_heap_then_mmap_again():
    """Inside a long trace a large block comes from malloc's heap (the next layer reuses its pages: no fresh page
    faults); afterwards malloc maps such blocks again, as before."""
    from lmtt_widgets.tracing import memory

    assert where_a_large_block_comes_from() == "mmap"
    with memory.reusing_heap(memory.REUSE_ATTENTION_LIMIT) as after_layer:
        assert after_layer is not memory.release_freed_memory
        assert where_a_large_block_comes_from() == "heap"
    assert where_a_large_block_comes_from() == "mmap"
    with memory.reusing_heap(memory.REUSE_ATTENTION_LIMIT + 1) as after_layer:  # layers too large: as malloc does
        assert after_layer is memory.release_freed_memory
        assert where_a_large_block_comes_from() == "mmap"
    memory.release_freed_memory()


@needs_glibc
def test_freed_memory_is_kept_up_to_the_limit_and_then_handed_back(monkeypatch):
    from lmtt_widgets.tracing import memory, tracer

    trims = []
    monkeypatch.setattr(memory, "release_freed_memory", lambda: trims.append(1) or True)
    monkeypatch.setattr(tracer, "TRIM_ATTENTION_LIMIT", 1)  # a tiny prompt traced as a long one
    lm = loaded("llama")
    n_layers = len(lm.model.model.layers)
    tracer.trace(lm, PROMPT, keep_attention=False)
    assert trims == [1]  # little is free after each layer: handed back once, at the end
    trims.clear()
    monkeypatch.setattr(memory, "REUSE_ATTENTION_LIMIT", 0)  # layers too large to keep their memory
    tracer.trace(lm, PROMPT, keep_attention=False)
    assert len(trims) == n_layers  # after every layer, malloc's mmap untouched (no final trim of a heap setting)


@needs_glibc
def test_a_layer_that_leaves_much_free_memory_behind_has_it_handed_back(monkeypatch):
    from lmtt_widgets.tracing import memory

    trims = []
    real = memory.release_freed_memory
    monkeypatch.setattr(memory, "release_freed_memory", lambda: trims.append(1) or real())
    with memory.reusing_heap(0):
        after_layer = memory.release_when_much_free(limit=100 * 2**20)
        lenient = memory.release_when_much_free(limit=2**30)
        assert not after_layer()  # nothing freed yet
        block = torch.ones(50 * 2**20)  # 200 MB, touched, then freed: resident but free in the heap
        del block
        assert not lenient()  # 200 MB < 1 GB: kept for the next layer
        resident = memory.resident_bytes()
        assert after_layer()  # 200 MB > 100 MB: handed back
        assert memory.resident_bytes() < resident - 150 * 2**20
    assert len(trims) == 2  # the one above and the one as the block ends


def test_importing_the_package_does_not_import_numba():
    """numba takes longer to import than the rest of the package: it is imported by the first job worth it."""
    import subprocess
    import sys

    code = "import sys, lmtt_widgets; print('numba' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "False"


@needs_glibc
def test_an_interrupted_long_trace_puts_malloc_back(monkeypatch):
    """A kernel interrupt inside a long trace (here from on_layer) leaves malloc as it was: mmap allowed again."""
    from lmtt_widgets.tracing import memory, tracer

    monkeypatch.setattr(tracer, "TRIM_ATTENTION_LIMIT", 1)  # a tiny prompt traced as a long one
    seen = []

    def interrupt(rec, weights):
        seen.append(memory._passes)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        tracer.trace(loaded("llama"), PROMPT, keep_attention=False, on_layer=interrupt)
    assert seen == [1]  # the heap setting was on during the pass
    assert memory._passes == 0
    assert where_a_large_block_comes_from() == "mmap"  # mmap allowed again
