"""The report's container (lmtt_widgets/report_pack.py): its text form, 7 bits a character, and its deflate by
sections, remembered across the size ladder's tries."""

import base64
import gzip
import html
import json
import os
import zlib
from pathlib import Path

import numpy as np
import pytest

from lmtt_widgets.report_pack import (FRAME, SECTIONS, Packer, from_text, layout, pack, reduced, text_size, to_text,
                                      unframe, unpack)
from lmtt_widgets.widgets.codec import encode_array

BUNDLE = Path(__file__).resolve().parent.parent / "lmtt_widgets" / "static" / "widget.js"
SPECIAL = "\0\r<"


def _hostile_bytes() -> list[bytes]:
    """Byte strings whose 7-bit groups are the special ones (NUL, CR, "<") in runs, alone at the end, at every
    alignment, plus random ones."""
    rng = np.random.default_rng(0)
    out = [b"", b"\0", b"<", b"\x1a\xf0", b"\0" * 7, b"\0" * 8, bytes(range(256)), bytes(range(255, -1, -1))]
    for g in (0x00, 0x0D, 0x3C):  # a run of one special group, as bits, at every offset and length
        for n in range(1, 20):
            bits = "".join(format(g, "07b") for _ in range(n))
            for shift in range(8):
                s = "1" * shift + bits
                s += "0" * (-len(s) % 8)
                out.append(int(s, 2).to_bytes(len(s) // 8, "big"))
    out += [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in (1, 2, 3, 6, 7, 8, 9, 1000, 65537)]
    return out


def test_text_round_trips_and_holds_nothing_the_html_parser_changes():
    for data in _hostile_bytes():
        text = to_text(data)
        assert from_text(text) == data
        # no "<" (could end or re-open the script block), no CR (becomes LF), no NUL (becomes U+FFFD)
        assert not any(c in SPECIAL for c in text) and all(ord(c) < 0x283 for c in text)
        # 8/7 of the bytes (base64: 4/3), and text_size its bound, to a byte
        size = len(text.encode("utf-8"))
        assert text_size(len(data)) - 1 <= size <= text_size(len(data)) <= 8 * len(data) / 7 + 2


def test_text_of_known_bytes():
    """Hand-worked examples, the same as js/test/reportcodec.test.ts reads back."""
    assert to_text(b"\0") == "\u0100"  # groups 0000000 (NUL: special) + 0|000000: one two-byte character
    assert to_text(b"\xff") == "\x7f@"  # 1111111, 1|000000
    assert to_text(b"<") == "\x1e\u0280"  # 0011110, 0|000000 = NUL alone at the end
    assert to_text(b"\x1a\xf0") == "\u01bc\u0280"  # CR (13) with "<" (60): U+0100 + 128 + 60; then NUL alone
    with pytest.raises(ValueError, match="alphabet"):
        from_text("ab\u00e9")


def _maps_report(levels: int) -> dict:
    rng = np.random.default_rng(1)
    pattern = np.tril(rng.random((64, 64), np.float32))
    return {"details": {f"head:0:{h}:63": {
                "pattern": reduced(encode_array(pattern * (h + 1)), "sqrt", levels),
                "contribution": reduced(encode_array(pattern ** 3), "sqrt", 255)} for h in range(4)},
            "vocab": {"ids": reduced(encode_array(rng.integers(0, 5000, 4000).astype(np.uint32), "uint32"), "u16")},
            "note": "<script>\u2028"}


def _inflated(blob: bytes) -> bytes:
    return b"".join(gzip.decompress(m) for m in unframe(blob))


def test_sections_deflate_on_their_own_each_a_gzip_member_of_the_frame():
    report = _maps_report(255)
    head, sections = layout(report)
    assert list(sections) == list(SECTIONS) and all(sections.values())
    assert len(sections["pattern"]) >= 4 * 64 * 65 // 2  # the four maps' triangles, together
    blob = pack(report)
    parts = unframe(blob)
    assert blob.startswith(FRAME) and len(parts) == 1 + len(SECTIONS)
    # each member is a whole gzip member (what one DecompressionStream reads), the head's and each section's
    assert [gzip.decompress(m) for m in parts] == [head, *sections.values()]
    back = unpack(blob)
    assert back["note"] == "<script>\u2028" and back["details"]["head:0:2:63"]["pattern"].shape == (64, 64)
    assert np.array_equal(back["vocab"]["ids"], np.frombuffer(report["vocab"]["ids"]["data"], np.uint32))
    # the same bytes deflated in one piece are about as small: the sections' own windows cost little
    whole = len(zlib.compress(_inflated(blob), 9))
    assert len(blob) <= whole * 1.02 + 128
    with pytest.raises(ValueError, match="frame"):
        unpack(parts[0])
    with pytest.raises(ValueError, match="add up"):
        unpack(blob[:-1])


def test_packer_deflates_again_only_what_changed():
    packer = Packer()
    first = packer.pack(_maps_report(255))
    assert len(packer._done) == 1 + len(SECTIONS)
    second = packer.pack(_maps_report(15))  # another precision of the patterns: the head and that section
    assert len(packer._done) == 1 + len(SECTIONS) + 2
    assert len(second) < len(first)
    assert _inflated(second) == b"".join([layout(_maps_report(15))[0], *layout(_maps_report(15))[1].values()])
    assert packer.pack(_maps_report(255)) == first and len(packer._done) == 1 + len(SECTIONS) + 2


@pytest.mark.browser
def test_container_text_survives_the_html_parser_and_the_page_reads_it(chromium, tmp_path):
    """In Chromium, the text inside a script block is the text written (the parser changed no character), and the
    bundle's own reader (textBytes, DecompressionStream) gets the container back."""
    hostile = b"".join(_hostile_bytes()[:200])
    report = {**_maps_report(63), "raw": encode_array(np.frombuffer(hostile, np.uint8), "uint8")}
    text, other = to_text(pack(report)), to_text(hostile)
    assert any(0x100 <= ord(c) < 0x283 for c in text + other)  # the special groups are there to be read
    page_path = tmp_path / "p.html"
    page_path.write_bytes(f"""<!doctype html><html><head><meta charset="utf-8"></head><body>
<script type="text/plain" id="a">{text}</script><script type="text/plain" id="b">{other}</script>
</body></html>""".encode("utf-8"))
    page = chromium.new_page()
    try:
        page.goto(page_path.as_uri())
        seen = page.evaluate("""async (code) => {
            const mod = await import(URL.createObjectURL(new Blob([code], { type: "text/javascript" })));
            const text = document.getElementById("a").textContent;
            const { body, bytes } = await mod.readContainer(text);
            const raw = body.raw.data;
            return { a: text, b: document.getElementById("b").textContent, note: body.note,
                     raw: Array.from(bytes.subarray(raw.at, raw.at + raw.n)) };
        }""", BUNDLE.read_text(encoding="utf-8"))
    finally:
        page.close()
    assert seen["a"] == text and seen["b"] == other
    assert seen["note"] == "<script>\u2028" and bytes(seen["raw"]) == hostile


def test_text_is_smaller_than_base64():
    data = os.urandom(30_000)
    assert len(to_text(data).encode()) < 0.86 * len(base64.b64encode(data))


def test_ladder_takes_a_step_that_fits_after_one_that_does_not_and_computes_the_extras_only_then():
    """The ladder's search (the first step without the extras, then bisection) returns a step whose container
    fits while the step before it does not, as a walk down the steps would (deflate can make a coarser map a few
    hundred bytes larger, so the sizes fall only almost monotonically); the extras are computed only when a step
    holding them may fit."""
    from lmtt_widgets import explain
    from lmtt_widgets.report import _EXTRAS_STEP, _NEURON_STEP, _STEPS, DEFAULT_THRESHOLD, _Content, _notes
    from tiny_models import loaded

    ex = explain(loaded("gpt2"), "The capital of France is Paris. The capital of Italy is Rome.")
    walk = _Content(ex, DEFAULT_THRESHOLD, "head")
    walk._packer = Packer()
    walk._add_extras()
    sizes = [len(walk._packed(_STEPS[i][0], _notes(i))[1]) for i in range(_NEURON_STEP)]
    assert all(a > b for a, b in zip(sizes[:_EXTRAS_STEP + 4], sizes[1:_EXTRAS_STEP + 4])), sizes
    for step in (0, _EXTRAS_STEP, (_EXTRAS_STEP + _NEURON_STEP) // 2, _NEURON_STEP - 1):
        for budget in (sizes[step], sizes[step] - 1) if step < _NEURON_STEP - 1 else (sizes[step],):
            content = _Content(ex, DEFAULT_THRESHOLD, "head")
            report, omitted, packed = content.build(budget)
            got = next(i for i in range(_NEURON_STEP) if omitted == _notes(i))
            assert len(packed) <= budget and sizes[got] <= budget and (got == 0 or sizes[got - 1] > budget)
            assert report["pattern_levels"] == _STEPS[got][0]["maps"]
            # the extras are computed where a step holding them is taken, never where even the step without them
            # is over the budget
            assert content.has_extras or got >= _EXTRAS_STEP, (step, budget)
            assert not content.has_extras or budget >= sizes[_EXTRAS_STEP], (step, budget)
    # past the neurons' step (even its fewest blocks do not fit with the coarsest maps) the maps go, and the room
    # they leave takes back neurons' projections: more blocks than the last token's route and column
    last = len(_STEPS) - 1
    fewest = len(walk._packed(_STEPS[_NEURON_STEP][0], _notes(_NEURON_STEP))[1])
    bare = len(walk._packed(_STEPS[last][0], _notes(last))[1])
    assert bare < fewest
    content = _Content(ex, DEFAULT_THRESHOLD, "head")
    report, omitted, packed = content.build((bare + fewest) // 2)
    assert report["pattern_levels"] is None and len(packed) <= (bare + fewest) // 2
    index = unpack(packed.data)["vocab"]["neuron"]["index"]
    held = {(layer, t) for layer, t in zip(*np.nonzero((index >= 0).any(-1)))}
    assert content.last_blocks < held <= content.neuron_blocks
    assert any(f"for the {len(held)} most important" in note for note in omitted), omitted


def test_note_says_when_the_budget_cut_what_its_first_sentence_lists():
    from lmtt_widgets import explain
    from lmtt_widgets.report import render_html
    from tiny_models import loaded

    ex = explain(loaded("gpt2"), "The capital of France is Paris.")
    cut = html.escape("The report's size budget cut some of this")
    note = lambda page: page.split('class="lmtt-report-note"', 1)[1].split("</div>", 1)[0]  # noqa: E731
    assert cut not in note(render_html(ex))
    tight = note(render_html(ex, max_bytes=65_000))  # the page around the state takes 57 kB
    assert cut in tight and html.escape("Even so this report's state") in tight


# --- the attention patterns' entropy coder (report_rans.py; js/reportrans.ts decodes it in the page) ---

RANS_FIXTURE = Path(__file__).resolve().parent.parent / "js" / "test" / "fixtures" / "rans.json"


def _attention(rows: int, seed: int) -> np.ndarray:
    """A causal softmax map like a head's: each key token read about as much by every query (its column), a sink
    column and a diagonal of random strengths, noise."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(0, 2, rows)[None, :] + rng.normal(0, 0.5, (rows, rows)) + 4 * rng.random() * np.eye(rows)
    logits[:, 0] += rng.uniform(0, 6)
    logits[np.triu_indices(rows, 1)] = -np.inf
    att = np.exp(logits - logits.max(1, keepdims=True))
    return (att / att.sum(1, keepdims=True)).astype(np.float32)


def _attention_codes(rows: int, levels: int, seed: int) -> np.ndarray:
    """The ``sqrt`` bytes of ``_attention`` (column order), as report_pack stores them."""
    att = _attention(rows, seed)
    q = np.maximum(np.rint(levels * np.sqrt(att / att.max())), 1).astype(np.uint8)
    return q.T[np.triu_indices(rows)]


def test_rans_round_trips_every_map_shape_and_symbol_mix():
    from lmtt_widgets import report_rans

    rng = np.random.default_rng(1)
    for levels in (255, 127, 45, 7):
        context = report_rans.contexts_for(levels)
        rows = [1, 2, 3, 40, 17, 64]
        maps = [_attention_codes(r, levels, i) for i, r in enumerate(rows)]
        maps += [np.zeros(10, np.uint8), np.full(21, levels, np.uint8),  # one symbol all through: 0 bits each
                 rng.integers(0, levels + 1, 36).astype(np.uint8)]
        rows += [4, 6, 8]
        table, streams = report_rans.encode(maps, rows, context)
        assert table.shape == (report_rans.n_contexts(context), 256)
        used = table.sum(1)
        assert set(used.tolist()) <= {0, report_rans.M}
        back = report_rans.decode(streams, table, rows, context)
        assert all(np.array_equal(a, b) for a, b in zip(back, maps))
    assert [len(s) for s in report_rans.encode([np.zeros(10, np.uint8)], [4], context)[1]] == [2]  # the final state
    altered = streams[3].copy()
    altered[5] ^= 1
    with pytest.raises(ValueError, match="altered"):
        report_rans.decode([altered], table, [rows[3]], context)


def test_rans_codes_attention_patterns_smaller_than_deflate_and_packs_them_exactly(monkeypatch):
    maps = {}
    for h in range(30):  # 30 maps of 128 tokens: past RANS_ALWAYS, coded whatever deflate would give
        maps[f"head:0:{h}:127"] = encode_array(_attention(128, h))

    def report(rans):
        return {"details": {k: {"pattern": reduced(v, "sqrt", 255, rans=rans)} for k, v in maps.items()}}

    from lmtt_widgets import report_rans

    calls = []
    monkeypatch.setattr(report_rans, "encode", lambda *a, f=report_rans.encode: calls.append(1) or f(*a))
    coded, plain = pack(report(True)), pack(report(False))
    # (176 contexts: their tables weigh more on 30 maps of noise than on a real report's 270)
    assert len(coded) < 0.93 * len(plain), (len(coded), len(plain))
    assert pack({**report(True), "other": "a change elsewhere"}) != coded and len(calls) == 1  # the maps coded once
    a, b = unpack(coded)["details"], unpack(plain)["details"]
    assert all(np.array_equal(a[k]["pattern"], b[k]["pattern"]) for k in maps)
    head = layout(report(True))[0]
    assert b'"rans":{"table":' in head and b'"rans"' not in layout(report(False))[0]
    # a few small maps: the coder's tables would cost more than it saves, so they stay as deflate has them
    small = {"details": {k: {"pattern": reduced(encode_array(np.tril(np.ones((4, 4), np.float32))), "sqrt", 255,
                                                rans=True)} for k in list(maps)[:3]}}
    assert b'"rans"' not in layout(small)[0]


def test_rans_fixture_for_the_page_decoder_is_current():
    """js/test/reportcodec.test.ts decodes these streams with the page's own decoder (rewrite the file with
    LMTT_WRITE_FIXTURES=1)."""
    from lmtt_widgets import report_rans

    groups = []
    for levels, rows in ((255, [9, 1, 5]), (127, [30, 12]), (45, [12, 3])):
        maps = [_attention_codes(r, levels, 10 + i) for i, r in enumerate(rows)]
        above, left = report_rans.contexts_for(levels)
        table, streams = report_rans.encode(maps, rows, (above, left))
        groups.append({"levels": levels, "above": above, "left": left, "bits": report_rans.PROB_BITS, "rows": rows,
                       "table": base64.b64encode(table.astype("<u2").tobytes()).decode(),
                       "streams": [base64.b64encode(s.astype("<u2").tobytes()).decode() for s in streams],
                       "maps": [base64.b64encode(m.tobytes()).decode() for m in maps]})
    text = json.dumps(groups, indent=1) + "\n"
    if os.environ.get("LMTT_WRITE_FIXTURES"):
        RANS_FIXTURE.write_text(text, encoding="utf-8")
    assert RANS_FIXTURE.read_text(encoding="utf-8") == text, "stale: LMTT_WRITE_FIXTURES=1 pytest tests/test_report_pack.py"


def test_fixed_logits_read_back_within_half_a_step():
    """``fixed`` (vocabulary projections' logits): each value within 2**-9 of the real one, whatever its size
    (float16 is off by up to 0.03 at a logit of 60); a row whose differences do not fit 16 bits stays float32.
    (Its size: bench_report.py --sections, on SmolLM2's projections.)"""
    rng = np.random.default_rng(3)
    vocab = rng.normal(0, 1, (400, 5000)) * rng.uniform(0.5, 6, (400, 1))  # a row: one vector's logits
    ranked = np.sort(vocab, 1)
    logits = np.concatenate([ranked[:, ::-1][:, :10], ranked[:, :10]], 1).astype(np.float32)  # top-k, bottom-k
    fixed = reduced(encode_array(logits), "fixed", bits=8)
    assert fixed["enc"] == "fixed"
    back = unpack(pack({"x": fixed}))["x"]
    assert back.dtype == np.float32 and np.abs(back - logits).max() <= 2 ** -9
    assert np.array_equal(back * 256, np.rint(back * 256))
    f16 = unpack(pack({"x": reduced(encode_array(logits), "f16", delta=True)}))["x"]
    assert np.abs(f16 - logits).max() > 2 ** -9  # what float16 could not keep
    wide = encode_array(np.array([[100.0, -100.0], [1, 2]], np.float32))
    assert reduced(wide, "fixed")["enc"] == "raw"
    # a head that writes almost nothing: its row in finer steps, its tiny logits (shown as 1.23e-4) kept to 3
    # significant digits; the other rows as before
    quiet = logits.copy()
    quiet[7] = logits[7] * 1e-5
    back = unpack(pack({"x": reduced(encode_array(quiet), "fixed", bits=8)}))["x"]
    assert np.abs(back[7] - quiet[7]).max() <= 5e-4 * np.abs(quiet[7]).min()
    assert np.abs(np.delete(back - quiet, 7, 0)).max() <= 2 ** -9
    mixed = quiet.copy()
    mixed[7, 0] = 50.0  # a tiny value and a large one in one row: not 3 digits in 16 bits
    assert reduced(encode_array(mixed), "fixed")["enc"] == "raw"
    assert unpack(pack({"x": reduced(encode_array(np.zeros((0, 20), np.float32)), "fixed")}))["x"].shape == (0, 20)


def test_f16lo_keeps_what_tau_compares_exact_and_never_lifts_a_small_one_over_the_floor():
    """Route scores (``f16lo``): the values above the floor exact (τ compares them), those at most the floor as
    float16 within 2**-10 and never above the floor, so no τ at or over it keeps one."""
    floor = 0.005
    rng = np.random.default_rng(4)
    v = np.concatenate([rng.uniform(0, 1, 500), rng.uniform(0, floor, 500) ** 2 / floor,  # down to 1e-9
                        np.nextafter(np.float32(floor), np.float32(0)) * np.ones(3),  # round up past it in float16
                        [np.float32(floor), np.nextafter(np.float32(floor), np.float32(1)), 0.0]]).astype(np.float32)
    a = reduced(encode_array(v), "f16lo", below=floor)
    assert a["enc"] == "f16lo"
    back = unpack(pack({"x": a}))["x"]
    high = v > np.float32(floor)
    assert np.array_equal(back[high], v[high]) and high.sum() > 400
    assert np.array_equal(back[v < 2 ** -14], v[v < 2 ** -14]) and (v[v > 0] < 2 ** -14).sum() > 10  # float16 subnormals
    assert (back[~high] <= np.float32(floor)).all() and np.allclose(back[~high], v[~high], rtol=2 ** -10, atol=0)
    assert not np.array_equal(back, v)  # float16 changed some small ones
    assert np.float16(v[1000]).astype(np.float32) > np.float32(floor)  # the case: nearest float16 is over it


def test_ladder_keeps_content_while_coarser_maps_cannot_be_seen():
    """Between a byte's 255 steps and UNSEEN_LEVELS (colours within 1.25 CIEDE2000 of the exact ones) the maps get
    coarser before any content goes: a budget that holds everything at 127 steps keeps the lens at every target and
    every held head's projection, with the maps at 127 steps, and says so."""
    from lmtt_widgets import explain
    from lmtt_widgets.report import _STEPS, DEFAULT_THRESHOLD, UNSEEN_LEVELS, _Content, _notes
    from tiny_models import loaded

    ex = explain(loaded("gpt2"), "The capital of France is Paris. The capital of Italy is Rome.")
    walk = _Content(ex, DEFAULT_THRESHOLD, "head")
    walk._packer = Packer()
    walk._add_extras()
    whole = next(i for i, (level, _, _) in enumerate(_STEPS) if level["maps"] == UNSEEN_LEVELS)
    assert _STEPS[whole][0]["lens"] and _STEPS[whole][0]["heads"] == "held"
    budget = len(walk._packed(_STEPS[whole][0], _notes(whole))[1])
    assert budget < len(walk._packed(_STEPS[0][0], _notes(0))[1])  # the full report does not fit
    content = _Content(ex, DEFAULT_THRESHOLD, "head")
    report, omitted, packed = content.build(budget)
    assert report["pattern_levels"] == UNSEEN_LEVELS and len(packed) <= budget
    assert report["lens"]["tokens"] == sorted(map(int, report["per_target"]))  # the lens table: every target
    assert len(omitted) == 1 and "no visible difference" in omitted[0], omitted


def test_the_lens_at_every_target_is_not_computed_where_its_sample_says_it_cannot_fit(monkeypatch):
    """Room for the step without the extras but far from enough for the lens at every target (as at 128 tokens on
    SmolLM2, where it takes seconds): the lens is estimated from a sample of its columns and not computed."""
    from lmtt_widgets import explain
    from lmtt_widgets.report import _STEPS, DEFAULT_THRESHOLD, LENS_SAMPLE, _Content, _EXTRAS_STEP, _notes
    from lmtt_widgets.widgets import payload
    from tiny_models import loaded

    ex = explain(loaded("gpt2"), "The capital of France is Paris. The capital of Italy is Rome.")
    walk = _Content(ex, DEFAULT_THRESHOLD, "head")
    walk._packer = Packer()
    budget = len(walk._packed(_STEPS[_EXTRAS_STEP][0], _notes(_EXTRAS_STEP))[1]) + 100  # 100 bytes of room
    columns = []
    real = payload.lens_columns
    monkeypatch.setattr(payload, "lens_columns", lambda e, tokens, *a, **k: columns.append(len(tokens)) or real(
        e, tokens, *a, **k))
    content = _Content(ex, DEFAULT_THRESHOLD, "head")
    report, omitted, _ = content.build(budget)
    assert not content.has_extras and report["pattern_levels"] == _STEPS[_EXTRAS_STEP][0]["maps"]
    assert sum(columns) <= 1 + LENS_SAMPLE < ex.n_tokens - 1, columns  # the widget's own column and the sample
    assert omitted == _notes(_EXTRAS_STEP)


@pytest.mark.parametrize("family", ["gpt2", "gpt_neox"])
def test_the_lens_estimate_keeps_the_lens_where_it_just_fits(family):
    """Room exactly for the lens at every target (the step before the extras cut): the sample's estimate must not
    say it cannot fit. Packed alone, a sample costs up to 1.40 times its share of the lens inside the whole report on
    these models (tokens' strings shared with the rest of the report), so with LENS_ESTIMATE 0.85 the estimate
    exceeded the room and the lens was left out where it fits."""
    from lmtt_widgets import explain
    from lmtt_widgets.report import _EXTRAS_STEP, _STEPS, DEFAULT_THRESHOLD, _Content, _notes
    from tiny_models import loaded

    ex = explain(loaded(family), "The capital of France is Paris.")
    walk = _Content(ex, DEFAULT_THRESHOLD, "head")
    walk._packer = Packer()
    walk._add_extras()
    budget = len(walk._packed(_STEPS[_EXTRAS_STEP - 1][0], _notes(_EXTRAS_STEP - 1))[1])
    content = _Content(ex, DEFAULT_THRESHOLD, "head")
    report, omitted, packed = content.build(budget)
    assert len(packed) <= budget and omitted == _notes(_EXTRAS_STEP - 1), omitted
    assert report["lens"]["tokens"] == sorted(map(int, report["per_target"]))  # the lens table: every target


def test_ranks_past_int16_are_stored_in_16_bits_with_an_offset():
    """Logit lens ranks run to the vocabulary's size (49,151 on SmolLM2), with -1 for "none": int16 cannot hold
    them (they were stored as raw int32), 16 bits plus an offset of 1 can, exactly."""
    ranks = np.array([[-1, 0, 5], [32767, 49151, 65534]], np.int32)
    a = reduced(encode_array(ranks, "int32"), "u16", offset=1)
    assert a["enc"] == "u16" and reduced(encode_array(ranks, "int32"), "i16")["enc"] == "raw"
    back = unpack(pack({"r": a}))["r"]
    assert back.dtype == np.int32 and np.array_equal(back, ranks)
    # one past what 16 bits hold with the offset: stored as it is, never wrapped
    assert reduced(encode_array(np.array([65535], np.int32), "int32"), "u16", offset=1)["enc"] == "raw"
    assert reduced(encode_array(np.array([-2], np.int32), "int32"), "u16", offset=1)["enc"] == "raw"


def test_heads_projections_are_not_computed_where_the_lens_step_does_not_fit(monkeypatch):
    """An estimate that says the lens may fit where it does not (here forced: LENS_ESTIMATE 0) costs the lens's
    columns and one pack, not the heads' projections at every target too: those are computed only once the step
    holding the lens (and the routes' heads only) fits."""
    from lmtt_widgets import explain, report
    from lmtt_widgets.report import _STEPS, DEFAULT_THRESHOLD, _Content, _EXTRAS_STEP, _notes
    from tiny_models import loaded

    ex = explain(loaded("gpt2"), "The capital of France is Paris. The capital of Italy is Rome.")
    walk = _Content(ex, DEFAULT_THRESHOLD, "head")
    walk._packer = Packer()
    budget = len(walk._packed(_STEPS[_EXTRAS_STEP][0], _notes(_EXTRAS_STEP))[1]) + 100
    monkeypatch.setattr(report, "LENS_ESTIMATE", 0.0)
    calls = []
    real = report.head_projections
    monkeypatch.setattr(report, "head_projections", lambda e, heads, *a, **k: calls.append(len(heads)) or real(
        e, heads, *a, **k))
    content = _Content(ex, DEFAULT_THRESHOLD, "head")
    n_route = len(calls)  # the routes' heads, computed with the rest of the report
    rep, omitted, _ = content.build(budget)
    assert omitted == _notes(_EXTRAS_STEP) and not content.has_extras
    assert all("lens" in snap for snap in content.per_target.values())  # computed, found not to fit
    assert len(calls) == n_route == 1, calls


# --- the logit lens at every target as one table (report.py ``_lens_table``; js/static.ts ``fromLensTable``) ---

LENS_FIXTURE = Path(__file__).resolve().parent.parent / "js" / "test" / "fixtures" / "lens.json"


def _lens_fixture_columns() -> dict[str, dict]:
    """Lens columns as ``payload.lens_columns`` sends them (wire dicts), of three targets: rows that keep some of
    the row before's tokens in another order and bring new ones, a token that ranks otherwise than its place in the
    row before (a tie there), two ids with one string."""
    from lmtt_widgets.widgets.codec import encode_array

    rng = np.random.default_rng(5)
    R, K, V = 7, 4, 300
    out = {}
    for t in (0, 3, 4):
        ids = np.zeros((R, K), np.int64)
        ranks = np.full((R, K), -1, np.int64)
        ids[0] = rng.choice(V, K, replace=False)
        for r in range(1, R):
            keep = rng.permutation(ids[r - 1])[:rng.integers(0, K + 1)]
            new = rng.choice(np.setdiff1d(np.arange(V), ids[r - 1]), K - len(keep), replace=False)
            ids[r] = rng.permutation(np.concatenate([keep, new]))
            for i, token in enumerate(ids[r]):
                place = np.flatnonzero(ids[r - 1] == token)
                ranks[r, i] = place[0] if len(place) else rng.integers(K, 60000)
        r, i = next((r, i) for r in range(1, R) for i in range(K) if ids[r, i] in ids[r - 1] and ranks[r, i] > 0)
        ranks[r, i] -= 1  # tied with the token listed before it there
        probs = np.sort(rng.dirichlet(np.ones(K * 3), R)[:, :K], 1)[:, ::-1].astype(np.float32)
        strings = {str(i): ("\ufffd" if i % 50 == 7 else f"tok{i}·") for i in np.unique(ids).tolist()}
        out[str(t)] = {"rows": R, "token": t, "ids": encode_array(ids.astype(np.uint32), "uint32"),
                       "probs": encode_array(probs), "rank_prev": encode_array(ranks.astype(np.int32), "int32"),
                       "strings": strings}
    return out


def test_lens_table_gives_back_every_column_exactly():
    """The lens columns of many targets stored as one table, its ids as references to the row before (``prev``)
    and its ranks only where they are not the token's place in the row before: read back (``read_report``'s way),
    every column is the kernel's, ids, ranks and strings exact, probabilities at float16, its lens rows the same."""
    from lmtt_widgets.report import _lens_columns, _lens_table
    from lmtt_widgets.widgets import payload
    from lmtt_widgets.widgets.codec import decode_array

    columns = _lens_fixture_columns()
    texts: dict[str, int] = {"tok1·": 0}
    table = _lens_table(columns, texts)
    assert table["ids"]["enc"] == "prev" and table["rank_rest"]["enc"] == "u16"
    assert len(decode_array(table["rank_fix"])) == 3  # one tie a column
    # fewer stored ranks than listed tokens: those found in the row before are not stored
    assert decode_array(table["rank_rest"]).size < 3 * 7 * 4
    back = unpack(pack({"lens": table, "texts": list(texts)}))
    got = _lens_columns(back["lens"], back["texts"])
    assert set(got) == set(columns)
    for t, want in columns.items():
        g = got[t]
        for k in ("ids", "rank_prev"):
            w = decode_array(want[k])
            assert g[k].dtype == w.dtype and np.array_equal(g[k], w), (t, k)
        assert np.array_equal(g["probs"], decode_array(want["probs"]).astype(np.float16).astype(np.float32))
        assert g["strings"] == want["strings"] and (g["rows"], g["token"]) == (want["rows"], want["token"])
        wire = {**g, **{k: encode_array(g[k], str(g[k].dtype)) for k in ("ids", "probs", "rank_prev")}}
        assert payload.lens_details(wire) == payload.lens_details({**want, "probs": wire["probs"]})


def test_prev_codes_rows_as_references_to_the_row_before_exactly():
    """``prev``: any rows of 16-bit integers (repeats in a row, none in common, the first row, an empty array)
    come back exactly; values past 16 bits or rows too long for a byte's places stay raw."""
    rng = np.random.default_rng(2)
    rows = rng.integers(0, 40, (50, 6))
    rows[10] = rows[9][::-1]
    rows[11] = [7, 7, 7, 7, 7, 7]
    rows[12] = 65535
    for v in (rows, rows[:1], rows.reshape(5, 10, 6), np.zeros((0, 6), np.int64)):
        a = reduced(encode_array(v.astype(np.uint32), "uint32"), "prev")
        assert a["enc"] == "prev"
        back = unpack(pack({"x": a}))["x"]
        assert back.dtype == np.uint32 and back.shape == v.shape and np.array_equal(back, v)
    assert reduced(encode_array(np.array([[1, 1 << 16]], np.uint32), "uint32"), "prev")["enc"] == "raw"
    assert reduced(encode_array(np.zeros((2, 255), np.uint32), "uint32"), "prev")["enc"] == "raw"
    blob = bytearray(gzip.decompress(unframe(pack({"x": reduced(encode_array(rows.astype(np.uint32), "uint32"),
                                                                         "prev")}))[1]))
    blob[6 * 3 + 1] = 9  # a place the row before does not have
    with pytest.raises(ValueError, match="altered"):
        from lmtt_widgets.report_pack import _inflate_prev
        _inflate_prev(bytes(blob), int((np.frombuffer(bytes(blob[:300]), np.uint8) == 255).sum()), rows.shape)


def test_u16_delta_round_trips_ascending_indices():
    """``u16`` with ``delta`` (route scores' pointers and each row's columns) and ``cols`` (vocabulary tables'
    keys, column by column): exact, wrapping rows included."""
    v = np.array([[0, 5, 9, 65535], [65535, 0, 3, 3]], np.uint32)
    a = reduced(encode_array(v, "uint32"), "u16", delta=True)
    assert a["enc"] == "u16" and a["delta"]
    assert np.array_equal(unpack(pack({"x": a}))["x"], v)
    keys = np.array([[0, 0, 3], [0, 0, 4], [0, 1, 2], [2, 8, 0], [2, 8, 127]], np.uint32)  # (layer, head, token)
    for delta in (False, True):
        a = reduced(encode_array(keys, "uint32"), "u16", delta=delta, cols=True)
        assert a["cols"] and np.array_equal(unpack(pack({"x": a}))["x"], keys)
    ranks = np.array([-1, 0, 7, 65534], np.int32)
    assert np.array_equal(unpack(pack({"x": reduced(encode_array(ranks, "int32"), "u16", delta=True, offset=1)}))["x"],
                          ranks)


def test_next_stores_row_indices_counting_up_exactly():
    """``next`` (the neuron table's rows of each (layer, token, rank), numbered as first used): -1, rows one past the
    largest so far, rows used again, the first value, an empty array come back exactly; past 16 bits stays raw."""
    index = np.array([[[-1, -1, 0], [1, 2, 0]], [[3, 1, -1], [4, 5, 6]], [[9, 7, 10], [2, -1, 11]]], np.int32)
    for v in (index, index[:0], np.array([5], np.int32)):
        a = reduced(encode_array(v, "int32"), "next")
        assert a["enc"] == "next"
        back = unpack(pack({"x": a}))["x"]
        assert back.dtype == np.int32 and back.shape == v.shape and np.array_equal(back, v)
    assert reduced(encode_array(np.array([65534], np.int32), "int32"), "next")["enc"] == "raw"
    assert reduced(encode_array(np.array([-2], np.int32), "int32"), "next")["enc"] == "raw"


def test_lens_fixture_for_the_page_decoder_is_current():
    """js/test/reportcodec.test.ts reads this container with the page's own decoders (rewrite the file with
    LMTT_WRITE_FIXTURES=1) and must give back these columns."""
    from lmtt_widgets.report import _lens_table
    from lmtt_widgets.report_pack import pack_text
    from lmtt_widgets.widgets.codec import decode_array

    columns = _lens_fixture_columns()
    texts: dict[str, int] = {"tok1·": 0}
    table = _lens_table(columns, texts)
    want = {t: {"rows": c["rows"], "token": c["token"], "ids": decode_array(c["ids"]).reshape(-1).tolist(),
                "probs": decode_array(c["probs"]).astype(np.float16).astype(float).reshape(-1).tolist(),
                "rank_prev": decode_array(c["rank_prev"]).reshape(-1).tolist(), "strings": c["strings"]}
            for t, c in columns.items()}
    v = np.array([[0, 5, 9, 65535], [65535, 0, 3, 3]], np.uint32)
    keys = np.array([[0, 0, 3], [0, 0, 4], [0, 1, 2], [2, 8, 0], [2, 8, 127]], np.uint32)
    index = np.array([[-1, -1, 0], [1, 2, 0], [3, 1, -1], [9, 7, 10]], np.int32)
    text = json.dumps({"text": pack_text({"lens": table, "texts": list(texts),
                                          "delta": reduced(encode_array(v, "uint32"), "u16", delta=True),
                                          "cols": reduced(encode_array(keys, "uint32"), "u16", delta=True, cols=True),
                                          "next": reduced(encode_array(index, "int32"), "next")}),
                       "columns": want, "delta": v.tolist(), "cols": keys.tolist(), "next": index.tolist()},
                      indent=1) + "\n"
    if os.environ.get("LMTT_WRITE_FIXTURES"):
        LENS_FIXTURE.write_text(text, encoding="utf-8")
    assert LENS_FIXTURE.read_text(encoding="utf-8") == text, \
        "stale: LMTT_WRITE_FIXTURES=1 pytest tests/test_report_pack.py"
