/**
 * Lazy `details` results: the `details` trait first, else a `{type:"details", id, key}` message to the kernel.
 * 20 s timeout -> error state (retry re-sends). Listeners are told on every state change.
 *
 * Requests are coalesced so the latest selection wins: a key asked for is queued and sent after the current event
 * (all panes drawing one selection share the flush); every change of `selection` starts a new generation, and
 * queued keys no pane asked for since are dropped unsent. While a request of an older generation is still in flight
 * nothing new is sent: the kernel answers in order, so sending more would only queue work ahead of the latest
 * selection. A burst of clicks thus costs the kernel at most one stale request, and a reply for a superseded key is
 * dropped, not decoded. A key asked for explicitly (`request`: Retry, Check) is never superseded.
 */
import { decodeTree } from "./codec";
import type { WidgetModel } from "./types";

export const DETAILS_TIMEOUT_MS = 20_000;

export type DetailState =
  | { status: "loading"; key: string }
  | { status: "ok"; key: string; result: any }
  | { status: "error"; key: string; error: string };

let seq = 0;

interface Pending {
  key: string;
  timer: ReturnType<typeof setTimeout>;
}

export class DetailsClient {
  private entries = new Map<string, DetailState>();
  /** keys waiting to be sent */
  private queued = new Set<string>();
  private pending = new Map<string, Pending>();
  /** generation that last asked for each key */
  private wanted = new Map<string, number>();
  /** keys requested explicitly: current whatever the selection */
  private pinned = new Set<string>();
  /** per-key timeouts of explicit requests */
  private timeouts = new Map<string, number>();
  /** ids whose replies are ignored (forget) */
  private dropped = new Set<string>();
  private gen = 0;
  private flushTimer: ReturnType<typeof setTimeout> | null = null;
  private listeners = new Set<(key: string) => void>();
  private traitCache = new WeakMap<object, any>();
  private disposed = false;
  private onMsg = (msg: any, buffers?: unknown[]) => this.handleMessage(msg, buffers);
  private onTrait = () => {
    for (const k of [...this.entries.keys()]) if (this.fromTrait(k) !== undefined) this.entries.delete(k);
    this.emit("*");
  };
  private onSelection = () => {
    this.gen++;
  };

  constructor(private model: WidgetModel, private timeoutMs = DETAILS_TIMEOUT_MS) {
    model.on("msg:custom", this.onMsg);
    model.on("change:details", this.onTrait);
    // registered before any pane's listener, so the generation moves before the panes ask for the new keys
    model.on("change:selection", this.onSelection);
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

  /** Current state of `key`; queues a fetch when unknown (unless `fetch` is false). */
  get(key: string, fetch = true): DetailState | null {
    const t = this.fromTrait(key);
    if (t !== undefined) return { status: "ok", key, result: t };
    const e = this.entries.get(key);
    if (e) {
      if (e.status === "loading") this.wanted.set(key, this.gen);
      return e;
    }
    if (!fetch) return null;
    this.enqueue(key);
    return this.entries.get(key) ?? null;
  }

  /**
   * (Re)send the request for `key` (Retry, Check), flushed now; `timeoutMs` for work known to be long (exact
   * patching runs the model). An explicit request is kept whatever the selection does next.
   */
  request(key: string, timeoutMs = this.timeoutMs) {
    if (this.disposed) return;
    this.pinned.add(key);
    this.timeouts.set(key, timeoutMs);
    for (const [id, p] of this.pending) {
      if (p.key !== key) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      this.dropped.add(id);
    }
    this.enqueue(key);
    this.flush();
  }

  /** Drop every cached result whose key starts with `prefix` (results computed for settings that changed). */
  forget(prefix: string) {
    let any = false;
    for (const k of [...this.entries.keys()]) {
      if (!k.startsWith(prefix)) continue;
      this.entries.delete(k);
      this.queued.delete(k);
      this.pinned.delete(k);
      any = true;
    }
    for (const [id, p] of this.pending) {
      if (!p.key.startsWith(prefix)) continue;
      clearTimeout(p.timer);
      this.pending.delete(id);
      this.dropped.add(id); // its late reply answers settings that no longer hold: ignored
    }
    if (any) this.emit("*");
    this.flush();
  }

  /** Keys sent and not answered yet (tests, benchmarks). */
  inFlight(): string[] {
    return [...this.pending.values()].map((p) => p.key);
  }

  private isCurrent(key: string): boolean {
    return this.pinned.has(key) || this.wanted.get(key) === this.gen;
  }

  private enqueue(key: string) {
    if (this.disposed) return;
    this.wanted.set(key, this.gen);
    this.entries.set(key, { status: "loading", key });
    if (![...this.pending.values()].some((p) => p.key === key)) this.queued.add(key);
    if (this.flushTimer === null) this.flushTimer = setTimeout(() => this.flush(), 0);
    this.emit(key);
  }

  private flush() {
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    if (this.disposed) return;
    let dropped = false;
    for (const key of [...this.queued]) {
      if (this.isCurrent(key)) continue;
      this.queued.delete(key);
      this.entries.delete(key);
      dropped = true;
    }
    if (dropped) this.emit("*"); // a pane still showing one of them asks again, now current
    for (const p of this.pending.values()) if (!this.isCurrent(p.key)) return; // resumed by its reply or timeout
    for (const key of [...this.queued]) {
      this.queued.delete(key);
      this.send(key);
    }
  }

  private send(key: string) {
    const id = `d${++seq}-${Date.now().toString(36)}`;
    const ms = this.timeouts.get(key) ?? this.timeoutMs;
    const timer = setTimeout(() => this.onTimeout(id, ms), ms);
    this.pending.set(id, { key, timer });
    try {
      this.model.send({ type: "details", id, key });
    } catch (err) {
      clearTimeout(timer);
      this.pending.delete(id);
      this.entries.set(key, { status: "error", key, error: `Could not send the request: ${String(err)}` });
      this.emit(key);
    }
  }

  private onTimeout(id: string, ms: number) {
    const p = this.pending.get(id);
    if (!p) return;
    this.pending.delete(id);
    if (this.isCurrent(p.key)) {
      this.entries.set(p.key, {
        status: "error",
        key: p.key,
        error: `No answer from the kernel after ${Math.round(ms / 1000)} s (is the kernel running?)`,
      });
    } else {
      this.entries.delete(p.key);
    }
    this.emit(p.key);
    this.flush();
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
    } else if (this.entries.get(key)?.status === "ok") {
      return; // unsolicited or stale: accept only if we know nothing better
    }
    if (p && !this.isCurrent(key)) {
      // superseded while in flight: not decoded, and a pane that still wants it asks again
      this.entries.delete(key);
    } else if (msg.ok) {
      try {
        this.entries.set(key, { status: "ok", key, result: decodeTree(msg.result, buffers ?? []) });
      } catch (err) {
        this.entries.set(key, { status: "error", key, error: `Bad reply: ${String(err)}` });
      }
    } else {
      this.entries.set(key, { status: "error", key, error: String(msg.error ?? "unknown error") });
    }
    this.emit(key);
    this.flush();
  }

  dispose() {
    this.disposed = true;
    if (this.flushTimer !== null) clearTimeout(this.flushTimer);
    this.flushTimer = null;
    this.queued.clear();
    for (const p of this.pending.values()) clearTimeout(p.timer);
    this.pending.clear();
    this.listeners.clear();
    this.model.off("msg:custom", this.onMsg);
    this.model.off("change:details", this.onTrait);
    this.model.off("change:selection", this.onSelection);
  }
}
