// The web page in headless Chromium (Debian's, driven by playwright-core):
// the dashboard lists both demo nodes as alive with their placement, the
// chat panel streams an answer, and the routing heatmap fills in. A
// screenshot goes to $MC_SCREENSHOT (default: dashboard.png here).
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-quic",
    "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1440, height: 1000 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(String(e)));
  await page.goto(process.env.MC_URL + "/");
  for (const node of ["demo-1", "demo-2"]) {
    const row = page.locator(`#nodes tbody tr[data-node="${node}"]`);
    await row.waitFor({ timeout: 15000 });
    assert.match(await row.innerText(), /alive/);
  }
  assert.match(await page.locator("#status").innerText(), /2 nodes alive/);
  // The placement grid: 4 layers x 8 experts, each cell held by a node.
  assert.equal(await page.locator("#placement .cell:not(.head)").count(), 32);
  // A chat message and its streamed answer.
  await page.fill("#input", "Tell me about the cluster.");
  await page.click("#send");
  await page.locator(".msg.note").waitFor({ timeout: 30000 });
  const answer = await page.locator(".msg.assistant").first().innerText();
  assert.ok(answer.length > 0, "an answer was streamed");
  assert.match(await page.locator(".msg.note").innerText(), /tokens/);
  // The heatmap counts the rows the answer routed.
  await page.waitForFunction(() => [...document.querySelectorAll("#heat .cell")].some((c) => /%/.test(c.textContent)),
    null, { timeout: 5000 });
  await page.screenshot({ path: process.env.MC_SCREENSHOT || new URL("dashboard.png", import.meta.url).pathname, fullPage: true });
  assert.deepEqual(errors, []);
  console.log(`dashboard: 2 nodes alive, 32 placement cells, answer of ${answer.length} characters, screenshot taken`);
} finally {
  await browser.close();
}
