"""Issue 11, point 1: the wire protocol is defined once (widgets/protocol) and everything else follows it.

- the generated TypeScript and doc tables are fresh;
- the widget's traits are the protocol's, typed: Python refuses a payload that drifted, and the browser cannot
  write a Python-only trait (a comm update to one is reverted with `error` set);
- a tiny model's exported state (js/test/fixtures/explorer-state.json, decoded by js/test/protocol.test.ts) matches
  the protocol and is fresh. Rewrite it with ``LMTT_WRITE_FIXTURES=1``.
"""

from __future__ import annotations

import base64
import json
import os
import pathlib

import numpy as np
import pytest
import traitlets as t

from lmtt_widgets import Explorer, explain
from lmtt_widgets.widgets import protocol
from lmtt_widgets.widgets.codec import DTYPES, decode_array, to_base64
from lmtt_widgets.widgets.protocol import __main__ as generate
from lmtt_widgets.widgets.protocol import check, markdown
from tiny_models import loaded

ROOT = pathlib.Path(__file__).resolve().parents[1]
FIXTURE = ROOT / "js" / "test" / "fixtures" / "explorer-state.json"


@pytest.fixture(scope="module")
def ex():
    return explain(loaded("gpt2"), "Hi there")


def test_generated_files_are_fresh():
    assert generate.stale() == [], "run: python -m lmtt_widgets.widgets.protocol --write"


def test_a_stale_generated_file_is_detected(tmp_path, monkeypatch):
    ts = tmp_path / "protocol.gen.ts"
    ts.write_text(generate.TS.read_text().replace('"after_mlp"', '"after_MLP"'))
    monkeypatch.setattr(generate, "TS", ts)
    assert generate.stale() == [ts]
    assert generate.main(["--check"]) == 1


def test_generated_typescript_names_every_kind_and_trait():
    ts = generate.TS.read_text()
    assert 'export const NODE_KINDS = ["embedding", "after_attention", "mlp", "after_mlp"] as const;' in ts
    for tr in protocol.TRAITS:
        assert f"  {tr.name}" in ts
    assert f"export const PYTHON_ONLY = {json.dumps(list(protocol.PYTHON_ONLY))} as const;" in ts


def test_the_doc_tables_come_from_the_protocol():
    doc = generate.DOC.read_text()
    block = doc[doc.index(markdown.BEGIN):doc.index(markdown.END)]
    for tr in protocol.TRAITS:
        assert f"| `{tr.name}` |" in block
    assert "| `edge_heads` | `float32[E, H]` |" in block
    assert "the slider offers [0.005, 0.5]" in block
    # the hand-written notes only talk about traits that exist
    notes = doc[doc.index("### Behaviour of the traits"):doc.index("## Messages")]
    named = {line.split("`")[1] for line in notes.splitlines() if line.startswith("- `")}
    assert named and named <= set(protocol.TRAIT), named - set(protocol.TRAIT)


def test_widget_traits_are_the_protocols():
    w = Explorer()
    synced = set(w.traits(sync=True)) - {"_model_module", "_model_module_version", "_model_name", "_view_module",
                                         "_view_module_version", "_view_name", "_view_count", "_dom_classes",
                                         "_anywidget_id", "_esm", "_css", "layout", "tabbable", "tooltip"}
    declared = {tr.name for tr in protocol.TRAITS if tr.writer != "report"}
    assert synced == declared, (synced - declared, declared - synced)
    typed = {n for n, tr in w.traits(sync=True).items() if tr.metadata.get("protocol")}
    assert {"graph", "meta", "lens", "neurons", "details", "status", "method_scores", "attribution"} <= typed


def test_row_mapping_and_detail_keys():
    L = 3
    rows = [protocol.row_of(*protocol.node_of_row(r)) for r in range(2 * L + 1)]
    assert rows == list(range(2 * L + 1))
    assert protocol.row_of("mlp", 2) == 5.5
    assert protocol.detail_key("head", 1, 2, 3) == "head:1:2:3"
    with pytest.raises(ValueError, match="layer, token"):
        protocol.detail_key("mlp", 1)


def test_details_keys_follow_the_protocol(ex):
    from lmtt_widgets.widgets.payload import details

    for kind, fields in protocol.DETAIL_KEYS.items():
        key = protocol.detail_key(kind, *[1 if f != "row" else 2 for f in fields])
        check(protocol.DETAIL_RESULTS[kind], details(ex, key), key)
    with pytest.raises(ValueError, match="unknown details key.*head:<layer>:<head>:<token>"):
        details(ex, "head:1:2")


