"""Issue 11, point 2: hostile text in prompts and tokens never breaks the report or the widget.

The report tests load the written file in the real headless Chromium and check that the Explorer rendered with
the hostile text shown verbatim as text, that no page error occurred and that nothing in a token ran as script.
"""

from __future__ import annotations

import json
import os
import stat

import pytest

from lmtt_widgets import explain
from lmtt_widgets import report as report_mod
from lmtt_widgets.report import read_report, render_html, write_report
from lmtt_widgets.widgets import Explorer
from lmtt_widgets.widgets.codec import to_base64, to_message, wire_safe
from tiny_models import ToyTokenizer, build, loaded

# Each must stay under the tiny models' 64 positions (ToyTokenizer: one token per ASCII character).
HOSTILE_PROMPTS = [
    '<!-- old loader <script src="app.js">',
    "<!--<script>window.__pwned=1</script>-->",
    "</ScRiPt ><script>window.__pwned=1</script>",
    "</SCRIPT/><img src=x onerror=window.__pwned=1>",
    "<![CDATA[ ]]></script><script>window.__pwned=1//",
    "{{ 7*7 }} {% raw %} ${window.__pwned=1} `x` #{1}",
    "<!-- <SCRIPT> --> <!--",
    "<script",
    "</title><svg onload=window.__pwned=1>",
    "</style><style>*{display:none}</style>",
    "\\u003c/script> \\x3c!-- <\\/script> &lt;b&gt;",
    "\"]}};window.__pwned=1;//",
]

BIDI = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\u200e\u200f\u061c"


@pytest.fixture(scope="module")
def gpt2():
    return loaded("gpt2")


def _render_in_chromium(chromium, path, n_tokens: int) -> dict:
    """Open a written report; return what it shows once the Explorer has drawn, and what went wrong on the way."""
    page = chromium.new_page(viewport={"width": 1200, "height": 900})
    errors, dialogs, outside, console = [], [], [], []
    try:
        page.route("**/*", lambda route: route.continue_() if route.request.url.startswith(("file:", "blob:", "data:"))
                   else (outside.append(route.request.url), route.abort()))
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: console.append(m.text) if m.type == "error" else None)
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(path.as_uri())
        try:
            page.wait_for_function("n => document.querySelectorAll('.lmtt-graph .lmtt-tok').length === n",
                                   arg=n_tokens, timeout=20_000)
        except Exception as exc:  # say what the page shows instead of a bare timeout
            raise AssertionError(f"the Explorer did not render: errors={errors} console={console} "
                                 f"body={page.inner_text('body')[:300]!r}") from exc
        page.wait_for_selector(".lmtt-graph canvas")
        seen = page.evaluate("""() => ({
            labels: Array.from(document.querySelectorAll('.lmtt-graph .lmtt-tok'), e => e.textContent),
            tips: Array.from(document.querySelectorAll('.lmtt-graph .lmtt-tok'), e => e.title),
            options: Array.from(document.querySelectorAll('.lmtt-graph select option'), e => e.textContent),
            prompt: document.querySelector('textarea.lmtt-prompt').value,
            title: document.title,
            scripts: document.scripts.length,
            pwned: typeof window.__pwned,
            styles: document.querySelectorAll('style').length,
            rootVisible: document.querySelector('.lmtt-root').getBoundingClientRect().height > 100,
            text: document.body.innerText,
        })""")
    finally:
        page.close()
    return {**seen, "errors": errors + console, "dialogs": dialogs, "outside": outside}


def _shown(token: str) -> str:
    """What js/text.ts displayToken makes of a printable ASCII token."""
    return token.replace(" ", "␣").replace("\t", "⇥") or "∅"


def _check_clean(seen: dict, scripts: int = 3) -> None:
    assert seen["errors"] == [] and seen["dialogs"] == [] and seen["outside"] == []
    assert seen["pwned"] == "undefined", "a token ran as script"
    assert seen["scripts"] == scripts and seen["styles"] == 1, "a token created an element"
    assert seen["rootVisible"]


