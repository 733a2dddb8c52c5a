/**
 * Follow the host's theme while a pane is open. Canvases read their colours at draw time (readTheme), so a theme
 * switch needs a redraw: JupyterLab sets `data-jp-theme-light` / `data-jp-theme-name` on <body> once the new theme's
 * CSS is in, VS Code swaps a class on <body>, Colab an attribute on <html>, an offline report follows the OS
 * (`prefers-color-scheme`).
 *
 * JupyterLab also hides its whole shell for one frame while it switches (ThemeManager: host.hide(), then
 * host.show() in the next animation frame), so a pane measured at that moment has no size: the redraw waits until
 * the pane is laid out again instead of drawing at a made-up width.
 */

const BODY_ATTRS = ["class", "data-jp-theme-light", "data-jp-theme-name"];
const HTML_ATTRS = ["class", "theme", "data-theme"];

/**
 * True when `el` is in the document and rendered (no display:none ancestor: Lumino hides widgets that way).
 * Without checkVisibility (old browsers, DOM emulations without layout) a connected element counts as laid out.
 */
export function isLaidOut(el: HTMLElement): boolean {
  if (!el.isConnected) return false;
  const check = (el as HTMLElement & { checkVisibility?: () => boolean }).checkVisibility;
  return typeof check === "function" ? check.call(el) : true;
}

/**
 * Run `fn` once `el` is laid out: now if it is, else when a ResizeObserver first sees it with a width.
 * Returns a cancel function.
 */
export function whenLaidOut(el: HTMLElement, fn: () => void): () => void {
  if (isLaidOut(el)) {
    fn();
    return () => {};
  }
  if (typeof ResizeObserver === "undefined") return () => {};
  const ro = new ResizeObserver(() => {
    if (!isLaidOut(el)) return;
    ro.disconnect();
    fn();
  });
  ro.observe(el);
  return () => ro.disconnect();
}

/** Call `redraw` (at most once a frame, once `el` is laid out) whenever the host's theme changes, until `signal` aborts. */
export function watchTheme(el: HTMLElement, redraw: () => void, signal: AbortSignal): void {
  let frame = 0;
  let cancelWait = () => {};
  const raf: (f: () => void) => number =
    typeof requestAnimationFrame === "function" ? (f) => requestAnimationFrame(f) : (f) => setTimeout(f, 16) as unknown as number;
  const onChange = () => {
    if (frame || signal.aborted) return;
    frame = raf(() => {
      frame = 0;
      cancelWait();
      cancelWait = whenLaidOut(el, () => {
        if (!signal.aborted) redraw();
      });
    });
  };
  if (typeof MutationObserver !== "undefined" && typeof document !== "undefined") {
    const mo = new MutationObserver(onChange);
    if (document.body) mo.observe(document.body, { attributes: true, attributeFilter: BODY_ATTRS });
    mo.observe(document.documentElement, { attributes: true, attributeFilter: HTML_ATTRS });
    signal.addEventListener("abort", () => mo.disconnect());
  }
  if (typeof matchMedia === "function") {
    const mq = matchMedia("(prefers-color-scheme: dark)");
    mq.addEventListener?.("change", onChange, { signal });
  }
  signal.addEventListener("abort", () => {
    cancelWait();
    if (frame) {
      if (typeof cancelAnimationFrame === "function") cancelAnimationFrame(frame);
      clearTimeout(frame);
    }
    frame = 0;
  });
}
