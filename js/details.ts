/**
 * Lazy `details` results: the `details` trait first, else a `{type:"details", id, key}` message to the kernel.
 * 20 s timeout -> error state (retry re-sends). Listeners are told on every state change.
 */
import { decodeTree } from "./codec";
import type { WidgetModel } from "./types";

export const DETAILS_TIMEOUT_MS = 20_000;

export type DetailState =
  | { status: "loading"; key: string }
  | { status: "ok"; key: string; result: any }
  | { status: "error"; key: string; error: string };

let seq = 0;

export class DetailsClient {
  private entries = new Map<string, DetailState>();
  private pending = new Map<string, { key: string; timer: ReturnType<typeof setTimeout> }>();
  private listeners = new Set<(key: string) => void>();
  private traitCache = new WeakMap<object, any>();
  private disposed = false;
  private dropped = new Set<string>();
  private onMsg = (msg: any, buffers?: unknown[]) => this.handleMessage(msg, buffers);
  private onTrait = () => {
    for (const k of [...this.entries.keys()]) if (this.fromTrait(k) !== undefined) this.entries.delete(k);
    this.emit("*");
  };

  constructor(private model: WidgetModel, private timeoutMs = DETAILS_TIMEOUT_MS) {
    model.on("msg:custom", this.onMsg);
    model.on("change:details", this.onTrait);
  }

  subscribe(fn: (key: string) => void): () => void {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }

  private emit(key: string) {
    for (const fn of [...this.listeners]) {
      try {
        fn(key);
      } catch (e) {
        console.error("lmtt-widgets:", e);
      }
    }
  }

  private fromTrait(key: string): any {
    const d = this.model.get("details");
    if (!d || typeof d !== "object" || !(key in d)) return undefined;
    const raw = (d as Record<string, unknown>)[key];
    if (raw && typeof raw === "object") {
      if (this.traitCache.has(raw)) return this.traitCache.get(raw);
      const v = decodeTree(raw);
      this.traitCache.set(raw, v);
      return v;
    }
    return raw;
  }

  /** False in a static report (`static` trait): nothing can compute a missing key, so no Retry. */
  canRetry(): boolean {
    return this.model.get("static") !== true;
  }

  /** Current state of `key`; starts a fetch when unknown (unless `fetch` is false). */
  get(key: string, fetch = true): DetailState | null {
    const t = this.fromTrait(key);
    if (t !== undefined) return { status: "ok", key, result: t };
    const e = this.entries.get(key);
    if (e) return e;
    if (!fetch) return null;
    this.request(key);
    return this.entries.get(key) ?? null;
  }

  /** (Re)send the request for `key`; `timeoutMs` for work known to be long (exact patching runs the model). */
  request(key: string, timeoutMs = this.timeoutMs) {
    if (this.disposed) return;
    for (const [id, p] of this.pending) {
      if (p.key === key) {
        clearTimeout(p.timer);
        this.pending.delete(id);
      }
    }
    const id = `d${++seq}-${Date.now().toString(36)}`;
    this.entries.set(key, { status: "loading", key });
    const timer = setTimeout(() => {
      if (!this.pending.has(id)) return;
      this.pending.delete(id);
      this.entries.set(key, {
        status: "error",
        key,
        error: `No answer from the kernel after ${Math.round(timeoutMs / 1000)} s (is the kernel running?)`,
      });
      this.emit(key);
    }, timeoutMs);
    this.pending.set(id, { key, timer });
    try {
      this.model.send({ type: "details", id, key });
    } catch (err) {
      clearTimeout(timer);
      this.pending.delete(id);
      this.entries.set(key, { status: "error", key, error: `Could not send the request: ${String(err)}` });
    }
    this.emit(key);
  }

  /** Drop every cached result whose key starts with `prefix` (results computed for settings that changed). */
  forget(prefix: string) {
    let any = false;
    for (const k of [...this.entries.keys()]) {
      if (!k.startsWith(prefix)) continue;
      this.entries.delete(k);
      any = true;
    }
    for (const [id, p] of this.pending) {
      if (!p.key.startsWith(prefix)) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      this.dropped.add(id); // its late reply answers settings that no longer hold: ignored
    }
    if (any) this.emit("*");
  }

  private handleMessage(msg: any, buffers?: unknown[]) {
    if (!msg || typeof msg !== "object" || msg.type !== "details") return;
    if (this.dropped.delete(msg.id)) return;
    const p = this.pending.get(msg.id);
    const key: string = p?.key ?? msg.key;
    if (typeof key !== "string") return;
    if (p) {
      clearTimeout(p.timer);
      this.pending.delete(msg.id);
    } else if (this.entries.get(key)?.status !== "loading") {
      // unsolicited or stale: accept only if we know nothing better
      if (this.entries.get(key)?.status === "ok") return;
    }
    if (msg.ok) {
      try {
        this.entries.set(key, { status: "ok", key, result: decodeTree(msg.result, buffers ?? []) });
      } catch (err) {
        this.entries.set(key, { status: "error", key, error: `Bad reply: ${String(err)}` });
      }
    } else {
      this.entries.set(key, { status: "error", key, error: String(msg.error ?? "unknown error") });
    }
    this.emit(key);
  }

  dispose() {
    this.disposed = true;
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.listeners.clear();
    this.model.off("msg:custom", this.onMsg);
    this.model.off("change:details", this.onTrait);
  }
}
