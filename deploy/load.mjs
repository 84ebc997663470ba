// Load for moe-coordinator --serve: N streams, each sending streamed chat
// completions back to back, for a duration or a number of rounds; reports
// answers, errors, tokens, aggregate tokens/s, time to first token, and the
// resident memory of given processes over time. Node.js 18+ (fetch), no
// packages.
//
//   node deploy/load.mjs --url http://127.0.0.1:8080 --streams 64 --seconds 600 \
//        [--max-tokens 128] [--rounds N] [--pids 123,456] [--every 30] [--json]
//
// With --rounds every stream sends exactly N requests (all start together:
// the batching curve); with --seconds they go on until the time is up.
import { readFileSync } from "node:fs";

const args = Object.fromEntries(process.argv.slice(2).reduce((a, v, i, all) => {
  if (v.startsWith("--")) a.push([v.slice(2), all[i + 1] && !all[i + 1].startsWith("--") ? all[i + 1] : "1"]);
  return a;
}, []));
const url = (args.url || "http://127.0.0.1:8080") + "/v1/chat/completions";
const streams = Number(args.streams || 8), seconds = Number(args.seconds || 0), rounds = Number(args.rounds || 0);
const maxTokens = Number(args["max-tokens"] || 128), every = Number(args.every || 30);
const pids = (args.pids || "").split(",").filter(Boolean).map(Number);
if (!seconds === !rounds) {
  console.error("give --seconds or --rounds");
  process.exit(2);
}
const topics = ["rivers", "the moon", "bread", "trains", "music", "snow", "bees", "clocks", "ships", "forests"];
const headers = { "Content-Type": "application/json" };
if (args.key) headers.Authorization = "Bearer " + args.key;

function rss(pid) {
  try {
    const m = readFileSync(`/proc/${pid}/status`, "utf8").match(/VmRSS:\s+(\d+) kB/);
    return m ? Number(m[1]) / 1024 : NaN;
  } catch { return NaN; }
}

let answers = 0, errors = 0, tokens = 0;
const ttft = [], errorsSeen = new Map();
const t0 = performance.now();
const deadline = seconds ? t0 + seconds * 1000 : Infinity;

async function one(stream, i) {
  const body = {
    messages: [{ role: "user", content: `Stream ${stream}, request ${i}: tell me about ${topics[(stream + i) % topics.length]}.` }],
    max_tokens: maxTokens, temperature: 0.8, seed: stream * 100003 + i, stream: true,
    stream_options: { include_usage: true },
  };
  const start = performance.now();
  let first = 0, usage = null, done = false;
  const r = await fetch(url, { method: "POST", headers, body: JSON.stringify(body) });
  if (r.status !== 200) throw new Error("HTTP " + r.status);
  const reader = r.body.getReader(), dec = new TextDecoder();
  let buf = "";
  for (;;) {
    const { value, done: end } = await reader.read();
    if (end) break;
    buf += dec.decode(value, { stream: true });
    let at;
    while ((at = buf.indexOf("\n\n")) >= 0) {
      const ev = buf.slice(0, at);
      buf = buf.slice(at + 2);
      if (!ev.startsWith("data: ")) continue;
      if (ev === "data: [DONE]") { done = true; continue; }
      const c = JSON.parse(ev.slice(6));
      if (c.error) throw new Error(c.error.message);
      if (c.usage) usage = c.usage;
      if (!first && c.choices?.[0]?.delta?.content) first = performance.now();
    }
  }
  if (!done || !usage) throw new Error("the stream ended without [DONE] and usage");
  ttft.push((first || performance.now()) - start);
  tokens += usage.completion_tokens;
  answers++;
}

async function worker(stream) {
  for (let i = 0; rounds ? i < rounds : performance.now() < deadline; i++) {
    try {
      await one(stream, i);
    } catch (e) {
      errors++;
      errorsSeen.set(e.message, (errorsSeen.get(e.message) || 0) + 1);
    }
  }
}

const memory = pids.map((pid) => ({ pid, samples: [] }));
const sample = () => {
  const t = (performance.now() - t0) / 1000;
  for (const m of memory) m.samples.push([t, rss(m.pid)]);
  if (!args.json && seconds)
    console.error(`${t.toFixed(0)} s: ${answers} answers, ${errors} errors, ${tokens} tokens; RSS MB ` +
      memory.map((m) => m.samples.at(-1)[1].toFixed(1)).join(" "));
};
sample();
const timer = setInterval(sample, every * 1000);
await Promise.all(Array.from({ length: streams }, (_, s) => worker(s)));
clearInterval(timer);
sample();
const secs = (performance.now() - t0) / 1000;
ttft.sort((a, b) => a - b);
const q = (p) => (ttft.length ? ttft[Math.min(ttft.length - 1, Math.floor(p * ttft.length))] : NaN);
const report = {
  streams, seconds: Number(secs.toFixed(2)), answers, errors, tokens,
  tokens_per_s: Number((tokens / secs).toFixed(2)),
  ttft_p50_ms: Number(q(0.5).toFixed(1)), ttft_p99_ms: Number(q(0.99).toFixed(1)),
  errors_seen: Object.fromEntries(errorsSeen),
  rss_mb: memory.map((m) => ({ pid: m.pid, first: m.samples[0][1], after_warmup: m.samples[Math.min(1, m.samples.length - 1)][1],
    last: m.samples.at(-1)[1], max: Math.max(...m.samples.map((s) => s[1])) })),
};
console.log(args.json ? JSON.stringify(report) : report);
process.exit(errors ? 1 : 0);
