/**
 * How far the report's stored attention maps draw from the exact colours: for each count of steps of the square-root
 * scale (lmtt_widgets/report.py PATTERN_LEVELS), the CIEDE2000 difference between the pane's colour of a value and
 * of its stored step (js/panes/common.ts drawMatrix: heatColor(sqrt(v / max))), over a grid of values, light and
 * dark theme. About 1 is the usual threshold of a visible difference.
 *
 *   npx esbuild js/dev/color-steps.ts --bundle --platform=node --log-level=warning | node
 */
import { heatColor, type RGB } from "../color";

function lab([r, g, b]: RGB): [number, number, number] {
  const lin = (c: number) => ((c /= 255) <= 0.04045 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4);
  const [R, G, B] = [lin(r), lin(g), lin(b)];
  const xyz = [
    (0.4124 * R + 0.3576 * G + 0.1805 * B) / 0.95047,
    0.2126 * R + 0.7152 * G + 0.0722 * B,
    (0.0193 * R + 0.1192 * G + 0.9505 * B) / 1.08883,
  ];
  const f = xyz.map((t) => (t > (6 / 29) ** 3 ? Math.cbrt(t) : t / (3 * (6 / 29) ** 2) + 4 / 29));
  return [116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])];
}

/** CIEDE2000 (Sharma, Wu and Dalal's formulation). */
function deltaE00(x: [number, number, number], y: [number, number, number]): number {
  const rad = Math.PI / 180;
  const [L1, a1, b1] = x;
  const [L2, a2, b2] = y;
  const C7 = (((Math.hypot(a1, b1) + Math.hypot(a2, b2)) / 2) ** 7);
  const G = 0.5 * (1 - Math.sqrt(C7 / (C7 + 25 ** 7)));
  const [p1, p2] = [(1 + G) * a1, (1 + G) * a2];
  const [c1, c2] = [Math.hypot(p1, b1), Math.hypot(p2, b2)];
  const hue = (b: number, a: number) => ((Math.atan2(b, a) / rad) + 360) % 360;
  const [h1, h2] = [hue(b1, p1), hue(b2, p2)];
  let dh = h2 - h1;
  if (c1 * c2 === 0) dh = 0;
  else if (dh > 180) dh -= 360;
  else if (dh < -180) dh += 360;
  const dH = 2 * Math.sqrt(c1 * c2) * Math.sin((dh / 2) * rad);
  const Lm = (L1 + L2) / 2;
  const Cm = (c1 + c2) / 2;
  let hm = h1 + h2;
  if (c1 * c2 !== 0) hm = Math.abs(h1 - h2) > 180 ? (hm + 360) / 2 : hm / 2;
  const T = 1 - 0.17 * Math.cos((hm - 30) * rad) + 0.24 * Math.cos(2 * hm * rad) + 0.32 * Math.cos((3 * hm + 6) * rad)
    - 0.2 * Math.cos((4 * hm - 63) * rad);
  const SL = 1 + (0.015 * (Lm - 50) ** 2) / Math.sqrt(20 + (Lm - 50) ** 2);
  const SC = 1 + 0.045 * Cm;
  const SH = 1 + 0.015 * Cm * T;
  const RT = -Math.sin(2 * 30 * Math.exp(-(((hm - 275) / 25) ** 2)) * rad) * 2 * Math.sqrt(Cm ** 7 / (Cm ** 7 + 25 ** 7));
  const [l, c, hh] = [(L2 - L1) / SL, (c2 - c1) / SC, dH / SH];
  return Math.sqrt(l * l + c * c + hh * hh + RT * c * hh);
}

const GRID = 20001;
console.log("steps | light: max  p99 | dark: max  p99");
for (const steps of [255, 235, 215, 181, 152, 127, 90, 63, 45]) {
  const row: string[] = [];
  for (const dark of [false, true]) {
    const d: number[] = [];
    for (let i = 0; i < GRID; i++) {
      const s = i / (GRID - 1); // the value's place on the square-root scale
      d.push(deltaE00(lab(heatColor(s, dark)), lab(heatColor(Math.round(s * steps) / steps, dark))));
    }
    d.sort((a, b) => a - b);
    row.push(`${d[d.length - 1].toFixed(2)} ${d[Math.floor(0.99 * (d.length - 1))].toFixed(2)}`);
  }
  console.log(`${String(steps).padStart(5)} | ${row.join(" | ")}`);
}
