/**
 * The τ (threshold) slider's scale: a ladder of round values, 10 per decade (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8),
 * from TAU_MIN to TAU_MAX. One arrow press is one rung (about ×1.25), a Page key three rungs (about ×2), Home/End
 * the ends, so every key press shows a different graph and a value Python accepts as typed.
 */
import { TAU_MAX, TAU_MIN } from "./protocol.gen";

export { TAU_MAX, TAU_MIN }; // the protocol's slider range (Python declares it: widgets/protocol)
const MANTISSAS = [1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8];
/** Rungs per Page key: three rungs double τ (1 -> 2, 1.2 -> 2.5, 1.5 -> 3 ...). */
export const TAU_PAGE = 3;

export const TAU_LADDER: readonly number[] = (() => {
  const out: number[] = [];
  for (let e = -3; e <= 0; e++) {
    for (const m of MANTISSAS) {
      const v = Number((m * 10 ** e).toPrecision(3));
      if (v >= TAU_MIN - 1e-12 && v <= TAU_MAX + 1e-12) out.push(v);
    }
  }
  return out;
})();

/** Slider position (rung index) nearest to `tau` on a log scale; values off the ladder clamp to its ends. */
export function tauToSlider(tau: number): number {
  if (!(tau > 0)) return 0;
  let best = 0;
  let bd = Infinity;
  TAU_LADDER.forEach((v, i) => {
    const d = Math.abs(Math.log(v / tau));
    if (d < bd) {
      bd = d;
      best = i;
    }
  });
  return best;
}

export function sliderToTau(i: number): number {
  const k = Math.max(0, Math.min(TAU_LADDER.length - 1, Math.round(Number(i) || 0)));
  return TAU_LADDER[k];
}

/**
 * τ after a key on the slider (ArrowUp/Right raise it, ArrowDown/Left lower it, PageUp/PageDown by TAU_PAGE rungs,
 * Home = the lowest τ = the largest graph, End = the highest); null for other keys. A τ between rungs (set from
 * Python) moves to the next rung in the key's direction, never back to where it was.
 */
export function stepTau(tau: number, key: string): number | null {
  const n = TAU_LADDER.length;
  if (key === "Home") return TAU_LADDER[0];
  if (key === "End") return TAU_LADDER[n - 1];
  const steps: Record<string, number> = { ArrowUp: 1, ArrowRight: 1, ArrowDown: -1, ArrowLeft: -1, PageUp: TAU_PAGE, PageDown: -TAU_PAGE };
  const delta = steps[key];
  if (delta === undefined) return null;
  let i = tauToSlider(tau);
  // off the ladder: the rung just past tau in the key's direction is the first step
  if (delta > 0 && TAU_LADDER[i] > tau * (1 + 1e-9)) i -= 1;
  if (delta < 0 && TAU_LADDER[i] < tau * (1 - 1e-9)) i += 1;
  return TAU_LADDER[Math.max(0, Math.min(n - 1, i + delta))];
}