def test_drifted_payloads_are_refused_in_python(ex):
    w = Explorer(ex)
    good = dict(w.graph)
    renamed = {("edge_source" if k == "edge_src" else k): v for k, v in good.items()}
    with pytest.raises(t.TraitError, match="edge_source"):
        w.graph = renamed
    with pytest.raises(t.TraitError, match="lacks edge_weight"):
        w.graph = {k: v for k, v in good.items() if k != "edge_weight"}
    with pytest.raises(t.TraitError, match="graph.edge_weight must be float32"):
        w.graph = {**good, "edge_weight": {**good["edge_weight"], "dtype": "int32"}}
    e = decode_array(good["edge_src"]).shape[0]
    with pytest.raises(t.TraitError, match=f"edge_weight has E = {e + 1}, but another array of the same value has "
                                           f"E = {e}"):
        w.graph = {**good, "edge_weight": np.zeros(e + 1, np.float32)}
    with pytest.raises(t.TraitError, match="do not fit uint32"):
        w.graph = {**good, "edge_src": -np.ones(e, np.int64)}
    with pytest.raises(t.TraitError, match=r"head_importance must be float32\[L, H, T\]"):
        w.head_importance = np.zeros((2, 3))
    with pytest.raises(t.TraitError, match=r"details\['head:0:0:1'\] \(HeadDetail\) lacks pattern"):
        w.details = {"head:0:0:1": {"promoted": [], "suppressed": [], "importance": 0.0, "contribution": np.eye(2)}}
    assert w.graph == good  # nothing was changed by the refusals


def test_typed_traits_encode_numpy_and_torch_into_binary_buffers(ex):
    import torch
    from ipywidgets.widgets.widget import _remove_buffers

    w = Explorer(ex)
    hi = torch.rand(ex.n_layers, ex.n_heads, ex.n_tokens, dtype=torch.float64)
    w.head_importance = hi
    assert w.head_importance["dtype"] == "float32" and isinstance(w.head_importance["data"], bytes)
    assert np.allclose(decode_array(w.head_importance), hi.numpy(), atol=1e-7)
    state, paths, buffers = _remove_buffers(w.get_state(["head_importance", "graph"]))
    assert ["head_importance", "data"] in paths and ["graph", "edge_weight", "data"] in paths
    assert all(isinstance(b, (bytes, memoryview)) for b in buffers)


def _sent_state(w) -> list[dict]:
    sent = []
    w._send = lambda msg, buffers=None: sent.append(msg)  # what goes to the comm
    return sent


@pytest.mark.parametrize("name", ["graph", "meta", "details", "status", "method_scores", "attribution", "error",
                                  "lens", "tokens"])
def test_the_browser_cannot_write_python_only_traits(ex, name):
    """A comm update to a Python-only trait (through ipywidgets' own entry point) is reverted: Python's value
    stays, the browser gets it back, and `error` says why."""
    w = Explorer(ex)
    before = getattr(w, name)
    sent = _sent_state(w)
    hostile = {"graph": {}, "meta": {"model": "evil", "n_layers": 99}, "details": {"head:0:0:0": {"x": 1}},
               "status": {"state": "running", "message": "fake", "progress": 0.5}, "method_scores": {},
               "attribution": {}, "error": "", "lens": {}, "tokens": ["x"]}[name]
    w._handle_msg({"content": {"data": {"method": "update", "state": {name: hostile, "prompt": "new text"},
                                         "buffer_paths": []}}, "buffers": []})
    if name != "error":  # (the error bar now says why)
        assert getattr(w, name) is before, f"{name} was overwritten from the browser"
    assert f"may not change {name}" in w.error
    assert w.prompt == "new text", "the writable part of the same update still applies"
    reverted = [m["state"] for m in sent if m.get("method") == "update" and name in m.get("state", {})]
    assert reverted, f"Python did not send {name} back to the browser"


def test_python_only_and_writable_cover_every_trait():
    assert set(protocol.PYTHON_ONLY) | set(protocol.BROWSER_WRITABLE) | {"graph_variants"} == set(protocol.TRAIT)
    assert {"graph", "meta", "details", "status", "method_scores", "attribution"} <= set(protocol.PYTHON_ONLY)
    assert {"selection", "target", "threshold", "foil"} <= set(protocol.BROWSER_WRITABLE)


