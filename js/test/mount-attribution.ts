// Mounts the attribution pane alone on a fake model: 6 tokens, target 4, the given `attribution` trait.
import widget from "../index";
import { FakeModel } from "../dev/fake-model";
import { makeState } from "../dev/fake-data";

export function mountAttribution(tokens: string[], attribution: unknown): { model: FakeModel; el: HTMLElement } {
  const st = makeState({ L: 4, H: 3, T: 6, K: 4 });
  delete st._dense;
  st.panes = ["attribution"];
  st.tokens = tokens;
  st.target = 4;
  st.attribution = attribution;
  const model = new FakeModel(st);
  const el = document.createElement("div");
  document.body.appendChild(el);
  widget.render({ model, el } as any);
  return { model, el };
}
