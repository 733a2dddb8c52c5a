/** Colour-blind-safe sequential scale (viridis, polynomial fit) and theme colour helpers. */

export type RGB = [number, number, number];

// Polynomial approximation of matplotlib's viridis (public domain fit by Matt Zucker).
const C0: RGB = [0.2777273272234177, 0.005407344544966578, 0.3340998053353061];
const C1: RGB = [0.1050930431085774, 1.404613529898575, 1.384590162594685];
const C2: RGB = [-0.3308618287255563, 0.214847559468213, 0.09509516302823659];
const C3: RGB = [-4.634230498983486, -5.799100973351585, -19.33244095627987];
const C4: RGB = [6.228269936347081, 14.17993336680509, 56.69055260068105];
const C5: RGB = [4.776384997670288, -13.74514537774601, -65.35303263337234];
const C6: RGB = [-5.435455855934631, 4.645852612178535, 26.3124352495832];

const clamp01 = (x: number) => (!(x > 0) ? 0 : x > 1 ? 1 : x);

/** viridis(t) for t in [0,1] as 0..255 RGB. */
export function viridis(t: number): RGB {
  t = clamp01(Number.isFinite(t) ? t : 0);
  const out: RGB = [0, 0, 0];
  for (let i = 0; i < 3; i++) {
    const v = C0[i] + t * (C1[i] + t * (C2[i] + t * (C3[i] + t * (C4[i] + t * (C5[i] + t * C6[i])))));
    out[i] = Math.round(clamp01(v) * 255);
  }
  return out;
}

/** Relative luminance (sRGB, 0..1). */
export function luminance([r, g, b]: RGB): number {
  const f = (c: number) => {
    c /= 255;
    return c <= 0.03928 ? c / 12.92 : Math.pow((c + 0.055) / 1.055, 2.4);
  };
  return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
}

/**
 * Importance colour: important = high contrast with the background.
 * On a light background the scale runs pale yellow -> dark purple, on a dark one dark purple -> yellow.
 * `t` in [0,1]. The extreme ends are trimmed so low values stay visible.
 */
export function importanceColor(t: number, dark: boolean): RGB {
  t = clamp01(t);
  // light: green (0.78) -> dark purple (0); dark: blue-purple (0.15) -> yellow (1)
  return viridis(dark ? 0.15 + 0.85 * t : 0.78 * (1 - t));
}

/**
 * Heatmap colour (cells, matrices): the full viridis ramp, from the background's end to the foreground's:
 * pale yellow -> dark purple on a light background, dark purple -> yellow on a dark one. `t` in [0,1].
 */
export function heatColor(t: number, dark: boolean): RGB {
  t = clamp01(Number.isFinite(t) ? t : 0);
  const c = viridis(dark ? t : 1 - t);
  // fade the low end toward the page so a mostly-unimportant map reads as quiet, not as a wall of yellow
  const page = dark ? 30 : 255;
  const keep = 0.35 + 0.65 * t;
  return c.map((v) => Math.round(page + (v - page) * keep)) as RGB;
}

// Diverging ends (ColorBrewer RdBu, colour-blind safe): negative = blue, positive = red. On a dark page the
// lighter members of the same scheme keep contrast with the background.
const NEG_LIGHT: RGB = [33, 102, 172];
const POS_LIGHT: RGB = [178, 24, 43];
const NEG_DARK: RGB = [103, 169, 207];
const POS_DARK: RGB = [239, 138, 98];

/**
 * Signed heatmap colour: `t` in [-1, 1] (value / max |value|). 0 is the page itself, so a zero cell reads as
 * nothing; the colour deepens toward blue (t < 0) or red (t > 0) with |t|.
 */
export function divergingColor(t: number, dark: boolean): RGB {
  t = Number.isFinite(t) ? Math.max(-1, Math.min(1, t)) : 0;
  const page: RGB = dark ? [30, 30, 30] : [255, 255, 255];
  if (t === 0) return page;
  const end = t < 0 ? (dark ? NEG_DARK : NEG_LIGHT) : dark ? POS_DARK : POS_LIGHT;
  // a power below 1 keeps mid-size effects readable next to the largest, while the many near-zero heads stay
  // near the page colour so the few that matter stand out
  const k = Math.pow(Math.abs(t), 0.75);
  return page.map((p, i) => Math.round(p + (end[i] - p) * k)) as RGB;
}

/** CSS gradient for the legend of a diverging scale: -max (left) … 0 … +max (right). */
export function divergingGradient(dark: boolean): string {
  const stops = [-1, -0.5, -0.1, 0, 0.1, 0.5, 1].map((t) => rgbString(divergingColor(t, dark)));
  return `linear-gradient(90deg, ${stops.join(", ")})`;
}

/** CSS gradient for the legend of the sequential heat scale: 0 (left) … max (right). */
export function heatGradient(dark: boolean): string {
  const stops = [0, 0.25, 0.5, 0.75, 1].map((t) => rgbString(heatColor(t, dark)));
  return `linear-gradient(90deg, ${stops.join(", ")})`;
}

export function rgbString(c: RGB, alpha = 1): string {
  return alpha >= 1 ? `rgb(${c[0]},${c[1]},${c[2]})` : `rgba(${c[0]},${c[1]},${c[2]},${alpha.toFixed(3)})`;
}

/** Parse `#rgb`, `#rrggbb`, `rgb()`/`rgba()` into RGB; null when unknown. */
export function parseColor(s: string): RGB | null {
  s = s.trim();
  let m = /^#([0-9a-f]{3})$/i.exec(s);
  if (m) return [0, 1, 2].map((i) => parseInt(m![1][i] + m![1][i], 16)) as RGB;
  m = /^#([0-9a-f]{6})([0-9a-f]{2})?$/i.exec(s);
  if (m) return [0, 2, 4].map((i) => parseInt(m![1].slice(i, i + 2), 16)) as RGB;
  m = /^rgba?\(\s*([\d.]+)[\s,]+([\d.]+)[\s,]+([\d.]+)/i.exec(s);
  if (m) return [Number(m[1]), Number(m[2]), Number(m[3])];
  return null;
}

export interface Theme {
  dark: boolean;
  bg: string;
  fg: string;
  muted: string;
  grid: string;
  accent: string;
  residual: string;
  font: string;
}

/** Read theme colours from the computed CSS custom properties of the widget root. */
export function readTheme(el: Element): Theme {
  let cs: CSSStyleDeclaration | null = null;
  try {
    cs = getComputedStyle(el);
  } catch {
    cs = null;
  }
  const v = (name: string, fb: string) => {
    const x = cs?.getPropertyValue(name)?.trim();
    return x ? x : fb;
  };
  const bg = v("--lmtt-bg", "#ffffff");
  const rgb = parseColor(bg);
  const declared = v("--lmtt-dark", "");
  const dark = rgb ? luminance(rgb) < 0.3 : declared === "1";
  return {
    dark,
    bg,
    fg: v("--lmtt-fg", dark ? "#e6e6e6" : "#1f1f1f"),
    muted: v("--lmtt-muted", dark ? "#9a9a9a" : "#6b6b6b"),
    grid: v("--lmtt-grid", dark ? "#3a3a3a" : "#e3e3e3"),
    accent: v("--lmtt-accent", dark ? "#4aa3ff" : "#1565c0"),
    residual: v("--lmtt-residual", dark ? "#8a8a8a" : "#8c8c8c"),
    font: v("--lmtt-font", "system-ui, -apple-system, 'Segoe UI', sans-serif"),
  };
}
