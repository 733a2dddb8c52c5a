/** In-memory stand-in for an anywidget model (tests and the dev harness). */
import type { Handler, WidgetModel } from "../types";

export class FakeModel implements WidgetModel {
  state: Record<string, any>;
  handlers = new Map<string, Set<Handler>>();
  saves = 0;
  sent: { content: any; buffers?: unknown[] }[] = [];
  onSend: ((content: any, buffers?: unknown[]) => void) | null = null;
  onSave: ((changed: string[]) => void) | null = null;
  private dirty = new Set<string>();

  constructor(state: Record<string, any> = {}) {
    this.state = { ...state };
  }
  get(name: string) {
    return this.state[name];
  }
  set(name: string, value: unknown) {
    const old = this.state[name];
    this.state[name] = value;
    this.dirty.add(name);
    if (old !== value && JSON.stringify(old) !== JSON.stringify(value)) this.emit(`change:${name}`, this, value);
  }
  on(event: string, cb: Handler) {
    let s = this.handlers.get(event);
    if (!s) this.handlers.set(event, (s = new Set()));
    s.add(cb);
  }
  off(event?: string | null, cb?: Handler | null) {
    if (!event) {
      this.handlers.clear();
      return;
    }
    if (!cb) this.handlers.delete(event);
    else this.handlers.get(event)?.delete(cb);
  }
  save_changes() {
    this.saves++;
    const changed = [...this.dirty];
    this.dirty.clear();
    this.onSave?.(changed);
  }
  send(content: unknown, _callbacks?: unknown, buffers?: unknown[]) {
    this.sent.push({ content, buffers });
    this.onSend?.(content, buffers);
  }
  emit(event: string, ...args: unknown[]) {
    for (const cb of [...(this.handlers.get(event) ?? [])]) cb(...args);
  }
  /** Python-side update: set without marking dirty. */
  pySet(name: string, value: unknown) {
    this.set(name, value);
    this.dirty.delete(name);
  }
  listenerCount(): number {
    let n = 0;
    for (const s of this.handlers.values()) n += s.size;
    return n;
  }
}
