/** Small shared UI pieces: detail loading/error block, T×T matrix canvas, token lists. */
import type { NDArray } from "../codec";
import { heatColor, parseColor, readTheme } from "../color";
import type { DetailsClient, DetailState } from "../details";
import { displayToken, fmt, h, pct, truncate } from "../text";

/**
 * Render loading / error(+retry) states; returns true when `st` is ok and the caller should render the result.
 * While loading, a box that shows a result keeps it in place but hidden (visibility), under the spinner, instead
 * of shrinking to a one-line spinner: the pane keeps its height, so a burst of selections does not make the
 * notebook re-lay out its cells on every frame, and nothing of the previous result stays readable.
 */
export function detailStatus(box: HTMLElement, st: DetailState | null, details: DetailsClient, what: string): boolean {
  const shown = box.classList.contains("lmtt-has-result");
  box.classList.remove("lmtt-has-result", "lmtt-stale");
  box.removeAttribute("aria-busy");
  if (!st) {
    box.replaceChildren();
    return false;
  }
  if (st.status === "loading") {
    box.setAttribute("aria-busy", "true");
    const spinner = h("div", { class: "lmtt-loading", role: "status" }, h("span", { class: "lmtt-spinner" }), `Loading ${what}…`);
    if (shown) {
      box.classList.add("lmtt-has-result", "lmtt-stale");
      box.querySelector(":scope > .lmtt-overlay")?.remove();
      spinner.classList.add("lmtt-overlay");
      box.appendChild(spinner);
    } else box.replaceChildren(spinner);
    return false;
  }
  if (st.status === "ok") box.classList.add("lmtt-has-result");
  if (st.status === "error") {
    const msg = h("span", null, `Could not load ${what}: ${st.error}`);
    if (!details.canRetry()) {
      box.replaceChildren(h("div", { class: "lmtt-detail-error", role: "alert" }, msg));
      return false;
    }
    const retry = h("button", { type: "button", class: "lmtt-btn" }, "Retry");
    retry.addEventListener("click", () => details.request(st.key), { once: true });
    box.replaceChildren(h("div", { class: "lmtt-detail-error", role: "alert" }, msg, retry));
    return false;
  }
  return true;
}

/** Draw a T×T matrix (row = query/destination, col = key/source) into a canvas, one block per cell. */
export function drawMatrix(canvas: HTMLCanvasElement, m: NDArray | null, root: Element, highlightRow = -1, maxPx = 240): void {
  if (!m || m.shape.length !== 2) return;
  const [R, C] = m.shape;
  const cell = Math.max(1, Math.floor(maxPx / Math.max(R, C)));
  const w = C * cell;
  const hh = R * cell;
  canvas.width = w;
  canvas.height = hh;
  // upscale small matrices with CSS (pixelated) so a 128×128 map is still readable
  const k = Math.max(1, Math.min(maxPx / w, maxPx / hh, 4));
  canvas.style.width = `${Math.round(w * k)}px`;
  canvas.style.height = `${Math.round(hh * k)}px`;
  const c = canvas.getContext("2d");
  if (!c) return;
  const theme = readTheme(root);
  let max = 0;
  for (let i = 0; i < m.data.length; i++) {
    const a = Math.abs(m.data[i]);
    if (a > max) max = a;
  }
  max = max || 1;
  const img = c.createImageData(w, hh);
  const bg = parseColor(theme.bg) ?? heatColor(0, theme.dark); // masked (future) cells show the background
  for (let r = 0; r < R; r++) {
    for (let col = 0; col < C; col++) {
      const v = m.data[r * C + col];
      const t = Math.abs(v) / max;
      const rgb = v === 0 ? bg : heatColor(Math.sqrt(t), theme.dark);
      for (let dy = 0; dy < cell; dy++) {
        let o = ((r * cell + dy) * w + col * cell) * 4;
        for (let dx = 0; dx < cell; dx++) {
          img.data[o] = rgb[0];
          img.data[o + 1] = rgb[1];
          img.data[o + 2] = rgb[2];
          img.data[o + 3] = v < 0 ? 150 : 255;
          o += 4;
        }
      }
    }
  }
  c.putImageData(img, 0, 0);
  if (highlightRow >= 0 && highlightRow < R) {
    c.strokeStyle = theme.accent;
    c.lineWidth = 1;
    c.strokeRect(0.5, highlightRow * cell - 0.5, w - 1, cell + 1);
  }
}

export type TokenScore = [string, number, number?];

/** A compact list of tokens with a bar for |score|. */
export function tokenList(title: string, items: unknown, kind: "prob" | "score", cls = ""): HTMLElement {
  const list = h("ol", { class: "lmtt-toklist" });
  const arr = Array.isArray(items) ? (items as unknown[]).filter(Array.isArray) as unknown[][] : [];
  const max = Math.max(1e-12, ...arr.map((x) => Math.abs(Number(x[1]) || 0)));
  for (const it of arr) {
    const tok = String(it[0] ?? "");
    const v = Number(it[1]);
    const bar = h("span", { class: "lmtt-bar" });
    bar.style.width = `${Math.max(1, Math.round((Math.abs(v) / max) * 100))}%`;
    const li = h(
      "li",
      { class: "lmtt-tokrow" },
      h("span", { class: "lmtt-tokname", title: displayToken(tok) }, truncate(displayToken(tok), 24)),
      h("span", { class: "lmtt-barwrap" }, bar),
      h("span", { class: "lmtt-num" }, kind === "prob" ? pct(v) : fmt(v, 2)),
    );
    if (it.length > 2 && it[2] != null && Number.isFinite(Number(it[2]))) li.appendChild(rankChange(Number(it[2])));
    list.appendChild(li);
  }
  if (!arr.length) list.appendChild(h("li", { class: "lmtt-empty" }, "—"));
  return h("div", { class: `lmtt-tokcol ${cls}` }, h("div", { class: "lmtt-subtitle" }, title), list);
}

/** ▲n (moved up n ranks), ▼n, or "·" / "new". */
export function rankChange(d: number): HTMLElement {
  if (d > 0) return h("span", { class: "lmtt-rank up", title: `up ${d} rank${d > 1 ? "s" : ""}` }, `▲${d}`);
  if (d < 0) return h("span", { class: "lmtt-rank down", title: `down ${-d} rank${d < -1 ? "s" : ""}` }, `▼${-d}`);
  return h("span", { class: "lmtt-rank same", title: "same rank" }, "·");
}
