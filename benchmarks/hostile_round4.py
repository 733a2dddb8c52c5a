"""Hostile inputs against the Python API, the widgets' message handlers, the CLI and write_report (round 4).

Each input is run once and its outcome classified:
  clear   an LmttError (ours), or a message the widget shows in its error bar / details reply that is not
          "internal error";
  trait   traitlets' own TraitError (a wrong type for a trait, set from Python): clear, but not one of our classes;
  builtin a ValueError/TypeError/OSError raised by our own code but not one of our classes (reviewed by hand);
  raw     an exception from torch / numpy / transformers internals, or a bare KeyError / IndexError / ...;
          or a widget reply "internal error: ...";
  kept    the widget showed a clear error but kept the refused value (not put back in the browser);
  silent  accepted although the input is garbage (the case says what it expected);
  ok      accepted, and acceptance is right;
  hang    did not finish within the time limit;
  stuck   the widget's status stayed "running".

    python benchmarks/hostile_round4.py [-v] [-k substring]
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import math
import os
import pathlib
import signal
import sys
import tempfile
import traceback
import warnings
from fractions import Fraction

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # a hub name must never wait on the network here
ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import torch  # noqa: E402
import traitlets  # noqa: E402

from lmtt_widgets import Explorer, FlowGraph, HeadHeatmap, NeuronView, VocabView, estimate_memory, explain  # noqa: E402
from lmtt_widgets import load_model  # noqa: E402
from lmtt_widgets.errors import LmttError  # noqa: E402
from test_robustness import char_tokenizer  # noqa: E402
from tiny_models import build  # noqa: E402

warnings.simplefilter("ignore")
LIMIT_S = 60


class Hang(Exception):
    pass


class Reply(Exception):
    """A widget answered with an error message (clear, or 'internal error' = raw)."""


class Kept(Exception):
    """The widget showed a clear error but kept the value it refused (not reverted in the browser)."""


class Garbage(Exception):
    """Accepted what should have been refused."""


def _alarm(signum, frame):
    raise Hang()


def outcome(fn, expect: str) -> tuple[str, str]:
    signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(LIMIT_S)
    try:
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            value = fn()
    except Hang:
        return "hang", f"> {LIMIT_S} s"
    except Reply as exc:
        msg = str(exc)
        return ("raw" if "internal error" in msg else "clear"), msg
    except Garbage as exc:
        return "silent", str(exc)
    except Kept as exc:
        return "kept", str(exc)
    except LmttError as exc:
        return "clear", f"{type(exc).__name__}: {exc}"
    except traitlets.TraitError as exc:  # traitlets' own type check: names the trait and the type it expects
        return "trait", f"{type(exc).__name__}: {exc}"
    except BaseException as exc:  # noqa: BLE001 - classifying is the point
        tb = traceback.extract_tb(exc.__traceback__)
        last = tb[-1].filename if tb else ""
        ours = "lmtt_widgets" in last
        kind = "builtin" if ours and isinstance(exc, (ValueError, TypeError, OSError)) else "raw"
        return kind, f"{type(exc).__name__}: {exc} [{pathlib.Path(last).name}:{tb[-1].lineno if tb else ''}]"
    finally:
        signal.alarm(0)
    if expect == "refuse":
        return "silent", f"accepted: {_short(value)}"
    return "ok", _short(value)


def _short(value) -> str:
    text = repr(value)
    return text if len(text) < 120 else text[:117] + "..."


# ---------------------------------------------------------------------------------------------------------------
lm = load_model(build("llama", attn="sdpa"), char_tokenizer())
ex = explain(lm, "abcdef")
L, H, T = ex.n_layers, ex.n_heads, ex.n_tokens
CASES: list[tuple[str, str, object, str]] = []


def add(category: str, name: str, fn, expect: str = "refuse") -> None:
    CASES.append((category, name, fn, expect))


# ---- A. prompts
PROMPTS = {
    "empty text": "", "one space": " ", "NUL only": "\x00", "text past the context (100 chars)": "a" * 100,
    "empty list": [], "list of empty list": [[]], "empty tensor": torch.tensor([], dtype=torch.long),
    "0-d tensor": torch.tensor(97), "0-d numpy array": np.array(97), "meta-device ids": torch.tensor([97, 98], device="meta"),
    "uint8 numpy ids": np.array([97, 98], dtype=np.uint8), "int32 tensor": torch.tensor([97, 98], dtype=torch.int32),
    "int8 negative": torch.tensor([-1, 5], dtype=torch.int8), "complex tensor": torch.tensor([97 + 0j]),
    "digits text": "123", "dict with extra keys": {"input_ids": [97, 98], "foo": 1}, "dict of text ids": {"input_ids": "abc"},
    "tuple of texts": ("ab", "cd"), "generator": (i for i in [97, 98]), "pathlib.Path": pathlib.Path("abc"),
    "memoryview": memoryview(b"ab"), "list of np.int64": [np.int64(97), np.int64(98)],
    "list of 0-d tensors": [torch.tensor(97), torch.tensor(98)], "list with None": [97, None],
    "list of float tensors": [torch.tensor(97.0)], "list with str id": [97, "98"], "Fraction ids": [Fraction(97, 1)],
    "lone surrogate": "ab\udfffc", "dict empty": {}, "bool tensor 2-d": torch.ones(1, 2, dtype=torch.bool),
    "float16 ids": torch.tensor([97, 98], dtype=torch.float16), "numpy string array": np.array(["a", "b"]),
    "numpy object array": np.array([97, None], dtype=object), "nested tuple": ((97, 98),),
}
for name, p in PROMPTS.items():
    expect = "either" if name in ("one space", "NUL only", "digits text", "dict with extra keys", "uint8 numpy ids",
                                  "int32 tensor", "list of np.int64", "list of 0-d tensors", "generator",
                                  "0-d tensor", "0-d numpy array", "nested tuple") else "refuse"
    add("A prompt", name, lambda p=p: explain(lm, p).tokens, expect)

# ---- B. explain options
OPTS = {
    "budget=True": dict(budget=True), "budget=1e9 float": dict(budget=1e9), "budget=np.int64(5)": dict(budget=np.int64(5)),
    "generate=-1": dict(generate=-1), "generate=1.5": dict(generate=1.5), "generate='3'": dict(generate="3"),
    "generate=True": dict(generate=True), "generate=nan": dict(generate=float("nan")), "generate=None": dict(generate=None),
    "generate=10**9": dict(generate=10**9), "generate=np.int64(2)": dict(generate=np.int64(2)),
    "continuation=5": dict(continuation=5), "continuation=''": dict(continuation=""),
    "continuation=[]": dict(continuation=[]), "continuation=[1.5]": dict(continuation=[1.5]),
    "continuation=b'x'": dict(continuation=b"x"), "continuation=surrogate": dict(continuation="\ud800"),
    "continuation=[999]": dict(continuation=[999]), "chat=True on text": dict(chat=True),
    "chat='yes'": dict(chat="yes"), "check_memory='no'": dict(check_memory="no"),
    "keep_attention=np.bool_": dict(keep_attention=np.bool_(True)), "generate+continuation": dict(generate=2, continuation="x"),
}
for name, o in OPTS.items():
    expect = "either" if name in ("budget=np.int64(5)", "generate=np.int64(2)", "generate=None", "generate=10**9") else "refuse"
    add("B explain options", name, lambda o=o: explain(lm, "abc", **o).tokens, expect)
add("B explain options", "chat with bad messages", lambda: explain(lm, [{"role": 5}], chat=True))
add("B explain options", "chat with a dict", lambda: explain(lm, {"role": "user", "content": "hi"}, chat=True))
add("B explain options", "explain(None, 'abc')", lambda: explain(None, "abc"))
add("B explain options", "explain('', 'abc')", lambda: explain("", "abc"))

# ---- C. Explanation methods
nan, inf = float("nan"), float("inf")
METHODS = {
    "predictions(token=tensor([1]))": lambda: ex.predictions(torch.tensor([1])),
    "predictions(k=np.inf)": lambda: ex.predictions(k=np.inf),
    "predictions(k=np.float64(3))": lambda: ex.predictions(k=np.float64(3)),
    "predictions(token=np.uint64(2**63))": lambda: ex.predictions(np.uint64(2**63)),
    "predictions(token=-0.0)": lambda: ex.predictions(-0.0),
    "route(target=np.float64(2.0))": lambda: ex.route(np.float64(2.0)),
    "route(threshold=np.float64(nan))": lambda: ex.route(threshold=np.float64(nan)),
    "route(threshold=tensor([0.04]))": lambda: ex.route(threshold=torch.tensor([0.04])),
    "route(threshold=inf)": lambda: ex.route(threshold=inf),
    "route(threshold=Fraction)": lambda: ex.route(threshold=Fraction(1, 25)),
    "route(threshold=complex)": lambda: ex.route(threshold=0.04 + 0j),
    "route(threshold=None)": lambda: ex.route(threshold=None),
    "route(granularity='HEAD')": lambda: ex.route(granularity="HEAD"),
    "route(threshold=int tensor)": lambda: ex.route(threshold=torch.tensor(1)),
    "heads('0')": lambda: ex.heads("0"),
    "heads(None)": lambda: ex.heads(None),
    "heads([0])": lambda: ex.heads([0]),
    "heads(np.array([0]))": lambda: ex.heads(np.array([0])),
    "heads(tensor(0, meta))": lambda: ex.heads(torch.tensor(0, device="meta")),
    "top_heads(k=np.float64(3))": lambda: ex.top_heads(np.float64(3)),
    "top_heads(k=None)": lambda: ex.top_heads(None),
    "top_heads(token=T)": lambda: ex.top_heads(3, T),
    "neurons(0, k=np.uint8(3))": lambda: ex.neurons(0, k=np.uint8(3)),
    "neurons(L)": lambda: ex.neurons(L),
    "lens(-1)": lambda: ex.lens(-1),
    "lens(0, norm='')": lambda: ex.lens(0, norm=""),
    "lens(0, k=True)": lambda: ex.lens(0, k=True),
    "logit_lens(k=0)": lambda: ex.logit_lens(k=0),
    "logit_lens(token=1.5)": lambda: ex.logit_lens(1.5),
    "project(float16 vec)": lambda: ex.project(torch.zeros(64, dtype=torch.float16)),
    "project(int64 vec)": lambda: ex.project(torch.zeros(64, dtype=torch.int64)),
    "project(complex vec)": lambda: ex.project(torch.zeros(64, dtype=torch.complex64)),
    "project(bool vec)": lambda: ex.project(torch.zeros(64, dtype=torch.bool)),
    "project(nan vec)": lambda: ex.project(torch.full((64,), nan, dtype=torch.float64)),
    "project(inf vec)": lambda: ex.project(torch.full((64,), inf, dtype=torch.float64)),
    "project(3x64 batch)": lambda: ex.project(torch.zeros(3, 64, dtype=torch.float64)),
    "project(meta vec)": lambda: ex.project(torch.zeros(64, device="meta")),
    "project(numpy vec)": lambda: ex.project(np.zeros(64)),
    "project(0-width)": lambda: ex.project(torch.zeros(0)),
    "attention(-1)": lambda: ex.attention(-1),
    "attention('1')": lambda: ex.attention("1"),
    "head_attention(0, 4)": lambda: ex.head_attention(0, 4),
    "head_attention(0, np.int8(-1))": lambda: ex.head_attention(0, np.int8(-1)),
    "head_contributions(0, '1')": lambda: ex.head_contributions(0, "1"),
    "residual(2L+1, 0)": lambda: ex.residual(2 * L + 1, 0),
    "residual(0, 'a')": lambda: ex.residual(0, "a"),
    "head_output(0, 0, token=T)": lambda: ex.head_output(0, 0, T),
    "mlp_output(L)": lambda: ex.mlp_output(L),
    "neuron_output(0, -1)": lambda: ex.neuron_output(0, -1),
    "neuron_tokens(0, 0, k=0)": lambda: ex.neuron_tokens(0, 0, k=0),
    "head_tokens(0, 0, norm=5)": lambda: ex.head_tokens(0, 0, norm=5),
    "neuron_importance(0, tensor([1, 2]))": lambda: ex.neuron_importance(0, torch.tensor([1, 2])),
    "metric(target=tensor(3.7))": lambda: ex.metric(target=torch.tensor(3.7)),
    "metric(target=np.float32(3.7))": lambda: ex.metric(target=np.float32(3.7)),
    "metric(target=10**9)": lambda: ex.metric(target=10**9),
    "metric(target='bc')": lambda: ex.metric(target="bc"),
    "metric(target=nan)": lambda: ex.metric(target=nan),
    "metric(target=b'a')": lambda: ex.metric(target=b"a"),
    "metric(target=[1, 2])": lambda: ex.metric(target=[1, 2]),
    "metric(target=tensor([1, 2]))": lambda: ex.metric(target=torch.tensor([1, 2])),
    "metric(target=np.array([5]))": lambda: ex.metric(target=np.array([5])),
    "metric(position=-1)": lambda: ex.metric(position=-1),
    "metric(position=1.5)": lambda: ex.metric(position=1.5),
    "metric(position='2')": lambda: ex.metric(position="2"),
    "metric(target=5, foil=5)": lambda: ex.metric(target=5, foil=5),
    "metric(foil=surrogate)": lambda: ex.metric(foil="\ud800"),
    "score('nope')": lambda: ex.score("nope"),
    "score(None)": lambda: ex.score(None),
    "score(123)": lambda: ex.score(123),
    "score(['importance'])": lambda: ex.score(["importance"]),
    "score('importance', bogus=1)": lambda: ex.score("importance", bogus=1),
    "score('logit_attribution', neurons='yes')": lambda: ex.score("logit_attribution", neurons="yes"),
    "score('attribution_patching') no corruption": lambda: ex.score("attribution_patching"),
    "score('attribution_patching', corrupted='ab')": lambda: ex.score("attribution_patching", corrupted="ab"),
    "score('attribution_patching', corrupted=123)": lambda: ex.score("attribution_patching", corrupted=123),
    "score('attribution_patching', ablation='max')": lambda: ex.score("attribution_patching", ablation="max"),
    "score('attribution_patching', ablation=['mean'])": lambda: ex.score("attribution_patching", ablation=["mean"]),
    "score('integrated_gradients', steps=0)": lambda: ex.score("integrated_gradients", steps=0),
    "score('integrated_gradients', steps=2.7)": lambda: ex.score("integrated_gradients", steps=2.7),
    "score('integrated_gradients', steps='8')": lambda: ex.score("integrated_gradients", steps="8"),
    "score('integrated_gradients', steps=nan)": lambda: ex.score("integrated_gradients", steps=nan),
    "score('integrated_gradients', steps=None)": lambda: ex.score("integrated_gradients", steps=None),
    "score('integrated_gradients', rule='x')": lambda: ex.score("integrated_gradients", rule="x"),
    "score('integrated_gradients', batch_size=0)": lambda: ex.score("integrated_gradients", batch_size=0),
    "score('integrated_gradients', batch_size='x')": lambda: ex.score("integrated_gradients", batch_size="x"),
    "score('integrated_gradients', baseline=999)": lambda: ex.score("integrated_gradients", baseline=999),
    "score('integrated_gradients', baseline=[1])": lambda: ex.score("integrated_gradients", baseline=[1]),
    "score('occlusion', mode='x')": lambda: ex.score("occlusion", mode="x"),
    "score('occlusion', batch_size=-5)": lambda: ex.score("occlusion", batch_size=-5),
    "score('occlusion', batch_size=nan)": lambda: ex.score("occlusion", batch_size=nan),
    "score('saliency', position=T)": lambda: ex.score("saliency", position=T),
    "patch('L99.H0', ablation='mean')": lambda: ex.patch("L99.H0", ablation="mean"),
    "patch('garbage', ablation='mean')": lambda: ex.patch("garbage", ablation="mean"),
    "patch([], ablation='mean')": lambda: ex.patch([], ablation="mean"),
    "patch(None, ablation='mean')": lambda: ex.patch(None, ablation="mean"),
    "patch(123, ablation='mean')": lambda: ex.patch(123, ablation="mean"),
    "patch('L0.N99999', ablation='mean')": lambda: ex.patch("L0.N99999", ablation="mean"),
    "patch('L0.H0 5>3', ablation='mean')": lambda: ex.patch("L0.H0 5>3", ablation="mean"),
    "patch('L0.H0@99', ablation='mean')": lambda: ex.patch("L0.H0@99", ablation="mean"),
    "patch('L0.H0', ablation='mean', together='yes')": lambda: ex.patch("L0.H0", ablation="mean", together="yes"),
    "patch({'L0.H0': 1}, ablation='mean')": lambda: ex.patch({"L0.H0": 1}, ablation="mean"),
    "faithfulness(thresholds=[])": lambda: ex.faithfulness(thresholds=[], ablation="mean"),
    "faithfulness(thresholds=[nan])": lambda: ex.faithfulness(thresholds=[nan], ablation="mean"),
    "faithfulness(thresholds='0.1')": lambda: ex.faithfulness(thresholds="0.1", ablation="mean"),
    "faithfulness(thresholds=[2])": lambda: ex.faithfulness(thresholds=[2], ablation="mean"),
    "faithfulness(thresholds=0.1)": lambda: ex.faithfulness(thresholds=0.1, ablation="mean"),
    "agreement(k=0)": lambda: ex.agreement(ablation="mean", k=0),
    "agreement(k='3')": lambda: ex.agreement(ablation="mean", k="3"),
    "attribution_matrix() without generation": lambda: ex.attribution_matrix(),
    "attribution_matrix('nope')": lambda: ex.attribution_matrix("nope"),
    "attribution_patching(edges='yes')": lambda: ex.attribution_patching(ablation="mean", edges="yes"),
    "cancelling/external (ok)": lambda: (ex.cancelling_updates(), ex.external_edits()),
}
OK_METHODS = {"predictions(token=-0.0)", "neurons(0, k=np.uint8(3))", "patch([], ablation='mean')",
              "patch(None, ablation='mean')", "score('attribution_patching') no corruption",
              "faithfulness(thresholds=0.1)", "score('integrated_gradients', batch_size=0)", "route(threshold=Fraction)", "cancelling/external (ok)",
              "route(target=np.float64(2.0))", "project(float16 vec)"}
for name, fn in METHODS.items():
    add("C Explanation methods", name, fn, "either" if name in OK_METHODS else "refuse")

# ---- D. load_model and estimate_memory
tmp = pathlib.Path(tempfile.mkdtemp())
(tmp / "empty").mkdir()
(tmp / "junk").mkdir()
(tmp / "junk" / "config.json").write_text("{not json")
LOADS = {
    "load_model('')": lambda: load_model(""), "load_model(None)": lambda: load_model(None),
    "load_model(3.5)": lambda: load_model(3.5), "load_model('smollm3')": lambda: load_model("smollm3"),
    "load_model(empty dir)": lambda: load_model(str(tmp / "empty")),
    "load_model(dir with broken config.json)": lambda: load_model(str(tmp / "junk")),
    "load_model(Path to nowhere)": lambda: load_model(tmp / "nope"),
    "load_model(name with NUL)": lambda: load_model("a\x00b"),
    "load_model(lm, dtype=torch.int8)": lambda: load_model(lm.model, lm.tokenizer, dtype=torch.int8),
    "load_model(lm, dtype='float8')": lambda: load_model(lm.model, lm.tokenizer, dtype="float8"),
    "load_model(lm, device='nonsense')": lambda: load_model(lm.model, lm.tokenizer, device="nonsense"),
    "load_model(lm, device=5.5)": lambda: load_model(lm.model, lm.tokenizer, device=5.5),
    "load_model(lm, tokenizer='gpt2')": lambda: load_model(lm.model, "gpt2"),
    "load_model(torch.nn.Linear)": lambda: load_model(torch.nn.Linear(2, 2), lm.tokenizer),
    "estimate_memory(lm, -5)": lambda: estimate_memory(lm, -5),
    "estimate_memory(lm, 0)": lambda: estimate_memory(lm, 0),
    "estimate_memory(lm, True)": lambda: estimate_memory(lm, True),
    "estimate_memory(lm, nan)": lambda: estimate_memory(lm, nan),
    "estimate_memory(lm, 2.5)": lambda: estimate_memory(lm, 2.5),
    "estimate_memory(lm, np.int64(5))": lambda: estimate_memory(lm, np.int64(5)),
    "estimate_memory(lm, [])": lambda: estimate_memory(lm, []),
    "estimate_memory(lm, '5')": lambda: estimate_memory(lm, "5"),
    "estimate_memory(lm, 5, budget=0)": lambda: estimate_memory(lm, 5, budget=0),
    "estimate_memory(lm, 5, keep_attention='x')": lambda: estimate_memory(lm, 5, keep_attention="x"),
    "estimate_memory(None, 5)": lambda: estimate_memory(None, 5),
}
OK_LOADS = {"estimate_memory(lm, np.int64(5))", "estimate_memory(lm, '5')"}
for name, fn in LOADS.items():
    add("D load_model / estimate_memory", name, fn, "either" if name in OK_LOADS else "refuse")

# ---- E. write_report and the CLI
from lmtt_widgets.report import write_report  # noqa: E402

REPORTS = {
    "path=None": lambda: write_report(ex, None), "path=123": lambda: write_report(ex, 123),
    "path in a missing directory": lambda: write_report(ex, tmp / "no" / "dir" / "r.html"),
    "path is a directory": lambda: write_report(ex, tmp / "empty"),
    "path=''": lambda: write_report(ex, ""), "path with NUL": lambda: write_report(ex, str(tmp / "a\x00b.html")),
    "threshold=nan": lambda: write_report(ex, tmp / "r.html", threshold=nan),
    "threshold=2": lambda: write_report(ex, tmp / "r.html", threshold=2),
    "threshold='0.04'": lambda: write_report(ex, tmp / "r.html", threshold="0.04"),
    "granularity='x'": lambda: write_report(ex, tmp / "r.html", granularity="x"),
    "ex=None": lambda: write_report(None, tmp / "r.html"), "ex='text'": lambda: write_report("text", tmp / "r.html"),
    "max_bytes=0": lambda: write_report(ex, tmp / "r.html", max_bytes=0),
    "max_bytes=-1": lambda: write_report(ex, tmp / "r.html", max_bytes=-1),
    "max_bytes='big'": lambda: write_report(ex, tmp / "r.html", max_bytes="big"),
}
for name, fn in REPORTS.items():
    add("E write_report", name, fn, "either" if name == "max_bytes=0" else "refuse")


def cli(*argv):
    import lmtt_widgets
    from lmtt_widgets.__main__ import main

    real = lmtt_widgets.load_model
    lmtt_widgets.load_model = lambda name, *a, **k: lm if name == "smollm2" else real(name, *a, **k)
    try:
        rc = main(list(argv))
    finally:
        lmtt_widgets.load_model = real
    if rc != 0:
        raise Reply(f"exit {rc}")  # printed "error: ..." and a status: the clear path
    return rc


CLIS = {
    "cli --threshold nan": ("abc", "--threshold", "nan", "--html", str(tmp / "c.html")),
    "cli --threshold inf": ("abc", "--threshold", "inf", "--html", str(tmp / "c.html")),
    "cli --html into a missing dir": ("abc", "--html", str(tmp / "no" / "c.html")),
    "cli --html a directory": ("abc", "--html", str(tmp / "empty")),
    "cli empty prompt": ("", "--html", ""),
    "cli surrogate prompt": ("a\udc80b", "--html", ""),
    "cli --model ''": ("abc", "--model", "", "--html", ""),
    "cli --model nowhere": ("abc", "--model", str(tmp / "nope"), "--html", ""),
    "cli prompt past the context": ("a" * 100, "--html", ""),
}
for name, argv in CLIS.items():
    add("E CLI", name, lambda argv=argv: cli(*argv))


# ---- F. widget messages and state updates
def strict_send(w):
    """Record what the widget sends, packed like the kernel does (strict JSON: NaN / inf refused)."""
    sent = []

    def send(content, buffers=None):
        from lmtt_widgets.widgets.codec import wire_safe

        json.dumps(wire_safe(content), allow_nan=False).encode("utf-8")
        sent.append(content)

    w.send = send
    return sent


def fresh(cls=Explorer):
    w = cls(ex)
    w._lm = lm
    return w, strict_send(w)


def message(content, cls=Explorer, before=None, expect="refuse"):
    def run():
        w, sent = fresh(cls)
        if before:
            before(w)
        n = len(sent)
        w._on_message(w, content, [])
        return verdict(w, sent[n:], expect)
    return run


def verdict(w, replies, expect):
    if w.status.get("state") == "running":
        raise Garbage(f"status stuck on running: {w.status}")
    errs = [r["error"] for r in replies if r.get("ok") is False] + ([w.error] if w.error else [])
    if w.status.get("state") == "error":
        errs.append(w.status["message"])
    if errs:
        raise Reply(errs[0][:300])
    if expect == "refuse":
        raise Garbage(f"no error; replies {[_short(r) for r in replies]}")
    return [_short(r) for r in replies] or "no reply"


def details(key, msg_id=1, **kw):
    return message({"type": "details", "key": key, "id": msg_id}, **kw)


DETAILS = {
    "details head:0:0:-1": "head:0:0:-1", "details head:0:0:0: (trailing colon)": "head:0:0:0:",
    "details lens:-1:0": "lens:-1:0", "details lens:99:0": "lens:99:0", "details neuron:0:0:99999": "neuron:0:99999:0",
    "details mlp:0:99": "mlp:0:99", "details mlp:9:0": "mlp:9:0", "details check:route:nan": "check:route:nan",
    "details check:route:inf": "check:route:inf", "details check:route:1e400": "check:route:1e400",
    "details check:route:": "check:route:", "details check:route:-0.5": "check:route:-0.5",
    "details check:": "check:", "details check:L99.H0": "check:L99.H0", "details check:garbage": "check:garbage",
    "details check:L0.H0 (no corruption)": "check:L0.H0", "details key with NUL": "head:0\x00:0:0",
    "details key with surrogate": "lens:\ud800:0", "details key with fullwidth digits": "lens:\uff11:0",
    "details key with spaces": "head: 0 :0:0", "details key 1e3": "lens:1e3:0",
    "details key = ':'": ":", "details key huge list": ["head:0:0:0"] * 10_000,
    "details key bool": True,
}
DETAILS_OK = {"details key with fullwidth digits", "details key with spaces"}
for name, key in DETAILS.items():
    add("F widget details", name, details(key, expect="either" if name in DETAILS_OK else "refuse"),
        "either" if name in DETAILS_OK else "refuse")
add("F widget details", "details id=nan (echoed)", details("head:0:0:0", nan, expect="either"), "either")
add("F widget details", "details id=inf (echoed)", details("head:0:0:0", -inf, expect="either"), "either")
add("F widget details", "details id=huge int", details("head:0:0:0", 10**400, expect="either"), "either")
add("F widget details", "details check:route:0.3 with mean ablation",
    details("check:route:0.3", before=lambda w: setattr(w, "ablation", "mean"), expect="either"), "either")
for key in ["check:route:nan", "check:route:inf", "check:route:2", "check:L0.H9", "check:L0.N99999",
            "check:L0.H0@99", "check:L0.H0 3>5", "check:T99"]:
    add("F widget details", f"details {key} with mean ablation",
        details(key, before=lambda w: setattr(w, "ablation", "mean")))


def rerun_then(key):
    """A stale key: the browser asks for token 5's details after a re-run made the prompt 2 tokens long."""
    def before(w):
        w.selection = {"kind": "head", "layer": 1, "head": 3, "token": 5}
        w.run("ab")
    return details(key, before=before)