@pytest.mark.browser
@pytest.mark.parametrize("prompt", HOSTILE_PROMPTS)
def test_report_renders_hostile_prompt_verbatim(prompt, gpt2, tmp_path, chromium):
    ex = explain(gpt2, prompt)
    assert ex.tokens == list(prompt)
    seen = _render_in_chromium(chromium, write_report(ex, tmp_path / "r.html"), len(prompt))
    _check_clean(seen)
    assert seen["labels"] == [_shown(c) for c in prompt]
    assert seen["tips"] == [f"#{i} {_shown(c)}" for i, c in enumerate(prompt)]
    assert seen["prompt"] == prompt
    assert seen["title"] == f"lmtt-widgets · {ex.trace.lm.name} · {prompt}"


def test_script_blocks_hold_no_markup_and_no_line_separators(gpt2):
    ex = explain(gpt2, "<!--<script></ScRiPt >")
    page = render_html(ex)
    body = page.split("<body>", 1)[1]
    blocks = body.split("<script")[1:]
    assert len(blocks) == 3  # state, bundle, loader: nothing in them opened another
    for block in blocks[:2]:
        content = block.split(">", 1)[1].rsplit("</script>", 1)[0]
        assert "<" not in content and "\u2028" not in content and "\u2029" not in content
    state = read_report(page)["state"]
    assert state["tokens"] == list("<!--<script></ScRiPt >") and state["prompt"] == "<!--<script></ScRiPt >"


class HostileTokenizer(ToyTokenizer):
    """ToyTokenizer whose ids 1-6 decode to text no real tokenizer should produce, but some do."""

    SPECIAL = {1: "\ud800", 2: "a\u202eevil", 3: "\u2028", 4: "\u2029x", 5: BIDI, 6: "\udfff\ud83d"}

    def decode(self, ids, **kwargs):
        return "".join(self.SPECIAL.get(i) or ToyTokenizer.decode(self, [i]) for i in ids)


HOSTILE_TOKENS_PROMPT = "ok\x01\x02 \x03\x04\x05\x06!"


@pytest.fixture(scope="module")
def hostile_tokens():
    from lmtt_widgets import load_model

    ex = explain(load_model(build("gpt2"), HostileTokenizer()), HOSTILE_TOKENS_PROMPT)
    assert ex.tokens[2] == "\ud800" and ex.tokens[3] == "a\u202eevil"
    return ex


def _has_surrogate(obj) -> bool:
    if isinstance(obj, str):
        return any("\ud800" <= c <= "\udfff" for c in obj)
    if isinstance(obj, dict):
        return any(_has_surrogate(k) or _has_surrogate(v) for k, v in obj.items())
    return isinstance(obj, (list, tuple)) and any(_has_surrogate(v) for v in obj)


def test_explorer_state_with_lone_surrogates_goes_on_the_wire(hostile_tokens):
    from ipywidgets.widgets.widget import _remove_buffers
    from jupyter_client.session import json_packer

    w = Explorer(hostile_tokens)
    state, paths, buffers = _remove_buffers(w.get_state())
    json_packer(state)  # what the kernel does to every comm message: strict UTF-8
    assert buffers and all(isinstance(b, (bytes, memoryview)) for b in buffers)
    assert not _has_surrogate(state)
    assert state["tokens"][2] == "\ufffd" and state["tokens"][8] == "\ufffd\ufffd"
    assert state["tokens"][3] == "a\u202eevil"  # bidi text travels as it is; the browser escapes it
    # details replies go through the same door
    sent = []
    w._send = lambda msg, buffers=None: sent.append((msg["content"], buffers))  # what goes to the comm
    w._reply_details({"type": "details", "id": 1, "key": f"lens:1:{hostile_tokens.n_tokens - 1}"})
    w._reply_details({"type": "details", "id": 2, "key": "lens:\ud800"})  # an error reply echoes the key
    assert [c["ok"] for c, _ in sent] == [True, False]
    assert sent[1][0]["key"] == "lens:\ufffd" and "malformed details key" in sent[1][0]["error"]
    for content, _ in sent:
        json_packer(content)
    assert w.tokens[2] == "\ud800", "the Python side keeps the exact text"


