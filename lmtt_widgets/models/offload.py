"""Reading the weights of a model dispatched by accelerate (``device_map``, CPU or disk offload, several devices).

accelerate keeps an offloaded module's parameters on the ``meta`` device (shape and dtype, no data) and loads them
onto the module's execution device only around its forward pass, through an ``AlignDevicesHook`` with
``offload=True`` on the module itself or on an ancestor that places its submodules. Weights read outside the pass
are therefore read under :func:`accelerate.utils.align_module_device` on that owner, which loads them exactly as
the forward pass does and puts them back afterwards. A parameter on ``meta`` that no such hook covers has no data
anywhere (e.g. a model built under ``accelerate.init_empty_weights``): that is refused with a clear message.
"""

from __future__ import annotations

import contextlib

import torch

from ..errors import ModelLoadError


def _offload_hook(module: torch.nn.Module):
    """The module's accelerate hook that offloads its weights, or None (a SequentialHook is searched too)."""
    hook = getattr(module, "_hf_hook", None)
    if hook is None:
        return None
    for h in getattr(hook, "hooks", None) or [hook]:
        if type(h).__name__ == "AlignDevicesHook" and getattr(h, "offload", False):
            return h
    return None


def _is_meta(t: torch.Tensor | None) -> bool:
    return isinstance(t, torch.Tensor) and t.device.type == "meta"


class OffloadMap:
    """Which module of a model holds the hook that materialises each offloaded module's weights."""

    def __init__(self, root: torch.nn.Module, *, check: bool = True):
        self.root = root
        self._owner: dict[int, torch.nn.Module] = {}  # id(module) -> module whose hook loads its own tensors
        missing: list[str] = []
        self._walk(root, "", None, missing)
        if missing and check:
            shown = ", ".join(missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
            raise ModelLoadError(
                f"The model's weights are not loaded: {shown} {'is' if len(missing) == 1 else 'are'} on the meta "
                "device (shape only, no data) and no accelerate offload hook will load them. This happens with a "
                "model built under accelerate.init_empty_weights() or from_pretrained(..., device_map='meta'). "
                "Load the weights first, e.g. accelerate.load_checkpoint_and_dispatch(model, checkpoint, "
                "device_map='auto', offload_folder=...) or from_pretrained(path, device_map='auto', "
                "offload_folder=...)."
            )

    def _walk(self, module, prefix, owner, missing):
        hook = _offload_hook(module)
        if hook is not None:
            owner = module if getattr(hook, "place_submodules", False) else owner
            own = module  # the module's own tensors are loaded by its own hook
        else:
            own = owner
        if own is not None:
            self._owner[id(module)] = own
        elif len(missing) < 50:
            for name, t in list(module.named_parameters(recurse=False)) + list(module.named_buffers(recurse=False)):
                if _is_meta(t):
                    missing.append(prefix + name)
        for name, child in module.named_children():
            self._walk(child, prefix + name + ".", owner, missing)

    @property
    def offloaded(self) -> bool:
        return bool(self._owner)

    def is_offloaded(self, module: torch.nn.Module) -> bool:
        return id(module) in self._owner

    @contextlib.contextmanager
    def materialized(self, module: torch.nn.Module):
        """Within the block, ``module``'s own parameters hold data on its execution device."""
        owner = self._owner.get(id(module))
        if owner is None or not any(_is_meta(p) for p in module.parameters(recurse=False)):
            yield module  # not offloaded, or already loaded (inside its owner's forward pass)
            return
        hook = _offload_hook(owner)
        hook.pre_forward(owner)  # what accelerate.utils.align_module_device does, SequentialHook included
        try:
            yield module
        finally:
            hook.post_forward(owner, None)


def input_device(model: torch.nn.Module) -> torch.device:
    """Where the input ids go: the execution device of an offloaded embedding, else its weight's device."""
    emb = model.get_input_embeddings()
    hook = _offload_hook(emb) or getattr(emb, "_hf_hook", None)
    device = getattr(hook, "execution_device", None)
    if device is not None:
        return torch.device(device if not isinstance(device, int) else f"cuda:{device}")
    weight = getattr(emb, "weight", None)
    if isinstance(weight, torch.Tensor) and not _is_meta(weight):
        return weight.device
    for p in model.parameters():
        if not _is_meta(p):
            return p.device
    return torch.device("cpu")
