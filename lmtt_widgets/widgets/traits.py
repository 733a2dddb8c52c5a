"""Traits typed by the wire protocol: they check what Python sets and carry their own serialiser.

``Typed(protocol.TRAIT["graph"])`` refuses a value that drifted from the protocol (a renamed field, a float64
array, mismatched dimensions) with a TraitError naming the field, turns numpy / torch arrays into wire array dicts,
and sends them as binary buffers (``to_json``). Who may write a trait is the protocol's ``writer``: the widget
refuses browser updates to Python-only traits (``explorer.py``).
"""

from __future__ import annotations

import traitlets as t

from .codec import wire_safe
from .protocol import ProtocolError, Trait, check


def to_json(value, _widget):
    """What goes on the wire: array dicts keep their bytes (ipywidgets sends them as buffers); every string is
    made UTF-8-safe (a lone surrogate in a token would make the kernel's strict JSON packer fail)."""
    return wire_safe(value)


class Typed(t.TraitType):
    """A trait whose values follow one protocol trait's schema."""

    def __init__(self, spec: Trait, default_value=t.Undefined, **kwargs):
        self.spec = spec
        if default_value is t.Undefined:
            default_value = None if getattr(spec.schema, "nullable", False) else {}
        allow_none = getattr(spec.schema, "nullable", False)
        super().__init__(default_value=default_value, allow_none=allow_none, **kwargs)
        self.info_text = f"the protocol's {spec.name!r}"
        self.tag(sync=True, to_json=to_json, protocol=spec.name)

    def validate(self, obj, value):
        if value is None and self.allow_none:
            return None
        try:
            return check(self.spec.schema, value, self.spec.name)
        except ProtocolError as exc:
            raise t.TraitError(str(exc)) from None
