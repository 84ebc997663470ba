// CORS in a real browser (headless Chromium, driven by playwright-core): a
// page served by this script on another origin calls the API with fetch
// (JSON and an Authorization header, so the browser sends a preflight).
// From http://localhost:MC_PAGE_PORT, the origin run.sh gave the server's
// --cors-origin, the answers arrive (a chat, a streamed chat, Ollama's
// list); from http://127.0.0.1:MC_PAGE_PORT, the same page on an origin not
// listed, the browser refuses them.
import assert from "node:assert/strict";
import { createServer } from "node:http";
import { chromium } from "playwright-core";

const api = process.env.MC_URL, port = Number(process.env.MC_PAGE_PORT);
assert.ok(port > 0, "run.sh sets MC_PAGE_PORT");
const page = `<!doctype html><meta charset="utf-8"><title>elsewhere</title><script>
const API = ${JSON.stringify(api)};
const headers = { "Content-Type": "application/json", Authorization: "Bearer unused" };
const body = (stream) => JSON.stringify({ messages: [{ role: "user", content: "Hi" }], max_tokens: 4, temperature: 0, stream });
window.chat = async () => (await (await fetch(API + "/v1/chat/completions", { method: "POST", headers, body: body(false) })).json());
window.stream = async () => {
  const r = await fetch(API + "/v1/chat/completions", { method: "POST", headers, body: body(true) });
  return await r.text();
};
window.tags = async () => (await (await fetch(API + "/api/tags", { headers })).json());
window.attempt = async (f) => { try { return { ok: await window[f]() }; } catch (e) { return { error: String(e) }; } };
</script>`;
const server = createServer((req, res) => res.writeHead(200, { "Content-Type": "text/html" }).end(page));
await new Promise((ok) => server.listen(port, ok)); // every local address: localhost and 127.0.0.1

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-quic",
    "--disable-component-update", "--disable-sync"],
});
try {
  const tab = await browser.newPage();
  await tab.goto(`http://localhost:${port}/`);
  const chat = await tab.evaluate(() => window.attempt("chat"));
  assert.ok(chat.ok, `the listed origin is allowed: ${chat.error}`);
  assert.equal(chat.ok.object, "chat.completion");
  const stream = await tab.evaluate(() => window.attempt("stream"));
  assert.ok(stream.ok && stream.ok.includes("data: [DONE]"), `a stream reaches the listed origin: ${stream.error}`);
  const tags = await tab.evaluate(() => window.attempt("tags"));
  assert.equal(tags.ok?.models?.length, 1, `Ollama's routes too: ${tags.error}`);

  await tab.goto(`http://127.0.0.1:${port}/`);
  for (const f of ["chat", "stream", "tags"]) {
    const refused = await tab.evaluate((name) => window.attempt(name), f);
    assert.ok(refused.error && /Failed to fetch/.test(refused.error), `${f} from an origin not listed: ${JSON.stringify(refused)}`);
  }
  console.log(`cors: http://localhost:${port} reads the answers (chat, stream, tags); http://127.0.0.1:${port} is refused`);
} finally {
  await browser.close();
  server.close();
}