def test_a_huge_details_key_or_id_is_not_echoed_back(ex):
    w = Explorer(ex)
    sent = []
    w.send = lambda content, buffers=None: sent.append(content)
    w._on_message(w, {"type": "details", "id": "big", "key": "lens:" + "1" * 1_000_000}, [])
    w._on_message(w, {"type": "details", "id": "i" * 1_000_000, "key": "lens:1:1"}, [])
    refused, answered = sent
    assert not refused["ok"] and "malformed details key" in refused["error"] and refused["id"] == "big"
    assert refused["key"] == "lens:" + "1" * 195 + "…"
    assert answered["ok"] and answered["id"] == "i" * 200 + "…"
    for reply in sent:
        assert len(json.dumps(reply)) < 2000


# ---- the state a tiny model exports, decoded by js/test/protocol.test.ts

def _state(ex) -> dict:
    w = Explorer(ex)
    w.selection = {"kind": "head", "layer": 1, "head": 2, "token": 3}
    for key in ("head:1:2:3", "mlp:0:3", "lens:2:1"):  # one detail result of each array-carrying kind
        w.details = {**w.details, key: protocol_details(ex, key)}
    state = w.get_state()
    return to_base64({k: state[k] for k in protocol.TRAIT if k in state})


def protocol_details(ex, key):
    from lmtt_widgets.widgets.payload import details

    return details(ex, key)


def _same_shape(fresh, old, path="state"):
    """Same protocol: same keys, types, array dtypes and shapes, array values to float32 precision. Text and
    scalars may differ (wording changes are not protocol changes)."""
    if isinstance(fresh, dict) and set(fresh) == {"dtype", "shape", "data"}:
        assert (fresh["dtype"], fresh["shape"]) == (old["dtype"], old["shape"]), path
        a, b = (decode_array(x).astype(np.float64) for x in (fresh, old))
        assert np.allclose(a, b, rtol=1e-4, atol=1e-5, equal_nan=True), f"{path}: values changed"
    elif isinstance(fresh, dict):
        assert isinstance(old, dict) and set(fresh) == set(old), f"{path}: keys {set(fresh) ^ set(old)}"
        for k in fresh:
            _same_shape(fresh[k], old[k], f"{path}.{k}")
    elif isinstance(fresh, list):
        assert isinstance(old, list), path
    else:
        assert type(fresh) is type(old) or {type(fresh), type(old)} <= {int, float}, path


def test_exported_state_fixture_is_fresh_and_follows_the_protocol(ex):
    state = json.loads(json.dumps(_state(ex)))
    for tr in protocol.TRAITS:
        if tr.name in state:
            check(tr.schema, _bytes(state[tr.name]), tr.name)
    for key, result in state["details"].items():
        check(protocol.DETAIL_RESULTS[key.split(":")[0]], _bytes(result), key)
    if os.environ.get("LMTT_WRITE_FIXTURES"):
        FIXTURE.parent.mkdir(parents=True, exist_ok=True)
        FIXTURE.write_text(json.dumps(state, sort_keys=True, ensure_ascii=False, separators=(",", ":")) + "\n",
                           encoding="utf-8")
    assert FIXTURE.exists(), "write it: LMTT_WRITE_FIXTURES=1 python -m pytest tests/test_protocol.py"
    assert FIXTURE.stat().st_size < 60_000
    _same_shape(state, json.loads(FIXTURE.read_text(encoding="utf-8")))


def _bytes(v):
    """base64 array data back to bytes (the form the schema checks sizes on)."""
    if isinstance(v, dict) and set(v) == {"dtype", "shape", "data"} and isinstance(v["data"], str):
        assert v["dtype"] in DTYPES
        return {**v, "data": base64.b64decode(v["data"])}
    if isinstance(v, dict):
        return {k: _bytes(x) for k, x in v.items()}
    return v


def test_the_report_state_follows_the_protocol(ex):
    """The report's state is the widget's traits (plus the report-only `graph_variants`), each as the protocol
    shapes it: a field the report adds or renames without the protocol fails here."""
    from lmtt_widgets.report import report_state

    state = report_state(ex)
    assert set(state) <= set(protocol.TRAIT), set(state) - set(protocol.TRAIT)
    for name, value in state.items():
        check(protocol.TRAIT[name].schema, value, name)
    for key, result in state["details"].items():
        check(protocol.DETAIL_RESULTS[key.split(":")[0]], result, key)