def test_codec_replaces_lone_surrogates_everywhere():
    obj = {"k\ud800": ("a\udc00b", {"x": "\ud83d\ude00"}), "arr": {"dtype": "uint8", "shape": [1], "data": b"\xff"}}
    clean = {"k\ufffd": ["a\ufffdb", {"x": "\ufffd\ufffd"}], "arr": {"dtype": "uint8", "shape": [1], "data": b"\xff"}}
    assert wire_safe(obj) == clean
    msg, buffers = to_message(wire_safe(obj))
    assert msg["arr"]["data"] == 0 and buffers == [b"\xff"]
    assert to_base64(obj)["k\ufffd"][0] == "a\ufffdb" and to_base64(obj)["arr"]["data"] == "/w=="
    assert wire_safe({"t": "plain ✓ 😀", "n": [1, 2.5, None, True]}) == {"t": "plain ✓ 😀", "n": [1, 2.5, None, True]}


def test_report_with_lone_surrogates_and_bidi_tokens(hostile_tokens, tmp_path):
    path = write_report(hostile_tokens, tmp_path / "r.html")
    page = path.read_text(encoding="utf-8")  # strict: no surrogate reached the file
    state = page.split('id="lmtt-state">', 1)[1].split("</script>", 1)[0]
    assert "\u2028" not in state and "\u2029" not in state  # base64 (the report's container)
    tokens = read_report(page)["state"]["tokens"]
    assert tokens[2:4] == ["\ufffd", "a\u202eevil"] and tokens[5] == "\u2028"


@pytest.mark.browser
def test_report_shows_surrogates_as_replacement_and_bidi_as_escapes(hostile_tokens, tmp_path, chromium):
    path = write_report(hostile_tokens, tmp_path / "r.html")
    seen = _render_in_chromium(chromium, path, hostile_tokens.n_tokens)
    _check_clean(seen)
    assert seen["labels"][2] == "\ufffd" and seen["labels"][8] == "\ufffd\ufffd"
    assert seen["labels"][3] == "a⟨U+202E⟩evil"
    assert seen["labels"][7] == "⟨U+202A⟩…"  # the label is cut at a whole escape, the tooltip has them all
    assert seen["tips"][7] == "#7 " + "".join(f"⟨U+{ord(c):04X}⟩" for c in BIDI)
    visible = "".join(seen["labels"] + seen["tips"] + seen["options"]) + seen["text"] + seen["title"]
    assert "a⟨U+202E⟩evil" in seen["title"]
    assert not any(c in visible for c in BIDI + "\u2028\u2029"), "a raw bidi control or line separator is shown"


@pytest.mark.smollm2
@pytest.mark.browser
def test_smollm2_report_of_an_html_prompt(smollm2, tmp_path, chromium):
    prompt = '<!-- old loader <script src="app.js">'
    ex = explain(smollm2, prompt)
    seen = _render_in_chromium(chromium, write_report(ex, tmp_path / "r.html"), ex.n_tokens)
    _check_clean(seen)
    assert "".join(seen["labels"]) == prompt.replace(" ", "␣")
    assert seen["prompt"] == prompt


# ---- atomic writes

def test_failed_report_write_keeps_the_previous_file(gpt2, tmp_path, monkeypatch):
    ex = explain(gpt2, "hello")
    path = write_report(ex, tmp_path / "report.html")
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise RuntimeError("failed while building the page")

    with monkeypatch.context() as m:
        m.setattr(report_mod.payload, "head_details", boom)
        with pytest.raises(RuntimeError, match="building"):
            write_report(explain(gpt2, "other"), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]

    with monkeypatch.context() as m:  # text that cannot be written (the old code left a 0-byte file here)
        m.setattr(report_mod, "render_html", lambda *a, **k: "<p>half a pair \ud800</p>")
        with pytest.raises(UnicodeEncodeError):
            write_report(ex, path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]

    with monkeypatch.context() as m:  # a failure after the bytes are written, at the rename
        m.setattr(report_mod.os, "replace", boom)
        with pytest.raises(RuntimeError):
            write_report(explain(gpt2, "other"), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]


def test_report_write_replaces_the_file_with_usual_permissions(gpt2, tmp_path):
    path = tmp_path / "report.html"
    write_report(explain(gpt2, "one"), path)
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask
    os.chmod(path, 0o640)
    write_report(explain(gpt2, "two"), path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert "two" in path.read_text(encoding="utf-8") and sorted(p.name for p in tmp_path.iterdir()) == ["report.html"]
