/** Minimal shape of the anywidget model used by the front end (AFM). */
export type Handler = (...args: any[]) => void;

export interface WidgetModel {
  get(name: string): any;
  set(name: string, value: unknown): void;
  on(event: string, cb: Handler): void;
  off(event?: string | null, cb?: Handler | null): void;
  save_changes(): void;
  send(content: unknown, callbacks?: unknown, buffers?: unknown[]): void;
}

export type NodeKindName = "embedding" | "after_attention" | "mlp" | "after_mlp";

export type Selection =
  | { kind: "node"; layer: number; token: number; node_kind: "embedding" | "after_attention" | "after_mlp" }
  | { kind: "edge"; layer: number; source: number; token: number }
  | { kind: "mlp"; layer: number; token: number }
  | { kind: "head"; layer: number; head: number; token: number }
  | { kind: "neuron"; layer: number; neuron: number; token: number }
  | null;

export interface Meta {
  model?: string;
  n_layers?: number;
  n_heads?: number;
  n_tokens?: number;
  topology?: string;
  node_kinds?: string[];
  edge_kinds?: string[];
  prediction?: { token: string; prob: number; top?: [string, number][] };
}

export interface Status {
  state: "idle" | "running" | "error";
  message?: string;
  progress?: number;
}

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
  commit(changes: Record<string, unknown>): void;
}

export interface Pane {
  el: HTMLElement;
  destroy?(): void;
}
