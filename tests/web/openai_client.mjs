// The official openai package as a real client of moe-coordinator --serve:
// the model list, a whole and a streamed chat completion (the same text,
// the same usage), logprobs (whole and streamed, the same entries), a raw
// completion, the Responses API (client.responses.create, whole and
// streamed: the chat's text, the same usage), and bad requests surfacing as
// the client's BadRequestError.
import assert from "node:assert/strict";
import OpenAI from "openai";

const client = new OpenAI({ baseURL: process.env.MC_URL + "/v1", apiKey: "unused", maxRetries: 0 });

const models = await client.models.list();
assert.equal(models.data.length, 1);
const model = models.data[0].id;
assert.equal(models.data[0].object, "model");

const messages = [
  { role: "system", content: "You are terse." },
  { role: "user", content: "Name three rivers." },
];
const whole = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0 });
assert.equal(whole.object, "chat.completion");
assert.equal(whole.choices[0].message.role, "assistant");
assert.ok(["stop", "length"].includes(whole.choices[0].finish_reason));
assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + whole.usage.completion_tokens);

const stream = await client.chat.completions.create({
  model, messages, max_tokens: 24, temperature: 0, stream: true, stream_options: { include_usage: true },
});
let text = "", finish = null, usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  const choice = chunk.choices[0];
  if (choice?.delta?.content) text += choice.delta.content;
  if (choice?.finish_reason) finish = choice.finish_reason;
  if (chunk.usage) usage = chunk.usage;
}
assert.equal(text, whole.choices[0].message.content, "streamed text = whole answer");
assert.equal(finish, whole.choices[0].finish_reason);
assert.deepEqual(usage, whole.usage);

// Logprobs: one entry per token of the text, each (greedy) its own top
// alternative; streamed, the same entries chunk by chunk.
const lp = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0, logprobs: true, top_logprobs: 3 });
const entries = lp.choices[0].logprobs.content;
assert.equal(lp.choices[0].message.content, whole.choices[0].message.content);
assert.equal(entries.length, lp.usage.completion_tokens - (lp.choices[0].finish_reason === "stop" ? 1 : 0));
for (const e of entries) {
  assert.equal(e.top_logprobs.length, 3);
  assert.equal(e.top_logprobs[0].token, e.token);
  assert.equal(e.top_logprobs[0].logprob, e.logprob);
  assert.ok(e.logprob <= 0 && Array.isArray(e.bytes));
}
const spelled = Buffer.from(entries.flatMap((e) => e.bytes)).toString("utf8");
assert.equal(spelled.replace(/^ /, ""), whole.choices[0].message.content);
const lpStream = await client.chat.completions.create({
  model, messages, max_tokens: 24, temperature: 0, logprobs: true, top_logprobs: 3, stream: true,
});
const streamedEntries = [];
for await (const chunk of lpStream) streamedEntries.push(...(chunk.choices[0]?.logprobs?.content ?? []));
assert.deepEqual(streamedEntries, entries);

const raw = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 10, temperature: 0 });
assert.equal(raw.object, "text_completion");
assert.equal(typeof raw.choices[0].text, "string");

// The Responses API: the same conversation gives the chat's text.
const input = [{ role: "user", content: "Name three rivers." }];
const resp = await client.responses.create({
  model, instructions: "You are terse.", input, max_output_tokens: 24, temperature: 0,
});
assert.equal(resp.object, "response");
assert.equal(resp.output_text, whole.choices[0].message.content);
assert.equal(resp.usage.input_tokens, whole.usage.prompt_tokens);
assert.equal(resp.usage.output_tokens, whole.usage.completion_tokens);
assert.ok(["completed", "incomplete"].includes(resp.status));
const events = await client.responses.create({
  model, instructions: "You are terse.", input, max_output_tokens: 24, temperature: 0, stream: true,
});
let deltas = "", final = null;
const types = [];
for await (const ev of events) {
  types.push(ev.type);
  if (ev.type === "response.output_text.delta") deltas += ev.delta;
  if (ev.type === "response.completed" || ev.type === "response.incomplete") final = ev.response;
}
assert.deepEqual(types.slice(0, 4), ["response.created", "response.in_progress", "response.output_item.added",
  "response.content_part.added"]);
assert.deepEqual(types.slice(-4, -1), ["response.output_text.done", "response.content_part.done", "response.output_item.done"]);
assert.equal(deltas, resp.output_text);
assert.deepEqual(final.usage, resp.usage);
await assert.rejects(
  client.responses.create({ model, input: "hi", tools: [{ type: "web_search" }] }),
  (err) => err instanceof OpenAI.BadRequestError && /only function tools/.test(err.message),
);

