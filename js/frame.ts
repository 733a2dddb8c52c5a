/**
 * At most one run per animation frame, plus one trailing run: the first call in a frame runs at once (a single
 * click redraws immediately), later calls in the same frame are folded into one run at the next frame. A burst of
 * selections (clicks, held keys) then redraws a pane about once per frame instead of once per event, and the page
 * keeps drawing frames.
 */
export function frameThrottle(fn: () => void, signal: AbortSignal): () => void {
  const raf: (f: () => void) => number =
    typeof requestAnimationFrame === "function" ? (f) => requestAnimationFrame(f) : (f) => setTimeout(f, 16) as unknown as number;
  let handle = 0;
  let ranThisFrame = false;
  let pending = false;
  const run = () => {
    ranThisFrame = true;
    if (!handle) handle = raf(endFrame);
    fn();
  };
  const endFrame = () => {
    handle = 0;
    ranThisFrame = false;
    if (pending && !signal.aborted) {
      pending = false;
      run();
    }
  };
  signal.addEventListener("abort", () => {
    if (handle) {
      if (typeof cancelAnimationFrame === "function") cancelAnimationFrame(handle);
      clearTimeout(handle);
    }
    handle = 0;
  });
  return () => {
    if (signal.aborted) return;
    if (ranThisFrame) pending = true;
    else run();
  };
}
