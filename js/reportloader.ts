/**
 * The offline report's loader, inlined by lmtt_widgets/report.py as the page's one module script. The bundle (the
 * widget's CSS and script) travels gzip-compressed in the state's 7-bit text form; this reads it with the same
 * `textBytes` and `gunzip` that read the state (so the two can never drift), puts the CSS into the page's style
 * element and starts the widget from its blob URL.
 * Bundled on its own (`npm run build`): only those two come along.
 */
import { gunzip, textBytes } from "./reportcodec";

const u32 = (a: Uint8Array, i: number) => a[i] + a[i + 1] * 256 + a[i + 2] * 65536 + a[i + 3] * 16777216;

async function load(): Promise<void> {
  const bundle = await gunzip(textBytes(document.getElementById("lmtt-bundle")?.textContent ?? ""));
  const css = u32(bundle, 0);
  document.querySelector("style")?.append(new TextDecoder().decode(bundle.subarray(4, 4 + css)));
  const url = URL.createObjectURL(new Blob([bundle.subarray(4 + css) as BlobPart], { type: "text/javascript;charset=utf-8" }));
  const mod = await import(url);
  await mod.renderReport(document.getElementById("lmtt-report"), document.getElementById("lmtt-state")?.textContent ?? "");
}

// A report that cannot be read (a damaged file, a table referring to a column it lacks) says so in the page, as
// text: otherwise the page stays blank and only the console knows why.
load().catch((err: unknown) => {
  const el = document.getElementById("lmtt-report");
  if (el) el.textContent = `This report could not be shown: ${err instanceof Error ? err.message : String(err)}`;
  throw err;
});
