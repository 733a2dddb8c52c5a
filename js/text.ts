/** Display helpers for model-derived strings. Output is plain text: always put it in via textContent. */

/** Make whitespace in a token visible: spaces -> "␣", newline -> "↵", tab -> "⇥", Ġ/▁ -> "␣", Ċ -> "↵". */
export function displayToken(tok: unknown): string {
  let s = typeof tok === "string" ? tok : String(tok ?? "");
  if (s.length === 0) return "∅";
  s = s
    .replace(/\r\n/g, "↵")
    .replace(/[\n\r]/g, "↵")
    .replace(/\t/g, "⇥")
    .replace(/[ \u00a0Ġ▁]/g, "␣")
    .replace(/Ċ/g, "↵");
  // other control characters -> visible code point
  s = s.replace(/[\u0000-\u0008\u000b-\u001f\u007f]/g, (c) => `\\x${c.charCodeAt(0).toString(16).padStart(2, "0")}`);
  return s;
}

/** Shorten for tight labels, keeping it a valid string (no surrogate split). */
export function truncate(s: string, max: number): string {
  const chars = Array.from(s);
  return chars.length <= max ? s : chars.slice(0, Math.max(1, max - 1)).join("") + "…";
}

export function fmt(x: number, digits = 3): string {
  if (!Number.isFinite(x)) return String(x);
  const a = Math.abs(x);
  if (a !== 0 && (a < 1e-3 || a >= 1e4)) return x.toExponential(2);
  return x.toFixed(digits);
}

export function pct(x: number): string {
  if (!Number.isFinite(x)) return "–";
  const p = x * 100;
  return p >= 10 ? `${p.toFixed(0)}%` : p >= 1 ? `${p.toFixed(1)}%` : `${p.toFixed(2)}%`;
}

/** Tiny DOM builder: h("div", {class: "x"}, "text", child). Strings become text nodes. */
export function h<K extends keyof HTMLElementTagNameMap>(
  tag: K,
  attrs?: Record<string, string | number | boolean | undefined | null> | null,
  ...children: (Node | string | number | null | undefined | false)[]
): HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === "class") el.className = String(v);
      else el.setAttribute(k, v === true ? "" : String(v));
    }
  }
  for (const c of children) {
    if (c == null || c === false) continue;
    el.appendChild(typeof c === "object" ? c : document.createTextNode(String(c)));
  }
  return el;
}
