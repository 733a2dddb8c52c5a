"""TypeScript generated from the protocol (``js/protocol.gen.ts``): the front end's types and constants."""

from __future__ import annotations

import json

from . import (
    BROWSER_WRITABLE, CHECK_PREFIX, DETAIL_KEYS, DETAIL_RESULTS, DTYPES, ENUMS, HEAD_FLOOR, MAX_KEY_LENGTH, PYTHON_ONLY, ROW_OFFSET,
    SELECTABLE_NODE_KINDS, SELECTION_FIELDS, SELECTION_OPTIONAL, STRUCTS, TAU_MAX, TAU_MIN, THRESHOLD_DEFAULT, TRAITS, Array, MapOf,
    Struct, Value,
)

HEADER = ("// Generated from lmtt_widgets/widgets/protocol by `python -m lmtt_widgets.widgets.protocol --write`.\n"
          "// Do not edit: change the Python protocol and regenerate (tests/test_protocol.py fails while stale).\n")


def _js(value) -> str:
    return json.dumps(value, ensure_ascii=False)


def type_of(schema) -> str:
    """The TypeScript type of a schema (structs by name)."""
    if isinstance(schema, Array):
        t = f'WireArray<"{schema.dtype}">'
    elif isinstance(schema, Value):
        t = schema.ts
    elif isinstance(schema, MapOf):
        t = f"Record<string, {type_of(schema.value)}>"
    elif isinstance(schema, Struct):
        t = f"Partial<{schema.name}>" if schema.empty_ok else schema.name
    else:
        raise TypeError(schema)
    return f"{t} | null" if getattr(schema, "nullable", False) and not t.endswith("| null") else t


def _doc(text: str, indent: str = "") -> list[str]:
    return [f"{indent}/** {text.replace('*/', '*∕')} */"] if text else []


def _field_doc(f) -> str:
    shape = f"{f.spelled()}. " if isinstance(f, Array) else ""
    return (shape + (f.doc or "")).strip()


def _struct(s: Struct) -> list[str]:
    base = s.base
    lines = _doc(s.doc) + [f"export interface {s.name}{f' extends {base.name}' if base else ''} {{"]
    for name, f in s.fields.items():
        if base is not None and name in base.fields:
            continue
        lines += _doc(_field_doc(f), "  ")
        lines.append(f"  {name}{'?' if f.optional else ''}: {type_of(f)};")
    return lines + ["}", ""]


def _array_specs() -> list[str]:
    """Every struct's array fields (dtype, named dims), for checking decoded payloads."""
    lines = ["export const ARRAY_FIELDS = {"]
    for s in STRUCTS:
        arrays = {k: f for k, f in s.fields.items() if isinstance(f, Array)}
        if arrays:
            lines.append(f"  {s.name}: {{")  # (structs without arrays are left out)
            for k, f in arrays.items():
                lines.append(f"    {k}: {{ dtype: {_js(f.dtype)}, dims: {_js(list(f.dims))}, optional: "
                             f"{_js(f.optional or f.nullable)} }},")
            lines.append("  },")
    return lines + ["} as const;", ""]


def _selection() -> list[str]:
    lines = [f"export const SELECTION_FIELDS = {_js({k: list(v) for k, v in SELECTION_FIELDS.items()})} as const;",
             "export type SelectionKind = keyof typeof SELECTION_FIELDS;", "export type Selection ="]
    for kind, fields in SELECTION_FIELDS.items():
        parts = [f'kind: "{kind}"'] + [f"{f}: {'SelectableNodeKind' if f == 'node_kind' else 'number'}"
                                       for f in fields] + [f"{f}?: number" for f in SELECTION_OPTIONAL.get(kind, ())]
        lines.append(f"  | {{ {'; '.join(parts)} }}")
    return lines + ["  | null;", ""]


