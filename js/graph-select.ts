/** Which drawn edge a selection names. */
import type { GraphData } from "./state";
import type { Selection } from "./types";

/** Index of the attention edge an `edge` selection names, -1 when none is drawn. */
export function findEdge(g: GraphData, s: Selection): number {
  if (!s || s.kind !== "edge") return -1;
  for (let i = 0; i < g.e; i++) {
    if (g.edgeKind[i] !== "attention") continue;
    const d = g.edgeDst[i];
    const src = g.edgeSrc[i];
    if (g.nodeLayer[d] === s.layer && g.nodeToken[d] === s.token && g.nodeToken[src] === s.source) return i;
  }
  return -1;
}
