"""Whether a model's weights (or its forward hooks: :func:`hook_state`) changed since a trace saw them.

An Explanation reads some weights live long after its pass: the unembedding and the final norm (vocabulary
projections, logit rows of a long prompt), each layer's output projections (logit attribution, head outputs,
neuron importances) and, for a long prompt's slim records, whole blocks (tracing/rebuild.py). A weight changed in
between (an optimiser step, an edit made to test a hypothesis, a cast) would mix two models in one answer without
a sign. So each reader checks first and refuses with :class:`StaleTraceError`.

What is seen (of parameters, buffers such as a rotary embedding's ``inv_freq``, and norms' epsilons): a change
made in place through the parameter (``with torch.no_grad(): w.mul_(2)``, ``w[:, 3] = 0``,
``load_state_dict``: PyTorch's version counter of the tensor), a parameter replaced by another (``m.weight =
Parameter(...)``, ``model.half()``) and new storage behind it (``w.data = ...``). What is not: an in-place change
through ``w.data`` (it bypasses the version counter, which is how PyTorch itself tells in-place changes apart).
Parameters on the meta device when the trace ends (offloaded: accelerate swaps them in for each pass) are not
followed.
"""

from __future__ import annotations

import weakref

import torch
from torch.nn.modules.module import _global_forward_hooks, _global_forward_pre_hooks

from ..errors import StaleTraceError  # noqa: F401 - raised here; importable from here too


# Numbers a module reads in its forward besides its tensors: a norm's epsilon (LayerNorm's eps, the RMSNorms'
# variance_epsilon or eps). Changed after the trace, they change the model as a weight would.
SETTINGS = ("eps", "variance_epsilon", "epsilon")


class ParameterVersions:
    """The parameters and buffers of a module (a model, a block) and its norms' epsilons as a trace saw them, each
    checked by name prefix."""

    __slots__ = ("seen", "settings")

    def __init__(self, module: torch.nn.Module, prefix: str = ""):
        """``prefix``: the module's path in the model, put before each name (errors name full paths)."""
        # (name, owner module, slot, attribute, the tensor, its version, its storage): the owner's attribute holding
        # another tensor is a replacement; a bumped version or other storage, a change behind the same one. Buffers
        # count too (a rotary embedding's inv_freq). A tied parameter is followed under each of its names, so a
        # check of either part sees it. Weak references: a replaced parameter is not kept alive by an explanation
        # (it is then "changed" anyway).
        full = (lambda name: f"{prefix}.{name}") if prefix else (lambda name: name)
        self.seen = [
            (full(name), weakref.ref(owner), slot, attr, weakref.ref(p), p._version, p.data_ptr())
            for name, owner, slot, attr, p in _tensors(module)
            if not p.is_meta
        ]
        self.settings = [(full(name), weakref.ref(owner), attr, value) for name, owner, attr, value in _settings(module)]

    def changed(self, prefixes: tuple[str, ...] = ("",)) -> list[str]:
        """Names (starting with one of ``prefixes``, each ending with a dot or empty) of what changed."""
        tensors = [name for name, owner, slot, attr, p, version, ptr in self.seen
                   if name.startswith(prefixes) and not _same(owner(), slot, attr, p(), version, ptr)]
        return tensors + [name for name, owner, attr, value in self.settings
                          if name.startswith(prefixes) and getattr(owner(), attr, None) != value]

    def check(self, where: str, prefixes: tuple[str, ...] = ("",)) -> None:
        """Raise StaleTraceError naming what changed, if anything did; ``where`` names the part ("layer 3")."""
        changed = self.changed(prefixes)
        if changed:
            more = " and others" if len(changed) > 3 else ""
            raise StaleTraceError(
                f"{where}: {', '.join(changed[:3])}{more} changed since the trace, so this explanation cannot "
                "read it any more (it would mix two models). Explain the prompt again with the model as it is now."
            )


def check_block(versions: ParameterVersions, blocks_path: str, layer: int) -> None:
    """Refuse (StaleTraceError) when a parameter of block ``layer`` (under ``blocks_path``) changed since
    ``versions`` were taken."""
    versions.check(f"layer {layer}", (f"{blocks_path}.{layer}.",))


def _same(owner, slot: str, attr: str, p, version: int, ptr: int) -> bool:
    return owner is not None and p is not None and getattr(owner, slot).get(attr) is p and p._version == version \
        and p.data_ptr() == ptr


def _tensors(module: torch.nn.Module):
    """(name, owning module, "_parameters" or "_buffers", attribute, tensor) of every parameter and buffer of
    ``module`` under every module holding it."""
    for mod_name, mod in module.named_modules(remove_duplicate=False):
        for slot in ("_parameters", "_buffers"):
            for attr, p in getattr(mod, slot).items():
                if p is not None:
                    yield (f"{mod_name}.{attr}" if mod_name else attr), mod, slot, attr, p


def _settings(module: torch.nn.Module):
    """(name, owning module, attribute, value) of every norm epsilon (a float in SETTINGS) of ``module``."""
    for mod_name, mod in module.named_modules():
        for attr in SETTINGS:
            value = vars(mod).get(attr)
            if isinstance(value, float):
                yield (f"{mod_name}.{attr}" if mod_name else attr), mod, attr, value


def hook_state(net: torch.nn.Module) -> tuple:
    """Which forward hooks are on the model (per module, by handle id), and the global ones: what a rerun of the
    model runs besides its own code."""
    per_module = tuple((name, tuple(m._forward_pre_hooks), tuple(m._forward_hooks))
                       for name, m in net.named_modules() if m._forward_pre_hooks or m._forward_hooks)
    return per_module, tuple(_global_forward_pre_hooks), tuple(_global_forward_hooks)
