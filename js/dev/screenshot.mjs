// Screenshots of the dev harness in light and dark themes + first-paint timing of the 30×128 graph.
// Usage: npm run screenshot   (builds the bundle and harness first)
import http from "node:http";
import fs from "node:fs";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "../..");
const outDir = path.join(root, "js/dev/out");
fs.mkdirSync(outDir, { recursive: true });
const types = { ".html": "text/html", ".js": "text/javascript", ".css": "text/css", ".png": "image/png" };
const server = http.createServer((req, res) => {
  const p = path.normalize(decodeURIComponent(new URL(req.url, "http://x").pathname)).replace(/^([/\\])+/, "");
  const f = path.join(root, p);
  if (!f.startsWith(root) || !fs.existsSync(f) || fs.statSync(f).isDirectory()) {
    res.writeHead(404).end();
    return;
  }
  res.writeHead(200, { "content-type": types[path.extname(f)] ?? "application/octet-stream" });
  fs.createReadStream(f).pipe(res);
});
await new Promise((r) => server.listen(0, "127.0.0.1", r));
const base = `http://127.0.0.1:${server.address().port}/js/dev/harness.html`;

const browser = await chromium.launch({
  executablePath: "/usr/lib/chromium/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--headless"],
  chromiumSandbox: false,
});
const shots = [
  ["explorer-light", "theme=light&panes=explorer&select=edge", "light"],
  ["explorer-dark", "theme=dark&panes=explorer&select=edge", "dark"],
  ["graph-light", "theme=light&panes=graph&select=node", "light"],
  ["graph-dark-os", "panes=graph&select=mlp", "dark"],
  ["heads-light", "theme=light&panes=heads&select=head", "light"],
  ["heads-dark", "theme=dark&panes=heads&select=head", "dark"],
  ["vocab-neurons-light", "theme=light&panes=vocab,neurons&select=mlp", "light"],
  ["error-running-dark", "theme=dark&panes=prompt,vocab&running=1&error=Selection%20refused:%20%3Cimg%20src=x%3E", "dark"],
  ["small-light", "theme=light&panes=explorer&L=6&H=4&T=12&select=node", "light"],
  ["static-report-light", "theme=light&panes=explorer&static=1&select=mlp", "light"],
];
const errors = [];
for (const [name, query, scheme] of shots) {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, deviceScaleFactor: 1, colorScheme: scheme });
  page.on("pageerror", (e) => errors.push(`${name}: ${e.message}`));
  page.on("console", (m) => m.type() === "error" && errors.push(`${name}: console: ${m.text()}`));
  await page.goto(`${base}?${query}`);
  await page.waitForFunction(() => document.body.dataset.ready === "1" || document.body.dataset.error, null, { timeout: 20000 });
  const err = await page.evaluate(() => document.body.dataset.error);
  if (err) errors.push(`${name}: ${err}`);
  await page.waitForTimeout(700); // details replies (250 ms) + redraw
  if (name === "explorer-light" || name === "explorer-dark") {
    const fp = await page.evaluate(() => window.__lmtt.firstPaint);
    const draw = await page.evaluate(() => document.querySelector(".lmtt-graph")?.dataset.drawMs);
    console.log(`${name}: first paint ${fp.toFixed(1)} ms (last graph draw ${draw} ms)`);
  }
  await page.screenshot({ path: path.join(outDir, `${name}.png`), fullPage: true });
  console.log(`saved js/dev/out/${name}.png`);
  await page.close();
}
// interaction check: hover tooltip + keyboard
{
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 }, colorScheme: "light" });
  page.on("pageerror", (e) => errors.push(`interact: ${e.message}`));
  await page.goto(`${base}?theme=light&panes=graph`);
  await page.waitForFunction(() => document.body.dataset.ready === "1");
  const canvas = page.locator(".lmtt-canvas");
  const box = await canvas.boundingBox();
  // hover the top node at the target column
  await page.focus(".lmtt-canvas-wrap");
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("ArrowDown");
  await page.keyboard.press("Enter");
  await page.mouse.move(box.x + box.width - 30, box.y + 20);
  await page.waitForTimeout(100);
  const sel = await page.evaluate(() => JSON.stringify(window.__lmtt.model.get("selection")));
  console.log("after keyboard: selection", sel);
  await page.mouse.wheel(0, -400);
  await page.waitForTimeout(200);
  await page.screenshot({ path: path.join(outDir, "graph-zoomed.png") });
  console.log("saved js/dev/out/graph-zoomed.png");
  // measure redraw time for 20 redraws
  const t = await page.evaluate(() => {
    const g = document.querySelector(".lmtt-graph");
    const api = g.__lmtt;
    const t0 = performance.now();
    for (let i = 0; i < 20; i++) api.draw();
    return (performance.now() - t0) / 20;
  });
  console.log(`graph redraw (30×128): ${t.toFixed(1)} ms average`);
  await page.close();
}
await browser.close();
server.close();
if (errors.length) {
  console.error("ERRORS:\n" + errors.join("\n"));
  process.exitCode = 1;
}
