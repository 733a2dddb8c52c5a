"""The model set up for one traced pass, and put back exactly as it was when the pass ends, however it ends.

For the pass, the recorder's hooks are registered, modules in training mode run in eval mode, and attention goes
through the capture route. On the way out (a normal return, an exception, a KeyboardInterrupt) the capture is
undone first, then our hooks are removed, then the training flags are put back. guard.py holds the model for the
whole trace and is the safety net behind this: whatever is still changed when the trace ends is restored there.
"""

from __future__ import annotations

import contextlib

import torch

from .recorder import HookPlan


@contextlib.contextmanager
def instrumented(net: torch.nn.Module, hooks: HookPlan, capture):
    """Run the body with ``hooks`` registered, dropout off and inside ``capture`` (capture.attention_capture)."""
    # Modules in training mode (dropout) run in eval mode, through the model's own train() (Hugging Face models
    # re-select their kernels there), and are put back exactly as they were, a mixed state included. A model
    # already in eval mode is left alone (net.eval()/net.train() cost ~5 ms per pass on 30 blocks).
    training = {m for m in net.modules() if m.training}
    was_training = net.training
    handles = []
    try:
        for module, kind, fn in hooks:
            register = module.register_forward_pre_hook if kind == "pre" else module.register_forward_hook
            handles.append(register(fn, with_kwargs=True))
        if training:
            net.eval()
        # no autograd graph: it would hold every layer's attention until the pass ends (GBs on long prompts)
        with capture, torch.no_grad():
            yield
    finally:
        for h in handles:
            h.remove()
        if training:
            net.train(was_training)
            for m in net.modules():
                m.training = m in training