add("F widget details", "stale head key after a shorter re-run", rerun_then("head:1:3:5"))
add("F widget details", "stale lens key after a shorter re-run", rerun_then("lens:3:5"))
add("F widget details", "stale neuron key after a shorter re-run", rerun_then("neuron:1:0:5"))
add("F widget details", "details on an empty Explorer", lambda: verdict(*_empty_details(), "refuse"))


def _empty_details():
    w = Explorer()
    sent = strict_send(w)
    w._on_message(w, {"type": "details", "key": "head:0:0:0", "id": 1}, [])
    return w, sent


MESSAGES = {
    "run ''": {"type": "run", "prompt": ""},
    "run surrogate": {"type": "run", "prompt": "a\udc80"},
    "run past the context": {"type": "run", "prompt": "x" * 10_000},
    "run NUL": {"type": "run", "prompt": "\x00"},
    "run prompt=list": {"type": "run", "prompt": ["a"]},
    "run prompt=dict": {"type": "run", "prompt": {"input_ids": [1]}},
    "run prompt=bool": {"type": "run", "prompt": True},
    "run with extra fields": {"type": "run", "prompt": "ab", "evil": "<script>"},
    "attribution_matrix without generation": {"type": "attribution_matrix"},
    "attribution_agreement (expensive, tiny)": {"type": "attribution_agreement"},
    "type=''": {"type": ""}, "type=RUN": {"type": "RUN"}, "type=['run']": {"type": ["run"]},
    "content=str": "run", "content=int": 5, "content=huge dict": {f"k{i}": i for i in range(100_000)},
}
MSG_OK = {"run NUL", "run with extra fields", "attribution_agreement (expensive, tiny)"}
for name, content in MESSAGES.items():
    e = "either" if name in MSG_OK else "refuse"
    add("F widget messages", name, message(content, expect=e), e)
