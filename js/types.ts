/** The anywidget model as the front end uses it, typed by the protocol (js/protocol.gen.ts, generated from Python). */
import type { BrowserWritable, Meta as WireMeta, Status as WireStatus, Traits } from "./protocol.gen";

export type { NodeKindName, EdgeKindName, SelectableNodeKind, Selection, Traits } from "./protocol.gen";

export type Handler = (...args: any[]) => void;

/**
 * anywidget's model with typed traits: `get("graph")` is a `Partial<Graph>` (Python sends `{}` before a trait is
 * computed), `set` takes only values of the trait's type. Values come from another process: decoders still check.
 */
export interface AnyModel<T> {
  get<K extends keyof T & string>(name: K): T[K];
  set<K extends keyof T & string>(name: K, value: T[K]): void;
  on(event: string, cb: Handler): void;
  off(event?: string | null, cb?: Handler | null): void;
  save_changes(): void;
  send(content: unknown, callbacks?: unknown, buffers?: unknown[]): void;
}

export type WidgetModel = AnyModel<Traits>;

/** `meta` as the panes read it: any field may be missing (before the first explanation, or in older states). */
export type Meta = Partial<WireMeta>;

export type Status = Pick<WireStatus, "state"> & Partial<WireStatus>;

/** What one user action may set: only browser-writable traits; enum values as plain text (Python checks them). */
export type Changes = { [K in BrowserWritable]?: Traits[K] extends string ? string : Traits[K] };

/** Everything a pane needs; one per render() call. */
export interface PaneContext {
  model: WidgetModel;
  root: HTMLElement;
  details: import("./details").DetailsClient;
  /** Register a cleanup callback run when the view is destroyed. */
  onCleanup(fn: () => void): void;
  /** model.on with automatic model.off on cleanup. */
  listen(event: string, cb: Handler): void;
  /** One user action: set all keys then exactly one save_changes(). */
  commit(changes: Changes): void;
}

export interface Pane {
  el: HTMLElement;
  destroy?(): void;
}
