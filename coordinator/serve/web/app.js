// moe-cluster web page: a chat panel on the OpenAI-compatible API, and a
// cluster dashboard refreshed every second from /v1/cluster. Plain
// JavaScript, no build step; every text from the server or the model goes
// into the page as text (textContent), never as HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const palette = ["#2f6fde", "#e0803a", "#2aa876", "#a05bd6", "#d64571", "#3aa6c4", "#8a8f2e", "#6b5b45"];
const LOCAL = "#7b8794";

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("apikey").value.trim();
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}

$("apikey").value = localStorage.getItem("moe-apikey") || "";
$("apikey").addEventListener("change", () => localStorage.setItem("moe-apikey", $("apikey").value.trim()));

// --- dashboard ---------------------------------------------------------------

function fmtBytes(n) {
  if (n >= 1e9) return (n / 1e9).toFixed(2) + " GB";
  if (n >= 1e6) return (n / 1e6).toFixed(2) + " MB";
  if (n >= 1e3) return (n / 1e3).toFixed(1) + " kB";
  return n + " B";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

// A node under --mem-limit: the share of its expert uses found resident,
// and how long its steps waited for the disk.
function storeCell(s) {
  if (!s) return cell("all in RAM");
  const uses = s.hits + s.misses;
  const pct = uses ? Math.round(100 * s.hits / uses) + "% hits" : "no uses yet";
  return cell(pct + ", " + fmtBytes(s.used_bytes) + " of " + fmtBytes(s.budget_bytes) + ", " +
    (s.stall_ms / 1000).toFixed(1) + " s stalled", "num");
}

function renderNodes(c) {
  const body = $("nodes").querySelector("tbody");
  body.replaceChildren();
  if (!c.nodes.length) {
    const tr = document.createElement("tr");
    const td = cell("no expert nodes: every expert runs on this machine");
    td.colSpan = 11;
    tr.appendChild(td);
    body.appendChild(tr);
  }
  c.nodes.forEach((n, i) => {
    const tr = document.createElement("tr");
    tr.dataset.node = n.name;
    const name = cell(n.name);
    name.style.borderLeft = "4px solid " + palette[i % palette.length];
    // A node without a model file fetching its experts: how far, how fast.
    const t = n.transfer;
    const state = t && t.active && !n.alive
      ? cell("fetching " + Math.floor(100 * t.sent_bytes / Math.max(1, t.sent_bytes + t.remaining_bytes)) + "% (" +
        fmtBytes(t.bytes_per_s) + "/s, " + Math.ceil(t.eta_s) + " s left)", "dead")
      : cell(n.alive ? "alive" : "lost", n.alive ? "alive" : "dead");
    // Its part in a staged placement change (joining, loading, ready, leaving).
    if (n.stage && n.stage !== "none") state.textContent += ", change: " + n.stage;
    tr.append(name, cell(n.endpoint), state,
      cell(n.rtt_p50_ms.toFixed(2) + " ms", "num"), cell(n.rtt_p99_ms.toFixed(2) + " ms", "num"),
      cell(String(n.requests), "num"), cell(String(n.rows), "num"), cell(fmtBytes(n.bytes_sent), "num"),
      cell(fmtBytes(n.bytes_received), "num"), cell(String(n.times_lost), "num"), storeCell(n.expert_store));
    body.appendChild(tr);
  });
}

function gridHead(el, experts) {
  el.style.gridTemplateColumns = "48px repeat(" + experts + ", minmax(22px, 1fr))";
  el.replaceChildren();
  const corner = document.createElement("div");
  corner.className = "cell head";
  el.appendChild(corner);
  for (let e = 0; e < experts; e++) {
    const h = document.createElement("div");
    h.className = "cell head";
    h.textContent = "e" + e;
    el.appendChild(h);
  }
}

function rowHead(el, l) {
  const h = document.createElement("div");
  h.className = "cell head";
  h.textContent = "L" + l;
  el.appendChild(h);
}

function renderPlacement(c) {
  const el = $("placement"), legend = $("legend");
  gridHead(el, c.experts);
  legend.replaceChildren();
  c.nodes.forEach((n, i) => {
    const s = document.createElement("span");
    s.style.setProperty("--c", palette[i % palette.length]);
    s.textContent = n.name + (n.alive ? "" : " (lost: computed here)");
    legend.appendChild(s);
  });
  const loc = document.createElement("span");
  loc.style.setProperty("--c", LOCAL);
  loc.textContent = "coordinator";
  legend.appendChild(loc);
  for (let l = 0; l < c.layers; l++) {
    rowHead(el, l);
    for (let e = 0; e < c.experts; e++) {
      const holders = [];
      c.nodes.forEach((n, i) => { if (n.experts[l] && n.experts[l].includes(e)) holders.push(i); });
      const local = c.local_experts && c.local_experts[l] && c.local_experts[l].includes(e);
      const d = document.createElement("div");
      d.className = "cell";
      if (holders.length) {
        const colors = holders.map((i) => palette[i % palette.length]);
        d.style.background = colors.length === 1 ? colors[0] :
          "linear-gradient(135deg," + colors.map((col, k) => col + " " + (100 * k / colors.length) + "% " +
            (100 * (k + 1) / colors.length) + "%").join(",") + ")";
        if (holders.some((i) => !c.nodes[i].alive)) d.style.opacity = "0.35";
        d.title = "layer " + l + " expert " + e + ": " + holders.map((i) => c.nodes[i].name).join(", ");
        d.textContent = holders.length > 1 ? "×" + holders.length : "";
      } else {
        d.style.background = LOCAL;
        d.title = "layer " + l + " expert " + e + ": coordinator" + (local ? "" : "?");
      }
      el.appendChild(d);
    }
  }
}

function renderHeat(c) {
  const el = $("heat");
  gridHead(el, c.experts);
  const rows = c.rows_per_expert || [];
  for (let l = 0; l < c.layers; l++) {
    rowHead(el, l);
    const r = rows[l] || [];
    const max = Math.max(1, ...r);
    const sum = r.reduce((a, b) => a + b, 0) || 1;
    for (let e = 0; e < c.experts; e++) {
      const v = r[e] || 0, t = v / max;
      const d = document.createElement("div");
      d.className = "cell";
      d.style.background = "rgba(214, 69, 69, " + (0.08 + 0.92 * t).toFixed(3) + ")";
      d.style.color = t > 0.5 ? "#fff" : "#333";
      d.textContent = v ? Math.round(100 * v / sum) + "%" : "";
      d.title = "layer " + l + " expert " + e + ": " + v + " rows";
      el.appendChild(d);
    }
  }
}

async function refresh() {
  try {
    const r = await fetch("/v1/cluster", { headers: headers() });
    if (r.status === 401) throw new Error("API key needed");
    if (!r.ok) throw new Error("HTTP " + r.status);
    const c = await r.json();
    $("model").textContent = c.model;
    const lost = c.nodes.filter((n) => !n.alive).length;
    $("status").textContent = c.nodes.length ? (lost ? lost + " node(s) lost" : c.nodes.length + " nodes alive") : "one machine";
    $("status").className = "tag " + (lost ? "bad" : "ok");
    const p = c.placement;
    if (p && p.state !== "steady")
      $("status").textContent += ", placement change " + p.state + " (" + Math.floor(p.staged_for_s || 0) + " s)";
    $("load").textContent = c.generations_active + " generating, " + c.generations_queued + " waiting, " +
      c.parallel + " at once";
    $("wire").textContent = c.wire ? "wire: " + c.wire : "";
    renderNodes(c);
    renderPlacement(c);
    renderHeat(c);
  } catch (err) {
    $("status").textContent = "unreachable: " + err.message;
    $("status").className = "tag bad";
  }
}
refresh();
setInterval(refresh, 1000);

// --- chat ---------------------------------------------------------------------

let history = [];
let controller = null;

function addMessage(cls, text) {
  const d = document.createElement("div");
  d.className = "msg " + cls;
  d.textContent = text;
  $("messages").appendChild(d);
  $("messages").scrollTop = $("messages").scrollHeight;
  return d;
}

async function send(text) {
  history.push({ role: "user", content: text });
  addMessage("user", text);
  const out = addMessage("assistant", "");
  const messages = [];
  const system = $("system").value.trim();
  if (system) messages.push({ role: "system", content: system });
  messages.push(...history);
  controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  const t0 = performance.now();
  let first = 0, answer = "", usage = null, finish = "";
  try {
    const r = await fetch("/v1/chat/completions", {
      method: "POST", headers: headers(), signal: controller.signal,
      body: JSON.stringify({ messages, stream: true, stream_options: { include_usage: true },
        temperature: Number($("temp").value), max_tokens: Number($("maxtok").value) }),
    });
    if (!r.ok) {
      const e = await r.json().catch(() => ({}));
      throw new Error((e.error && e.error.message) || "HTTP " + r.status);
    }
    const reader = r.body.getReader(), dec = new TextDecoder();
    let buf = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += dec.decode(value, { stream: true });
      let at;
      while ((at = buf.indexOf("\n\n")) >= 0) {
        const event = buf.slice(0, at);
        buf = buf.slice(at + 2);
        if (!event.startsWith("data: ")) continue;
        const data = event.slice(6);
        if (data === "[DONE]") continue;
        const chunk = JSON.parse(data);
        if (chunk.error) throw new Error(chunk.error.message);
        if (chunk.usage) usage = chunk.usage;
        const ch = chunk.choices && chunk.choices[0];
        if (!ch) continue;
        if (ch.delta && ch.delta.content) {
          if (!first) first = performance.now();
          answer += ch.delta.content;
          out.textContent = answer;
          $("messages").scrollTop = $("messages").scrollHeight;
        }
        if (ch.finish_reason) finish = ch.finish_reason;
      }
    }
    history.push({ role: "assistant", content: answer });
    const secs = (performance.now() - (first || t0)) / 1000;
    const n = usage ? usage.completion_tokens : 0;
    addMessage("note", n + " tokens, " + (n > 1 && secs > 0 ? ((n - 1) / secs).toFixed(1) : "–") + " tok/s, first token after " +
      ((first ? first - t0 : 0) / 1000).toFixed(2) + " s" + (finish === "length" ? ", token limit reached" : ""));
  } catch (err) {
    if (err.name === "AbortError") {
      history.push({ role: "assistant", content: answer });
      addMessage("note", "stopped");
    } else {
      history.pop();
      addMessage("error", err.message);
    }
  } finally {
    controller = null;
    $("send").disabled = false;
    $("stop").disabled = true;
  }
}

$("ask").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const text = $("input").value.trim();
  if (!text || controller) return;
  $("input").value = "";
  send(text);
});
$("input").addEventListener("keydown", (ev) => {
  if (ev.key === "Enter" && !ev.shiftKey) {
    ev.preventDefault();
    $("ask").requestSubmit();
  }
});
$("stop").addEventListener("click", () => controller && controller.abort());
$("reset").addEventListener("click", () => {
  if (controller) controller.abort();
  history = [];
  $("messages").replaceChildren();
});
