"""The memory estimate shown before a run, and the refusal of a run that would not fit."""

from __future__ import annotations

import pytest
import torch

from lmtt_widgets import MemoryEstimateError, estimate_memory, explain
from lmtt_widgets import memory_estimate as me
from tiny_models import loaded


def test_estimate_has_a_readable_breakdown_that_grows_with_the_prompt():
    lm = loaded("llama", dtype=torch.float32)
    short, long = estimate_memory(lm, 8), estimate_memory(lm, 60)
    assert long.total > short.total > 0
    assert short.total == sum(short.parts.values()) == sum(short.by_device.values())
    text = str(long)
    assert "60 tokens" in text and "logits [T, V]" in text and "MB" in text
    # the prompt may be given as text too: one token per character with the toy tokenizer
    assert estimate_memory(lm, "hello").n_tokens == 5


def test_streamed_attention_is_estimated_smaller_than_kept():
    lm = loaded("llama", dtype=torch.float32)
    budget = 100_000  # small chunks: layers are scored one at a time, so one layer's attention is held
    T = 1000  # a length where attention outweighs what streaming keeps instead (query and key states, a mask)
    kept = estimate_memory(lm, T, keep_attention=True, budget=budget)
    streamed = estimate_memory(lm, T, keep_attention=False, budget=budget)
    assert kept.parts["attention of every layer (kept)"] == 2 * 4 * T * T * 4  # L * H * T^2 floats
    assert streamed.parts["attention of every layer (kept)"] == 0 and streamed.total < kept.total
    assert streamed.parts["attention calls kept instead (q, k, mask)"] == 2 * T * (64 + 32) * 4 + T * T * 4


def test_run_that_would_not_fit_is_refused_with_the_estimate_and_advice(monkeypatch):
    lm = loaded("llama", dtype=torch.float32)
    monkeypatch.setattr(me, "available_memory", lambda device: 1024)  # 1 kB free
    with pytest.raises(MemoryEstimateError) as err:
        explain(lm, "hello world")
    msg = str(err.value)
    assert "would not fit" in msg and "11 tokens" in msg and "0 MB available" in msg
    assert "shorten the prompt" in msg and "keep_attention=False" in msg and "offload_folder" in msg
    assert "check_memory=False" in msg
    ex = explain(lm, "hello world", check_memory=False)  # the override runs it anyway
    assert ex.n_tokens == 11


def test_normal_run_is_not_refused(monkeypatch):
    lm = loaded("llama", dtype=torch.float32)
    seen = []
    real = me.available_memory
    monkeypatch.setattr(me, "available_memory", lambda device: seen.append(str(device)) or real(device))
    explain(lm, "hello world")
    assert seen == ["cpu"]  # the check ran, against this machine's memory
    assert real("cpu") > estimate_memory(lm, 11).total


def test_available_memory_reads_the_system():
    free = me.available_memory("cpu")
    assert free is None or free > 0
    assert me.available_memory("meta") is None
