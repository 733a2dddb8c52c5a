/** Selection helpers: keyboard cursor movement, selection <-> grid cursor, equality, detail keys. */
import { DETAIL_KEYS, type DetailKind } from "./protocol.gen";
import type { Selection } from "./types";
import { rowOf, rowToNode } from "./state";

export interface Cursor {
  token: number;
  row: number; // 0 .. 2L
}

export function clampCursor(c: Cursor, T: number, L: number): Cursor {
  return {
    token: Math.max(0, Math.min(T - 1, c.token)),
    row: Math.max(0, Math.min(2 * L, c.row)),
  };
}

/** Move a cursor with an arrow key (Up = towards later layers), PageUp/PageDown five layers, Home/End to the first/last token. Returns null for other keys. */
export function moveCursor(c: Cursor, key: string, T: number, L: number, big = false): Cursor | null {
  const step = big ? 5 : 1;
  switch (key) {
    case "ArrowLeft":
      return clampCursor({ token: c.token - step, row: c.row }, T, L);
    case "ArrowRight":
      return clampCursor({ token: c.token + step, row: c.row }, T, L);
    case "ArrowUp":
      return clampCursor({ token: c.token, row: c.row + step }, T, L);
    case "ArrowDown":
      return clampCursor({ token: c.token, row: c.row - step }, T, L);
    case "PageUp": // five layers up
      return clampCursor({ token: c.token, row: c.row + 10 }, T, L);
    case "PageDown":
      return clampCursor({ token: c.token, row: c.row - 10 }, T, L);
    case "Home":
      return clampCursor({ token: 0, row: c.row }, T, L);
    case "End":
      return clampCursor({ token: T - 1, row: c.row }, T, L);
    default:
      return null;
  }
}

export function cursorToSelection(c: Cursor): Selection {
  const n = rowToNode(c.row);
  return { kind: "node", layer: n.layer, token: c.token, node_kind: n.node_kind };
}

/** Grid cursor matching a selection (null selection -> top row at the target). */
export function selectionToCursor(s: Selection, target: number, L: number): Cursor {
  if (!s) return { token: target, row: 2 * L };
  switch (s.kind) {
    case "node":
      return { token: s.token, row: rowOf(s.node_kind, s.layer) };
    case "edge":
    case "head":
      return { token: s.token, row: 2 * s.layer + 1 };
    case "mlp":
    case "neuron":
      return { token: s.token, row: 2 * s.layer + 2 };
  }
}

export function sameSelection(a: Selection, b: Selection): boolean {
  if (!a || !b) return a === b;
  const ka = Object.keys(a).sort();
  const kb = Object.keys(b).sort();
  if (ka.join() !== kb.join()) return false;
  return ka.every((k) => (a as any)[k] === (b as any)[k]);
}

/** A `details` key from its fields, in the protocol's order (DETAIL_KEYS). */
export function detailKey<K extends DetailKind>(kind: K, fields: Record<(typeof DETAIL_KEYS)[K][number], number>): string {
  const values = (DETAIL_KEYS[kind] as readonly string[]).map((f) => (fields as Record<string, number>)[f]);
  return [kind, ...values].join(":");
}

/** `details` key whose result describes the selection (see protocol), or null. */
export function detailsKey(s: Selection): string | null {
  if (!s) return null;
  switch (s.kind) {
    case "node":
      return detailKey("lens", { row: rowOf(s.node_kind, s.layer), token: s.token });
    case "head":
      return detailKey("head", s);
    case "mlp":
      return detailKey("mlp", s);
    case "neuron":
      return detailKey("neuron", s);
    case "edge":
      return null;
  }
}

export function describeSelection(s: Selection, tokenText: (t: number) => string): string {
  if (!s) return "nothing selected";
  const tk = (t: number) => `${tokenText(t)} (#${t})`;
  switch (s.kind) {
    case "node":
      if (s.node_kind === "embedding" && s.last != null && s.last > s.token) {
        return `the word #${s.token}–#${s.last}, from ${tk(s.token)}`;
      }
      return s.node_kind === "embedding"
        ? `embedding of ${tk(s.token)}`
        : `L${s.layer} ${s.node_kind === "after_attention" ? "after attention" : "after MLP"} at ${tk(s.token)}`;
    case "edge":
      return `attention edge L${s.layer}: ${tk(s.source)} → ${tk(s.token)}`;
    case "mlp":
      return `MLP L${s.layer} at ${tk(s.token)}`;
    case "head":
      return `head L${s.layer}.H${s.head} at ${tk(s.token)}`;
    case "neuron":
      return `neuron L${s.layer}.N${s.neuron} at ${tk(s.token)}`;
  }
}
