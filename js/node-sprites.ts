/**
 * Node stamps: every node colour bin drawn once as a circle (residual node) and a square (MLP block) on a small
 * atlas canvas, then copied per node into the pixels of the nodes layer. Thousands of anti-aliased arcs (6,636 nodes
 * at τ = 0.005 on 128 tokens of SmolLM2) cost a software-rendered canvas far more than copying their pixels.
 */
import { importanceColor, rgbString, Theme } from "./color";
import { NODE_BINS } from "./graph-layout";

export interface NodeAtlas {
  canvas: HTMLCanvasElement;
  /** the atlas's RGBA pixels (not premultiplied), read once */
  pixels: Uint8ClampedArray;
  /** side of one cell in device px; cell (bin, shape) at x = bin * cell, y = shape * cell (0 circle, 1 square) */
  cell: number;
  key: string;
}

/** Outlines are drawn from this size (px) up, as the path renderer did. */
export const OUTLINE_FROM = 2.5;

let cached: NodeAtlas | null = null;

/** The atlas for node radius r and MLP half-size m (CSS px) at this pixel ratio and theme. */
export function nodeAtlas(r: number, m: number, dpr: number, theme: Theme): NodeAtlas {
  const key = [r, m, dpr, theme.dark, theme.fg].join("|");
  if (cached && cached.key === key) return cached;
  const cell = Math.ceil((2 * Math.max(r, m) + 2) * dpr) + 2;
  const canvas = document.createElement("canvas");
  canvas.width = cell * NODE_BINS;
  canvas.height = cell * 2;
  const c = canvas.getContext("2d");
  if (!c) throw new Error("lmtt-widgets: no 2D canvas context for the node stamps");
  c.setTransform(dpr, 0, 0, dpr, 0, 0);
  c.lineWidth = 0.75;
  c.strokeStyle = theme.fg;
  const mid = cell / 2 / dpr;
  for (let b = 0; b < NODE_BINS; b++) {
    c.fillStyle = rgbString(importanceColor((b + 0.5) / NODE_BINS, theme.dark));
    const x = (b * cell) / dpr + mid;
    c.beginPath();
    c.arc(x, mid, r, 0, Math.PI * 2);
    c.fill();
    if (r >= OUTLINE_FROM) c.stroke();
    c.beginPath();
    c.rect(x - m, cell / dpr + mid - m, 2 * m, 2 * m);
    c.fill();
    if (m >= OUTLINE_FROM) c.stroke();
  }
  const pixels = c.getImageData(0, 0, canvas.width, canvas.height).data;
  cached = { canvas, pixels, cell, key };
  return cached;
}

/**
 * Composite one atlas cell over `dst` (W × H RGBA, not premultiplied) with its top-left corner at (x, y) device
 * px: source-over, clipped to the image. Done in script because thousands of drawImage calls each pay a fixed
 * cost in the canvas that dwarfs copying a 7 × 7 stamp.
 */
export function stampCell(dst: Uint8ClampedArray, W: number, H: number, atlas: NodeAtlas, bin: number, shape: 0 | 1, x: number, y: number) {
  const cell = atlas.cell;
  const AW = cell * NODE_BINS;
  const src = atlas.pixels;
  const sx0 = bin * cell;
  const sy0 = shape * cell;
  for (let j = Math.max(0, -y); j < cell && y + j < H; j++) {
    let si = ((sy0 + j) * AW + sx0 + Math.max(0, -x)) * 4;
    let di = ((y + j) * W + x + Math.max(0, -x)) * 4;
    for (let i = Math.max(0, -x); i < cell && x + i < W; i++, si += 4, di += 4) {
      const sa = src[si + 3];
      if (sa === 0) continue;
      const da = dst[di + 3];
      if (sa === 255 || da === 0) {
        dst[di] = src[si];
        dst[di + 1] = src[si + 1];
        dst[di + 2] = src[si + 2];
        dst[di + 3] = sa === 255 ? 255 : sa;
        continue;
      }
      const a = sa / 255;
      const b = (da / 255) * (1 - a);
      const oa = a + b;
      dst[di] = (src[si] * a + dst[di] * b) / oa;
      dst[di + 1] = (src[si + 1] * a + dst[di + 1] * b) / oa;
      dst[di + 2] = (src[si + 2] * a + dst[di + 2] * b) / oa;
      dst[di + 3] = oa * 255;
    }
  }
}
