/** The routes that start at one input token: every edge of the shown graph reachable from its embedding node. */
import type { GraphData } from "./state";

/** Edge indices reachable (following edges source → destination) from the embedding nodes of tokens
 * `token`..`last` (one token by default; a word's tokens when `last` is its last one). */
export function routesFrom(g: GraphData, token: number, last: number = token): number[] {
  const out: number[][] = Array.from({ length: g.n }, () => []);
  for (let i = 0; i < g.e; i++) out[g.edgeSrc[i]]?.push(i);
  const seen = new Uint8Array(g.n);
  const stack: number[] = [];
  for (let n = 0; n < g.n; n++) {
    if (g.nodeKind[n] === "embedding" && g.nodeToken[n] >= token && g.nodeToken[n] <= last) {
      seen[n] = 1;
      stack.push(n);
    }
  }
  const edges: number[] = [];
  while (stack.length) {
    for (const i of out[stack.pop()!]) {
      edges.push(i);
      const d = g.edgeDst[i];
      if (!seen[d]) {
        seen[d] = 1;
        stack.push(d);
      }
    }
  }
  return edges.sort((a, b) => a - b);
}