for cls in (FlowGraph, HeadHeatmap, NeuronView, VocabView):
    add("F widget messages", f"{cls.__name__}: run surrogate", message({"type": "run", "prompt": "\udc80"}, cls=cls))
    add("F widget messages", f"{cls.__name__}: details head:9:0:0", details("head:9:0:0", cls=cls))
add("F widget messages", "Explorer() without a model: run", lambda: _no_model_run())


def _no_model_run():
    w = Explorer()
    sent = strict_send(w)
    w._on_message(w, {"type": "run", "prompt": "ab"}, [])
    return verdict(w, sent, "refuse")


def state(update, expect="refuse", before=None):
    def run():
        w, sent = fresh()
        if before:
            before(w)
        good = {k: getattr(w, k) for k in ("target", "threshold", "granularity", "selection", "foil", "corrupted",
                                           "ablation", "head_mode", "attribution_method", "attribution_options",
                                           "prompt", "panes", "tokens", "static")}
        w.set_state(update)
        now = {k: getattr(w, k) for k in good}
        if w.error and expect == "refuse" and now != good and not set(update) & {"corrupted", "foil"}:
            changed = [k for k in good if now[k] != good[k]]
            raise Kept(f"error shown but {changed} kept the refused value: {w.error[:120]}")
        return verdict(w, [], expect)
    return run


