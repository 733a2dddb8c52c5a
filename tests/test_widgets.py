"""Issue 4 (Python side): traits, codec, selection validation and the browser's messages."""

import importlib
import json

import numpy as np
import pytest
import torch

from lmtt_widgets import Explorer, FlowGraph, HeadHeatmap, SelectionError, explain
from lmtt_widgets.widgets.codec import decode_array, encode_array, to_base64, to_message
from lmtt_widgets.widgets.selection import check_selection
from tiny_models import loaded

PROMPT = "the cat sat on the mat"


@pytest.fixture(scope="module")
def ex():
    return explain(loaded("llama", seed=3), PROMPT)


def messages(widget):
    sent = []
    widget.send = lambda content, buffers=None: sent.append((content, buffers or []))
    return sent


def test_codec_round_trips_every_carrier():
    x = np.arange(12, dtype=np.float32).reshape(3, 4) / 7
    enc = encode_array(torch.tensor(x))
    assert isinstance(enc["data"], bytes) and enc["shape"] == [3, 4]
    assert np.array_equal(decode_array(enc), x)
    obj = {"a": enc, "b": [encode_array([1, 2], "uint32")], "c": 3}
    msg, buffers = to_message(obj)
    assert msg["a"]["data"] == 0 and msg["b"][0]["data"] == 1 and len(buffers) == 2
    json.dumps(msg)
    b64 = to_base64(obj)
    json.dumps(b64)
    assert np.array_equal(decode_array(b64["a"]), x)


def test_traits_hold_binary_arrays_and_small_json(ex):
    w = Explorer(ex)
    assert w.panes == ["prompt", "graph", "heads", "neurons", "vocab", "attribution"]
    assert w.target == ex.n_tokens - 1 and w.tokens == ex.tokens
    g = w.graph
    assert all(isinstance(v["data"], bytes) for v in g.values())
    n_edges = decode_array(g["edge_weight"]).shape[0]
    assert n_edges == len(ex.route().src) > 0
    assert decode_array(g["edge_heads"]).shape == (n_edges, ex.n_heads)
    assert decode_array(w.head_importance).shape == (ex.n_layers, ex.n_heads, ex.n_tokens)
    assert decode_array(w.lens["ids"]).shape[0] == 2 * ex.n_layers + 1
    # the JSON part (everything but the buffers) stays small
    json_part, _ = to_message({k: getattr(w, k) for k in ("graph", "head_importance", "block_importance", "neurons", "lens", "meta")})
    assert len(json.dumps(json_part)) < 20_000


def test_threshold_and_target_refilter_without_recompute(ex, monkeypatch):
    w = Explorer(ex)
    explain_module = importlib.import_module("lmtt_widgets.explain")  # the package exports a function of that name

    # the bindings explain() really calls: scoring the layers again, or tracing again
    monkeypatch.setattr(explain_module, "score_layers", lambda *a, **k: pytest.fail("recomputed"))
    monkeypatch.setattr(explain_module, "trace", lambda *a, **k: pytest.fail("re-traced"))
    before = decode_array(w.graph["edge_weight"]).shape[0]
    w.threshold = 0.01
    assert decode_array(w.graph["edge_weight"]).shape[0] > before
    w.target = 2
    assert decode_array(w.graph["node_token"]).max() <= 2
    w.granularity = "edge"
    assert len(ex.route(2, 0.01, "edge").src) == decode_array(w.graph["edge_weight"]).shape[0]


