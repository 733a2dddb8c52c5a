/** Display helpers for model-derived strings. Output is plain text: always put it in via textContent. */

/**
 * Characters that change how the text *around* them is laid out: bidi embeddings, overrides, isolates and marks
 * (a U+202E inside a token reverses the rest of a tooltip: spoofing), and the line/paragraph separators. A token
 * is shown with these as visible escapes, so it can never reorder or break the text it is embedded in.
 */
const INVISIBLE_LAYOUT = /[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]/g;

/** A surrogate pair, or half of one with no other half (not a character: shown as U+FFFD, as the kernel does). */
const SURROGATES = /[\ud800-\udbff][\udc00-\udfff]|[\ud800-\udfff]/g;

function codePointEscape(c: string): string {
  return `⟨U+${c.charCodeAt(0).toString(16).toUpperCase().padStart(4, "0")}⟩`;
}

/**
 * Make whitespace in a token visible: spaces -> "␣", newline -> "↵", tab -> "⇥", Ġ/▁ -> "␣", Ċ -> "↵"; other
 * control characters, bidi controls and line separators -> visible escapes; a lone surrogate -> U+FFFD.
 * Every place a token becomes text (labels, tooltips, titles, options, SVG export) goes through here.
 */
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
  return s.replace(INVISIBLE_LAYOUT, codePointEscape).replace(SURROGATES, (c) => (c.length === 2 ? c : "\ufffd"));
}

/** One displayed unit: a visible escape made by displayToken, or one code point. */
const UNIT = /⟨U\+[0-9A-F]{4}⟩|[\s\S]/gu;

/** Shorten for tight labels, keeping it a valid string (no surrogate split) and never cutting an escape in half. */
export function truncate(s: string, max: number): string {
  const units = s.match(UNIT) ?? [];
  const width = (u: string) => (u.length > 2 ? u.length : 1);
  if (units.reduce((n, u) => n + width(u), 0) <= max) return s;
  let out = units[0] ?? "";
  let used = width(out);
  for (const u of units.slice(1)) {
    if (used + width(u) > max - 1) break;
    out += u;
    used += width(u);
  }
  return out + "…";
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
