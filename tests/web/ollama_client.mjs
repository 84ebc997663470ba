// The `ollama` npm package as a real client (new Ollama({host}) and
// nothing else): version, list, show, chat whole and streamed, generate;
// greedy answers equal the OpenAI chat endpoint's for the same messages.
import assert from "node:assert/strict";
import { Ollama } from "ollama";
import OpenAI from "openai";

const ollama = new Ollama({ host: process.env.MC_URL });
const client = new OpenAI({ baseURL: process.env.MC_URL + "/v1", apiKey: "unused", maxRetries: 0 });

const { version } = await ollama.version();
assert.match(version, /^\d+\.\d+\.\d+$/);
const { models } = await ollama.list();
assert.equal(models.length, 1);
const model = models[0].name;
assert.match(model, /:latest$/);
assert.equal(models[0].details.format, "gguf");
const show = await ollama.show({ model });
assert.ok(show.model_info["general.architecture"]);

const messages = [{ role: "system", content: "You are terse." }, { role: "user", content: "Name three rivers." }];
const chat = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
const want = chat.choices[0].message.content;
const options = { temperature: 0, num_predict: 24 };

const whole = await ollama.chat({ model, messages, options });
assert.equal(whole.message.role, "assistant");
assert.equal(whole.message.content, want);
assert.equal(whole.done, true);
assert.equal(whole.done_reason, chat.choices[0].finish_reason);
assert.equal(whole.eval_count, chat.usage.completion_tokens);
assert.equal(whole.prompt_eval_count, chat.usage.prompt_tokens);
assert.ok(whole.total_duration > 0 && whole.eval_duration > 0);

let text = "", parts = 0, last = null;
for await (const part of await ollama.chat({ model, messages, options, stream: true })) {
  text += part.message.content;
  parts++;
  last = part;
}
assert.equal(text, want);
assert.equal(last.done, true);
assert.equal(last.eval_count, whole.eval_count);

const gen = await ollama.generate({ model, prompt: "Name three rivers.", system: "You are terse.", options });
assert.equal(gen.response, want);
let streamed = "";
for await (const part of await ollama.generate({ model, prompt: "Name three rivers.", system: "You are terse.", options,
  stream: true })) streamed += part.response;
assert.equal(streamed, want);

// Structured output: format "json" gives a JSON object, a schema a document it accepts.
const js = await ollama.chat({ model, messages, format: "json", options: { ...options, num_predict: 400 } });
if (js.done_reason === "stop") assert.equal(typeof JSON.parse(js.message.content), "object");
else assert.ok(js.message.content.startsWith("{"));
const schema = { type: "object", properties: { ok: { type: "boolean" }, n: { type: "integer" } }, required: ["ok", "n"],
  additionalProperties: false };
const sj = await ollama.chat({ model, messages, format: schema, options: { ...options, num_predict: 400 } });
assert.equal(sj.done_reason, "stop");
const parsed = JSON.parse(sj.message.content);
assert.deepEqual(Object.keys(parsed).sort(), ["n", "ok"]);
assert.ok(typeof parsed.ok === "boolean" && Number.isInteger(parsed.n));
await assert.rejects(ollama.chat({ model, messages, format: { type: "string", pattern: "a" } }), /'pattern' is not supported/);

console.log(`ollama ${version}: ${model}; chat whole and in ${parts} lines, generate whole and streamed: the same ` +
  `${whole.eval_count} tokens as /v1/chat/completions`);