// Structured output: a strict json_schema answer parses and validates, even
// from the demo's random weights (decoding is constrained to the schema);
// an unsupported keyword is the client's BadRequestError naming it.
const person = {
  type: "object",
  properties: {
    name: { type: "string", maxLength: 10 },
    age: { type: "integer" },
    pets: { type: "array", items: { enum: ["cat", "dog"] }, maxItems: 3 },
    city: { anyOf: [{ type: "string", maxLength: 10 }, { type: "null" }] },
  },
  required: ["name", "age", "pets", "city"],
  additionalProperties: false,
};
const structured = await client.chat.completions.create({
  model, messages: [{ role: "user", content: "Describe a person as JSON." }], max_tokens: 600, temperature: 0.8, seed: 4,
  response_format: { type: "json_schema", json_schema: { name: "person", strict: true, schema: person } },
});
assert.equal(structured.choices[0].finish_reason, "stop");
const doc = JSON.parse(structured.choices[0].message.content);
assert.deepEqual(Object.keys(doc).sort(), ["age", "city", "name", "pets"]);
assert.ok(typeof doc.name === "string" && [...doc.name].length <= 10);
assert.ok(Number.isInteger(doc.age));
assert.ok(Array.isArray(doc.pets) && doc.pets.length <= 3 && doc.pets.every((p) => p === "cat" || p === "dog"));
assert.ok(doc.city === null || (typeof doc.city === "string" && [...doc.city].length <= 10));
await assert.rejects(
  client.chat.completions.create({
    model, messages, response_format: { type: "json_schema", json_schema: { name: "x", schema: { type: "string", pattern: "^a" } } },
  }),
  (err) => err instanceof OpenAI.BadRequestError && /'pattern' is not supported/.test(err.message),
);
// Tools: a conversation with a call and its result, as the client builds
// them, is taken; the answer (random weights, tools offered, nothing
// forced) is either calls in OpenAI's shape or text (a forced call below).
const tools = [{ type: "function", function: { name: "get_weather", description: "Weather in a city",
  parameters: { type: "object", properties: { city: { type: "string" } }, required: ["city"] } } }];
const toolConv = [
  { role: "user", content: "Weather in Paris?" },
  { role: "assistant", content: null, tool_calls: [{ id: "call_1", type: "function",
    function: { name: "get_weather", arguments: JSON.stringify({ city: "Paris" }) } }] },
  { role: "tool", tool_call_id: "call_1", content: JSON.stringify({ temp_c: 20 }) },
];
const toolAnswer = await client.chat.completions.create({ model, messages: toolConv, tools, max_tokens: 16, temperature: 0 });
const tmsg = toolAnswer.choices[0].message;
if (tmsg.tool_calls) {
  assert.equal(toolAnswer.choices[0].finish_reason, "tool_calls");
  for (const c of tmsg.tool_calls) {
    assert.match(c.id, /^call_/);
    assert.equal(c.function.name, "get_weather");
    assert.equal(typeof JSON.parse(c.function.arguments), "object");
  }
} else {
  assert.equal(typeof tmsg.content, "string");
}
const toolStream = await client.chat.completions.create({ model, messages: toolConv, tools, max_tokens: 16,
  temperature: 0, stream: true });
let toolText = "";
for await (const chunk of toolStream) toolText += chunk.choices[0]?.delta?.content ?? "";
if (!tmsg.tool_calls) assert.equal(toolText, tmsg.content);

// A forced call (tool_choice naming the function): decoded under the tool's
// parameters schema, so even the demo's random weights give a call whose
// arguments parse and validate; streamed, the same call in deltas.
const bookTools = [{ type: "function", function: { name: "book_table", description: "Book a table",
  parameters: { type: "object", additionalProperties: false, required: ["guests", "time"],
    properties: { guests: { type: "integer" }, time: { enum: ["18:00", "19:00", "20:00"] },
      name: { type: "string", maxLength: 12 } } } } }];
const forcedReq = { model, messages: [{ role: "user", content: "A table for two at seven." }], tools: bookTools,
  tool_choice: { type: "function", function: { name: "book_table" } }, max_tokens: 200, temperature: 0 };
const forced = await client.chat.completions.create(forcedReq);
assert.equal(forced.choices[0].finish_reason, "tool_calls");
const fcalls = forced.choices[0].message.tool_calls;
assert.equal(fcalls.length, 1);
assert.equal(fcalls[0].type, "function");
assert.equal(fcalls[0].function.name, "book_table");
const bargs = JSON.parse(fcalls[0].function.arguments);
assert.ok(Number.isInteger(bargs.guests));
assert.ok(["18:00", "19:00", "20:00"].includes(bargs.time));
assert.ok(bargs.name === undefined || (typeof bargs.name === "string" && [...bargs.name].length <= 12));
assert.ok(Object.keys(bargs).every((k) => ["guests", "time", "name"].includes(k)));
const forcedStream = await client.chat.completions.create({ ...forcedReq, stream: true });
let sargs = "", sname = "", sfinish = null;
for await (const chunk of forcedStream) {
  const ch = chunk.choices[0];
  for (const tc of ch?.delta?.tool_calls ?? []) {
    if (tc.function?.name) sname = tc.function.name;
    sargs += tc.function?.arguments ?? "";
  }
  if (ch?.finish_reason) sfinish = ch.finish_reason;
}
assert.equal(sname, "book_table");
assert.equal(sfinish, "tool_calls");
assert.equal(sargs, fcalls[0].function.arguments);

await assert.rejects(
  client.chat.completions.create({ model, messages: [{ role: "robot", content: "hi" }] }),
  (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && /roles are system, user, assistant and tool/.test(err.message),
);

console.log(`openai ${OpenAI.VERSION ?? ""}: ${chunks} chunks streamed, ${usage.completion_tokens} tokens, the same as the whole ` +
  `answer; ${entries.length} logprob entries; responses: ${types.length} events, the chat's text; ` +
  `json_schema: ${structured.choices[0].message.content.length} bytes, valid; forced call: book_table(${fcalls[0].function.arguments})`);