STATES = {
    "target=True": {"target": True}, "target=-1": {"target": -1}, "target=2.0": {"target": 2.0},
    "target='2'": {"target": "2"}, "target=None": {"target": None}, "threshold=1e-320": {"threshold": 1e-320},
    "threshold=True": {"threshold": True}, "threshold=1": {"threshold": 1}, "threshold=inf": {"threshold": inf},
    "threshold=None": {"threshold": None}, "threshold=[0.1]": {"threshold": [0.1]},
    "granularity=None": {"granularity": None}, "granularity=''": {"granularity": ""},
    "selection edge source>token": {"selection": {"kind": "edge", "layer": 0, "head": 0, "token": 1, "source": 3}},
    "selection embedding last='x'": {"selection": {"kind": "node", "node_kind": "embedding", "layer": -1, "token": 0,
                                                   "last": "x"}},
    "selection embedding last<token": {"selection": {"kind": "node", "node_kind": "embedding", "layer": -1,
                                                     "token": 3, "last": 1}},
    "selection layer=True": {"selection": {"kind": "mlp", "layer": True, "token": 0}},
    "selection layer='0'": {"selection": {"kind": "mlp", "layer": "0", "token": 0}},
    "selection layer=-1 non-embedding": {"selection": {"kind": "node", "node_kind": "attn", "layer": -1, "token": 0}},
    "selection neuron=10**6": {"selection": {"kind": "neuron", "layer": 0, "neuron": 10**6, "token": 0}},
    "selection node_kind unknown": {"selection": {"kind": "node", "node_kind": "<img>", "layer": 0, "token": 0}},
    "selection kind=''": {"selection": {"kind": ""}},
    "selection 100k extra keys": {"selection": {"kind": "mlp", "layer": 0, "token": 0,
                                                **{f"x{i}": i for i in range(100_000)}}},
    "selection=str": {"selection": "head:0:0:0"}, "selection=0": {"selection": 0},
    "selection token=1.5": {"selection": {"kind": "mlp", "layer": 0, "token": 1.5}},
    "foil=''": {"foil": ""}, "foil='ab'": {"foil": "ab"}, "foil=-1": {"foil": -1}, "foil=True": {"foil": True},
    "foil=surrogate": {"foil": "\ud800"}, "foil=the prediction": None,  # filled below
    "corrupted=surrogate": {"corrupted": "a\ud800cdef"}, "corrupted=5": {"corrupted": 5},
    "corrupted=wrong length": {"corrupted": "abc"}, "corrupted=1MB": {"corrupted": "x" * 1_000_000},
    "ablation='max'": {"ablation": "max"},
    "head_mode=attribution_patching without corruption": {"head_mode": "attribution_patching"},
    "head_mode=''": {"head_mode": ""}, "attribution_method='nope'": {"attribution_method": "nope"},
    "attribution_method=None": {"attribution_method": None},
    "attribution_method='importance'": {"attribution_method": "importance"},
    "attribution_options=list": {"attribution_options": ["x"]},
    "attribution_options ig steps=-1": {"attribution_options": {"integrated_gradients": {"steps": -1}},
                                        "attribution_method": "integrated_gradients"},
    "attribution_options ig steps=1e12": {"attribution_options": {"integrated_gradients": {"steps": 10**12}},
                                          "attribution_method": "integrated_gradients"},
    "attribution_options ig steps=2.5": {"attribution_options": {"integrated_gradients": {"steps": 2.5}},
                                          "attribution_method": "integrated_gradients"},
    "attribution_options ig steps='8'": {"attribution_options": {"integrated_gradients": {"steps": "8"}},
                                         "attribution_method": "integrated_gradients"},
    "attribution_options ig batch_size=1e12": {"attribution_options": {"integrated_gradients": {"batch_size": 10**12}},
                                               "attribution_method": "integrated_gradients"},
    "attribution_options ig unknown option": {"attribution_options": {"integrated_gradients": {"evil": 1}},
                                              "attribution_method": "integrated_gradients"},
    "attribution_options ig options=str": {"attribution_options": {"integrated_gradients": "steps=8"},
                                           "attribution_method": "integrated_gradients"},
    "attribution_options ig position option": {"attribution_options": {"integrated_gradients": {"position": 99}},
                                               "attribution_method": "integrated_gradients"},
    "attribution_options occlusion batch_size=-1": {"attribution_options": {"occlusion": {"batch_size": -1}},
                                                    "attribution_method": "occlusion"},
    "attribution_options occlusion mode=None": {"attribution_options": {"occlusion": {"mode": None}},
                                                "attribution_method": "occlusion"},
    "attribution_options ig baseline=10**9": {"attribution_options": {"integrated_gradients": {"baseline": 10**9}},
                                              "attribution_method": "integrated_gradients"},
    "panes=['nope']": {"panes": ["nope"]}, "tokens=['x']": {"tokens": ["x"]}, "static=True": {"static": True},
    "error='x'": {"error": "pwned"}, "prompt=5": {"prompt": 5}, "unknown trait": {"no_such_trait": 1},
    "state=None": None, "state=list": [("target", 1)],
}
ex_pred = ex.predictions(k=1)[0].token_id
STATES["foil=the prediction"] = {"foil": ex_pred}
STATE_OK = {"target=2.0", "unknown trait", "selection 100k extra keys", "attribution_options ig batch_size=1e12"}
for name, update in STATES.items():
    e = "either" if name in STATE_OK else "refuse"
    add("F widget state", name, state(update, e), e)
