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
  /** the inked pixels of each cell (index shape * NODE_BINS + bin), for stampCell */
  sprites: Sprite[];
}

/** A cell's pixels that are not transparent: offsets in the cell, RGBA as one 32-bit word, and alpha. */
interface Sprite {
  dx: Int16Array;
  dy: Int16Array;
  rgba: Uint32Array;
  /** the same RGBA as bytes */
  bytes: Uint8Array;
  alpha: Uint8Array;
  /** how many of the pixels (the first ones) are opaque */
  opaque: number;
  /** dy * width + dx for an image `width` px wide (the last one asked for) */
  lin: Int32Array;
  width: number;
}

export function cellSprites(pixels: Uint8ClampedArray, cell: number): Sprite[] {
  const AW = cell * NODE_BINS;
  const words = new Uint32Array(pixels.buffer, pixels.byteOffset, pixels.length >> 2);
  const out: Sprite[] = [];
  for (let shape = 0; shape < 2; shape++) {
    for (let bin = 0; bin < NODE_BINS; bin++) {
      const idx: number[] = [];
      // opaque pixels first: they are copied without looking at what lies under them
      for (const opaque of [true, false]) {
        for (let j = 0; j < cell; j++) {
          for (let i = 0; i < cell; i++) {
            const k = (shape * cell + j) * AW + bin * cell + i;
            const a = pixels[k * 4 + 3];
            if (a && (a === 255) === opaque) idx.push(j, i, k);
          }
        }
      }
      const n = idx.length / 3;
      const rgba = new Uint32Array(n);
      const sp = { dx: new Int16Array(n), dy: new Int16Array(n), rgba, bytes: new Uint8Array(rgba.buffer), alpha: new Uint8Array(n), opaque: 0, lin: new Int32Array(n), width: -1 };
      for (let q = 0; q < n; q++) {
        sp.dy[q] = idx[3 * q];
        sp.dx[q] = idx[3 * q + 1];
        sp.rgba[q] = words[idx[3 * q + 2]];
        sp.alpha[q] = pixels[idx[3 * q + 2] * 4 + 3];
        if (sp.alpha[q] === 255) sp.opaque++;
      }
      out.push(sp);
    }
  }
  return out;
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
  cached = { canvas, pixels, cell, key, sprites: cellSprites(pixels, cell) };
  return cached;
}

/**
 * Composite one atlas cell over `dst` (W × H RGBA, not premultiplied) with its top-left corner at (x, y) device
 * px: source-over, clipped to the image. Done in script because thousands of drawImage calls each pay a fixed
 * cost in the canvas that dwarfs copying a 7 × 7 stamp.
 */
export function stampCell(dst: Uint8ClampedArray, W: number, H: number, atlas: NodeAtlas, bin: number, shape: 0 | 1, x: number, y: number, words?: Uint32Array) {
  const sp = atlas.sprites[shape * NODE_BINS + bin];
  const d32 = words ?? new Uint32Array(dst.buffer, dst.byteOffset, dst.length >> 2);
  if (x >= 0 && y >= 0 && x + atlas.cell <= W && y + atlas.cell <= H) stampInside(dst, d32, W, sp, y * W + x);
  else stampClipped(dst, d32, W, H, sp, x, y);
}

/**
 * The usual case, a stamp wholly inside: every pixel at a precomputed offset from the stamp's corner, the opaque
 * ones and those over nothing (a word of 0: the image starts cleared) copied as whole words. Thousands of stamps a
 * τ change: this loop is the nodes' cost.
 */
function stampInside(dst: Uint8ClampedArray, d32: Uint32Array, W: number, sp: Sprite, base: number) {
  if (sp.width !== W) {
    for (let k = 0; k < sp.lin.length; k++) sp.lin[k] = sp.dy[k] * W + sp.dx[k];
    sp.width = W;
  }
  const lin = sp.lin, rgba = sp.rgba, n = lin.length;
  let q = 0;
  for (; q < sp.opaque; q++) d32[base + lin[q]] = rgba[q];
  for (; q < n; q++) {
    const p = base + lin[q];
    if (d32[p] === 0) d32[p] = rgba[q];
    else blendOver(dst, d32, sp, q, p);
  }
}

/** A stamp hanging over an edge of the image: only its pixels inside. */
function stampClipped(dst: Uint8ClampedArray, d32: Uint32Array, W: number, H: number, sp: Sprite, x: number, y: number) {
  for (let q = 0; q < sp.alpha.length; q++) {
    const px = x + sp.dx[q], py = y + sp.dy[q];
    if (px < 0 || py < 0 || px >= W || py >= H) continue;
    const p = py * W + px;
    if (sp.alpha[q] === 255 || d32[p] === 0) d32[p] = sp.rgba[q];
    else blendOver(dst, d32, sp, q, p);
  }
}

/** Source-over of the sprite's pixel q onto pixel p of `dst`, not premultiplied (rare: where two stamps overlap). */
function blendOver(dst: Uint8ClampedArray, d32: Uint32Array, sp: Sprite, q: number, p: number) {
  const di = p * 4;
  const sa = sp.alpha[q];
  const da = dst[di + 3];
  if (sa === 255 || da === 0) {
    d32[p] = sp.rgba[q];
    return;
  }
  const si = q * 4;
  const a = sa / 255;
  const b = (da / 255) * (1 - a);
  const oa = a + b;
  dst[di] = (sp.bytes[si] * a + dst[di] * b) / oa;
  dst[di + 1] = (sp.bytes[si + 1] * a + dst[di + 1] * b) / oa;
  dst[di + 2] = (sp.bytes[si + 2] * a + dst[di + 2] * b) / oa;
  dst[di + 3] = oa * 255;
}
