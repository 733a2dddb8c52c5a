/**
 * Keyboard handling shared by the panes: keys pressed inside the widget stay inside it (JupyterLab / Notebook 7
 * command-mode shortcuts never see them), index stepping for lists, selects and grids, roving focus in row lists,
 * and focus kept across a list's re-render.
 */

/** Lumino skips every key binding whose event target carries this attribute (see CommandRegistry.matchKeyBinding). */
export const SUPPRESS_SHORTCUTS = "data-lm-suppress-shortcuts";

type KeyLike = Pick<KeyboardEvent, "key" | "ctrlKey" | "metaKey" | "altKey">;

/**
 * True for the keys the widget's controls consume: plain or shifted keys (arrows, Home/End, Page keys, Enter,
 * Space, Escape, letters, digits). Tab moves focus and combinations with Ctrl/Meta/Alt (Ctrl+S, Ctrl+Enter...) are
 * the host's, so they pass.
 */
export function widgetOwnsKey(ev: KeyLike): boolean {
  return !ev.ctrlKey && !ev.metaKey && !ev.altKey && ev.key !== "Tab";
}

// Roots currently guarded; one window listener serves them all.
const guarded = new Set<HTMLElement>();

/**
 * Window capture-phase listener: runs before any document listener, so before Lumino in Notebook 7, which listens
 * on the document in the capture phase (JupyterLab 4 listens in the bubble phase). It only marks or unmarks the
 * event's target; it never stops the event, so the widget's own handlers still run.
 */
function markTarget(ev: KeyboardEvent) {
  const t = ev.target;
  if (!(t instanceof Element)) return;
  for (const root of guarded) {
    if (!root.contains(t)) continue;
    if (widgetOwnsKey(ev)) t.setAttribute(SUPPRESS_SHORTCUTS, "");
    else t.removeAttribute(SUPPRESS_SHORTCUTS);
    return;
  }
}

/** Keep the keys the widget owns away from the host's shortcuts while focus is inside `root`. */
export function guardKeys(root: HTMLElement, signal: AbortSignal): void {
  // bubble-phase hosts (JupyterLab 4, anything listening on the document or the notebook node)
  const stop = (ev: KeyboardEvent) => {
    if (widgetOwnsKey(ev)) ev.stopPropagation();
  };
  root.addEventListener("keydown", stop, { signal });
  root.addEventListener("keyup", stop, { signal });
  // capture-phase hosts (Notebook 7): they hear the key before the root does
  if (typeof window === "undefined") return;
  if (!guarded.size) window.addEventListener("keydown", markTarget, true);
  guarded.add(root);
  signal.addEventListener("abort", () => {
    guarded.delete(root);
    if (!guarded.size) window.removeEventListener("keydown", markTarget, true);
  });
}

/**
 * New index after a navigation key in a list of `n` items (arrows step 1, Page keys step `page`, Home/End jump);
 * null for other keys. `prev`/`next` name the arrow keys of the list's direction.
 */
export function stepIndex(i: number, key: string, n: number, page = 10, vertical = true): number | null {
  if (n <= 0) return null;
  const [prev, next] = vertical ? ["ArrowUp", "ArrowDown"] : ["ArrowLeft", "ArrowRight"];
  let j: number;
  if (key === prev) j = i - 1;
  else if (key === next) j = i + 1;
  else if (key === "PageUp") j = i - page;
  else if (key === "PageDown") j = i + page;
  else if (key === "Home") j = 0;
  else if (key === "End") j = n - 1;
  else return null;
  return Math.max(0, Math.min(n - 1, j));
}

/** A `<select>` with arrows (both axes), Home/End and Page keys; calls `onPick(index)` when the choice moves. */
export function selectKeys(sel: HTMLSelectElement, onPick: (index: number) => void, signal: AbortSignal, page = 5): void {
  sel.addEventListener(
    "keydown",
    (ev) => {
      const key = ev.key === "ArrowLeft" ? "ArrowUp" : ev.key === "ArrowRight" ? "ArrowDown" : ev.key;
      const j = stepIndex(sel.selectedIndex, key, sel.options.length, page);
      if (j === null || ev.altKey) return; // Alt+ArrowDown opens the list natively
      ev.preventDefault();
      if (j === sel.selectedIndex) return;
      sel.selectedIndex = j;
      onPick(j);
    },
    { signal },
  );
}

/** Cell of a rows × cols grid after a key: arrows, Home/End (start/end of the row), PageUp/PageDown (`page` rows). */
export function moveCell(
  c: { row: number; col: number },
  key: string,
  rows: number,
  cols: number,
  page = 5,
): { row: number; col: number } | null {
  let { row, col } = c;
  switch (key) {
    case "ArrowLeft": col--; break;
    case "ArrowRight": col++; break;
    case "ArrowUp": row--; break;
    case "ArrowDown": row++; break;
    case "PageUp": row -= page; break;
    case "PageDown": row += page; break;
    case "Home": col = 0; break;
    case "End": col = cols - 1; break;
    default: return null;
  }
  return { row: Math.max(0, Math.min(rows - 1, row)), col: Math.max(0, Math.min(cols - 1, col)) };
}

/**
 * Roving focus in a list of focusable rows (`rowSelector`): arrows, Page keys and Home/End move the focus, Enter
 * and Space call `onPick(row)`.
 */
export function listKeys(list: HTMLElement, rowSelector: string, onPick: (row: HTMLElement) => void, signal: AbortSignal): void {
  list.addEventListener(
    "keydown",
    (ev) => {
      const row = (ev.target as HTMLElement).closest?.(rowSelector) as HTMLElement | null;
      if (!row || !list.contains(row)) return;
      if (ev.key === "Enter" || ev.key === " ") {
        ev.preventDefault();
        onPick(row);
        return;
      }
      const rows = Array.from(list.querySelectorAll<HTMLElement>(rowSelector));
      const j = stepIndex(rows.indexOf(row), ev.key, rows.length);
      if (j === null) return;
      ev.preventDefault();
      rows[j].focus({ preventScroll: false });
    },
    { signal },
  );
}

/**
 * Re-render `list` through `render()` and, when focus was on one of its rows, put it back on the new row with the
 * same identity (`idAttr`), so Enter on a row that re-renders the list keeps the keyboard where it was.
 */
export function rerenderKeepingFocus(list: HTMLElement, idAttr: string, render: () => void): void {
  const active = typeof document !== "undefined" ? (document.activeElement as HTMLElement | null) : null;
  const id = active && list.contains(active) ? active.closest?.(`[${idAttr}]`)?.getAttribute(idAttr) : null;
  render();
  if (id == null) return;
  for (const el of Array.from(list.querySelectorAll<HTMLElement>(`[${idAttr}]`))) {
    if (el.getAttribute(idAttr) === id) {
      el.focus({ preventScroll: true });
      return;
    }
  }
}