add("F widget state", "selection after a re-run with fewer tokens",
    state({"selection": {"kind": "head", "layer": 0, "head": 0, "token": 5}},
          before=lambda w: w.run("ab")))
add("F widget state", "attribution_options ig keep_first='no'",
    state({"attribution_options": {"integrated_gradients": {"keep_first": "no"}}}))
add("F widget state", "attribution_options unknown method",
    state({"attribution_options": {"<img src=x>": {"steps": 1}}}))
add("F widget state", "target after a re-run with fewer tokens", state({"target": 5}, before=lambda w: w.run("ab")))


# ---- G. the widgets' Python methods and constructors
def widget_call(fn):
    def run():
        w, _ = fresh()
        w.ablation = "mean"
        return fn(w)
    return run


WIDGET_API = {
    "Explorer(ex, threshold=nan)": lambda: Explorer(ex, threshold=nan),
    "Explorer(ex, threshold=2)": lambda: Explorer(ex, threshold=2),
    "Explorer(ex, granularity='x')": lambda: Explorer(ex, granularity="x"),
    "Explorer(123)": lambda: Explorer(123),
    "Explorer(ex, prompt=5)": lambda: Explorer(lm, 5),
    "FlowGraph(None, '')": lambda: FlowGraph(lm, ""),
    "w.check([123])": widget_call(lambda w: w.check([123])),
    "w.check('L0.H0')": widget_call(lambda w: w.check("L0.H0")),
    "w.check(['L9.H0'])": widget_call(lambda w: w.check(["L9.H0"])),
    "w.check_route('abc')": widget_call(lambda w: w.check_route("abc")),
    "w.check_route(nan)": widget_call(lambda w: w.check_route(nan)),
    "w.check_route(2)": widget_call(lambda w: w.check_route(2)),
    "w.attribution_matrix('nope')": widget_call(lambda w: w.attribution_matrix("nope")),
    "w.run(b'abc')": widget_call(lambda w: w.run(b"abc")),
    "w.run(None)": widget_call(lambda w: w.run(None)),
    "w.selection = {'kind': 'head'}": widget_call(lambda w: setattr(w, "selection", {"kind": "head"})),
    "w.target = 1.5": widget_call(lambda w: setattr(w, "target", 1.5)),
    "w.foil = [1]": widget_call(lambda w: setattr(w, "foil", [1])),
    "w.show('text')": widget_call(lambda w: w.show("text")),
}
for name, fn in WIDGET_API.items():
    add("G widget Python API", name, fn, "either" if name == "w.check('L0.H0')" else "refuse")