def test_neurons_sent_with_the_graph_are_capped_and_computed_once(ex, monkeypatch):
    """A low threshold puts many MLP blocks on the route: only the target column and the top `cap` route blocks
    travel with the graph (the rest are fetched on selection), and no block's neurons are computed twice."""
    import sys

    from lmtt_widgets.contributions.graph import MLP, node_of
    from lmtt_widgets.widgets import payload

    explain_mod = sys.modules["lmtt_widgets.explain"]  # the package's `explain` attribute is the function
    calls = []
    real = explain_mod.neuron_importance
    monkeypatch.setattr(explain_mod, "neuron_importance", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(payload.precomputed_mlp_nodes, "__defaults__", (2,))
    fresh = explain(loaded("llama", seed=3), PROMPT)
    w = Explorer(fresh)
    w.threshold = 0.005
    g = fresh.route(w.target, 0.005)
    on_route = {(layer, tok) for kind, layer, tok in (node_of(int(n), g.n_tokens) for n in g.nodes) if kind == MLP}
    available = decode_array(w.neurons["available"])
    sent = {(int(a), int(b)) for a, b in zip(*np.nonzero(available))}
    column = {(layer, w.target) for layer in range(fresh.n_layers)}
    assert len(on_route - column) > 2  # the cap matters here
    best = max(on_route, key=lambda lt: float(fresh.scores.layers[lt[0]].mlp[lt[1]]))
    assert column <= sent and best in sent and len(sent - column) <= 2
    assert len(calls) == len(fresh._neuron_rows)  # every node once, however often the graph was refiltered
    w._on_message(w, {"type": "details", "id": "n", "key": f"mlp:{best[0]}:{best[1]}"}, [])
    assert len(calls) == len(fresh._neuron_rows)
    # a key spelled differently (leading zero) from the browser still gets its block's result
    from lmtt_widgets.widgets.payload import details

    assert details(fresh, f"mlp:0{best[0]}:{best[1]}") == details(fresh, f"mlp:{best[0]}:{best[1]}")


def test_selection_from_python_is_validated(ex):
    w = Explorer(ex)
    w.selection = {"kind": "head", "layer": 1, "head": 2, "token": 3}
    assert w.selection == {"kind": "head", "layer": 1, "head": 2, "token": 3}
    with pytest.raises(Exception, match="head 9 is out of range 0..3"):
        w.selection = {"kind": "head", "layer": 1, "head": 9, "token": 3}
    assert w.selection["head"] == 2
    w.selection = None
    assert w.selection is None


def test_bad_selection_from_browser_is_reverted_with_message(ex):
    w = Explorer(ex)
    w.selection = {"kind": "mlp", "layer": 0, "token": 1}
    w.set_state({"selection": {"kind": "edge", "layer": 1, "source": 4, "token": 2}})
    assert "source 4 > token 2" in w.error
    assert w.selection == {"kind": "mlp", "layer": 0, "token": 1}
    w.set_state({"target": 999})
    assert "out of range" in w.error and w.target == ex.n_tokens - 1
    w.set_state({"selection": {"kind": "node", "layer": 0, "token": 1, "node_kind": "after_mlp"}})
    assert w.error == "" and w.selection["kind"] == "node"


def test_selection_rules():
    limits = dict(n_layers=2, n_tokens=5, n_heads=4, n_neurons=8)
    assert check_selection({"kind": "node", "layer": -1, "token": 0, "node_kind": "embedding"}, **limits)["layer"] == -1
    for bad, msg in [
        ({"kind": "nope"}, "unknown"),
        ({"kind": "mlp", "layer": 0}, "missing token"),
        ({"kind": "neuron", "layer": 0, "neuron": 8, "token": 0}, "neuron 8 is out of range"),
        ({"kind": "mlp", "layer": 0.5, "token": 0}, "integer"),
        ({"kind": "node", "layer": 0, "token": 0, "node_kind": "<img>"}, "node_kind"),
    ]:
        with pytest.raises(SelectionError, match=msg):
            check_selection(bad, **limits)


def test_details_messages_answer_with_buffers_or_errors(ex):
    w = Explorer(ex)
    sent = messages(w)
    w._on_message(w, {"type": "details", "id": "a", "key": "head:1:0:3"}, [])
    w._on_message(w, {"type": "details", "id": "b", "key": "neuron:0:7:2"}, [])
    w._on_message(w, {"type": "details", "id": "c", "key": "head:7:0:3"}, [])
    w._on_message(w, {"type": "details", "id": "d", "key": "garbage"}, [])
    (a, abuf), (b, _), (c, _), (d, _) = sent
    assert a["ok"] and a["id"] == "a" and len(abuf) == 2
    pattern = np.frombuffer(abuf[a["result"]["pattern"]["data"]], np.float32).reshape(a["result"]["pattern"]["shape"])
    assert np.allclose(pattern, ex.attention(1)[0].numpy(), atol=1e-6)
    assert b["ok"] and len(b["result"]["promoted"]) == 10
    assert not c["ok"] and "layer 7 is out of range" in c["error"]
    assert not d["ok"] and "unknown details key" in d["error"]


def test_run_message_explains_with_progress_and_reports_errors(ex):
    w = Explorer(ex)
    states = []
    w.observe(lambda ch: states.append(dict(ch["new"])), names=["status"])
    w._on_message(w, {"type": "run", "prompt": ""}, [])
    assert w.status["state"] == "error" and "empty" in w.error
    assert w.tokens == ex.tokens  # nothing lost
    w._on_message(w, {"type": "run", "prompt": "a new prompt"}, [])
    assert w.status["state"] == "idle" and w.error == ""
    assert len(w.tokens) == len("a new prompt") and w.explanation is not ex
    progress = [s["progress"] for s in states if s["state"] == "running"]
    assert progress[-1] == 1.0 and progress == sorted(progress)


def test_separate_widgets_link(ex):
    import ipywidgets

    g, h = FlowGraph(ex), HeadHeatmap(ex)
    assert g.panes == ["graph"] and h.panes == ["heads"]
    ipywidgets.link((g, "selection"), (h, "selection"))
    g.selection = {"kind": "mlp", "layer": 1, "token": 2}
    assert h.selection == g.selection
    ipywidgets.jslink((g, "target"), (h, "target"))  # browser-side link: accepted for these traits


def test_explorer_from_model_and_prompt():
    w = Explorer(loaded("gpt2"), "abc")
    assert w.tokens == ["a", "b", "c"] and w.prompt == "abc"


def test_hostile_tokens_travel_as_plain_text(ex):
    w = Explorer(loaded("gpt2"), "<img src=x onerror=alert(1)>")
    assert "".join(w.tokens) == "<img src=x onerror=alert(1)>"