def _traits() -> list[str]:
    lines = ["/** Every synced trait (and the report-only `graph_variants`) by name: what `model.get` returns. */",
             "export interface Traits {"]
    for tr in TRAITS:
        lines += _doc(f"{'' if tr.writer == 'both' else tr.writer + ' only: '}{tr.doc}", "  ")
        optional = "?" if tr.writer == "report" else ""
        lines.append(f"  {tr.name}{optional}: {type_of(tr.schema)};")
    return lines + ["}", ""]


def _trait_shapes() -> list[str]:
    """Where each trait's arrays are described: a struct of ARRAY_FIELDS, a map of them, or one array."""
    lines = ["/** The arrays of each trait: `struct` (ARRAY_FIELDS entry), `mapOf` (values of that struct) or `array`. */",
             "export const TRAIT_ARRAYS = {"]
    for tr in TRAITS:
        sch = tr.schema
        if isinstance(sch, Struct) and any(isinstance(f, Array) for f in sch.fields.values()):
            lines.append(f"  {tr.name}: {{ struct: {_js(sch.name)} }},")
        elif isinstance(sch, MapOf) and isinstance(sch.value, Struct):
            lines.append(f"  {tr.name}: {{ mapOf: {_js(sch.value.name)} }},")
        elif isinstance(sch, Array):
            lines.append(f"  {tr.name}: {{ array: {{ dtype: {_js(sch.dtype)}, dims: {_js(list(sch.dims))}, "
                         "optional: true } },")
    return lines + ["} as const;", ""]


def typescript() -> str:
    out = [HEADER]
    for name, (const, values) in ENUMS.items():
        out += [f"export const {const} = {_js(list(values))} as const;",
                f"export type {name} = (typeof {const})[number];"]
    assert set(SELECTABLE_NODE_KINDS) <= set(ENUMS["NodeKindName"][1])
    out += ["", "// ranges", f"export const THRESHOLD_DEFAULT = {THRESHOLD_DEFAULT};",
            f"/** τ below this is refused in head granularity. */\nexport const HEAD_FLOOR = {HEAD_FLOOR};",
            f"/** What the τ slider offers. */\nexport const TAU_MIN = {TAU_MIN};", f"export const TAU_MAX = {TAU_MAX};",
            "", "/** Residual row of a node: row = 2 * layer + ROW_OFFSET[kind] (embeddings have layer -1). */",
            f"export const ROW_OFFSET: Readonly<Record<NodeKindName, number>> = {_js(ROW_OFFSET)};", ""]
    out += _selection()
    out += ['/** `details` keys: "<kind>:<field>:..." with integer fields, or CHECK_PREFIX + a component id. */',
            f"export const DETAIL_KEYS = {_js({k: list(v) for k, v in DETAIL_KEYS.items()})} as const;",
            "export type DetailKind = keyof typeof DETAIL_KEYS;",
            f"export const CHECK_PREFIX = {_js(CHECK_PREFIX)};", f"export const MAX_KEY_LENGTH = {MAX_KEY_LENGTH};", ""]
    out += [f"export type DType = {' | '.join(_js(d) for d in DTYPES)};",
            "/** An array on the wire: C order; `data` a DataView in a trait, a buffer index in a message. */",
            "export interface WireArray<D extends DType = DType> {", "  dtype: D;", "  shape: number[];",
            "  data: unknown;", "}", ""]
    for s in STRUCTS:
        out += _struct(s)
    out += [f"export type DetailResult = {' | '.join(s.name for s in DETAIL_RESULTS.values())} | "
            "Record<string, unknown>;", ""]
    out += _traits()
    out += ["/** Traits only Python writes: the kernel refuses (and reverts) a browser update to them. */",
            f"export const PYTHON_ONLY = {_js(list(PYTHON_ONLY))} as const;",
            "/** Traits the browser may set (a user action); Python validates every value. */",
            f"export const BROWSER_WRITABLE = {_js(list(BROWSER_WRITABLE))} as const;",
            "export type BrowserWritable = (typeof BROWSER_WRITABLE)[number];", ""]
    out += _array_specs()
    out += _trait_shapes()
    return "\n".join(out)
