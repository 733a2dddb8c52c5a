/** A 2D context that records the calls made on it (happy-dom has no canvas), and the light theme the painters take:
 * shared by the edge painter's and the progressive drawing's tests. */

export const lightTheme = { dark: false, bg: "#ffffff", fg: "#1f1f1f", muted: "#6b6b6b", grid: "#e3e3e3", accent: "#d9480f", residual: "#9aa0a6", font: "sans-serif" };

/** Every method call goes to ``calls`` as [name, ...args]; property sets too, as [`=name`, value], when ``setters``. */
export function recordingContext(calls: [string, ...unknown[]][] = [], { setters = true } = {}) {
  const state: Record<string, unknown> = {};
  const ctx = new Proxy(state, {
    get(_t, name: string) {
      if (name in state) return state[name];
      return (...args: unknown[]) => calls.push([name, ...args]);
    },
    set(_t, name: string, value) {
      state[name] = value;
      if (setters) calls.push([`=${name}`, value]);
      return true;
    },
  });
  return { ctx: ctx as unknown as CanvasRenderingContext2D, calls };
}