# ---------------------------------------------------------------------------------------------------------------
def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("-v", action="store_true", help="print every case, not only the bad ones")
    parser.add_argument("-k", default="", help="only cases whose category or name contains this")
    parser.add_argument("--json", default="", help="write the outcomes here")
    args = parser.parse_args()
    table = collections.defaultdict(collections.Counter)
    rows = []
    for cat, name, fn, expect in CASES:
        if args.k and args.k not in cat + " " + name:
            continue
        kind, detail = outcome(fn, expect)
        table[cat][kind] += 1
        rows.append((cat, name, kind, detail))
        if args.v or kind not in ("clear", "ok"):
            print(f"{kind:8s} {cat:30s} {name:50s} {detail[:230]}", flush=True)
    kinds = ["clear", "ok", "trait", "kept", "builtin", "raw", "silent", "hang", "stuck"]
    print(f"\n{'category':32s} {'n':>4s} " + " ".join(f"{k:>7s}" for k in kinds))
    for cat, c in table.items():
        print(f"{cat:32s} {sum(c.values()):4d} " + " ".join(f"{c[k]:7d}" for k in kinds))
    total = collections.Counter()
    for c in table.values():
        total.update(c)
    print(f"{'total':32s} {sum(total.values()):4d} " + " ".join(f"{total[k]:7d}" for k in kinds))
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
