// The Vercel AI SDK through its default OpenAI provider
// (createOpenAI({baseURL})(model), which speaks the Responses API):
// generateText and streamText give the chat endpoint's greedy answer, with
// its usage and finish reason; a forced tool call (toolChoice naming the
// tool, decoded under its input schema) is a call whose input validates,
// even from the demo's random weights, whole and streamed the same, and its
// result goes back in a next step.
import assert from "node:assert/strict";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, jsonSchema, streamText, tool } from "ai";
import OpenAI from "openai";

const base = process.env.MC_URL + "/v1";
const client = new OpenAI({ baseURL: base, apiKey: "unused", maxRetries: 0 });
const model = (await client.models.list()).data[0].id;
const openai = createOpenAI({ baseURL: base, apiKey: "unused" });

const system = "You are terse.", prompt = "Name three rivers.";
const chat = await client.chat.completions.create({
  model, messages: [{ role: "system", content: system }, { role: "user", content: prompt }], max_tokens: 24, temperature: 0,
});
const want = chat.choices[0].message.content;

const gen = await generateText({ model: openai(model), system, prompt, maxOutputTokens: 24, temperature: 0, maxRetries: 0 });
assert.equal(gen.text, want);
assert.equal(gen.usage.inputTokens, chat.usage.prompt_tokens);
assert.equal(gen.usage.outputTokens, chat.usage.completion_tokens);
assert.equal(gen.finishReason, chat.choices[0].finish_reason === "length" ? "length" : "stop");

const stream = streamText({ model: openai(model), system, prompt, maxOutputTokens: 24, temperature: 0, maxRetries: 0 });
let text = "", parts = 0;
for await (const delta of stream.textStream) text += delta, parts++;
assert.equal(text, want);
assert.equal((await stream.usage).outputTokens, chat.usage.completion_tokens);
assert.equal(await stream.finishReason, gen.finishReason);

// A second turn with the first answer in it, as an app keeps the
// conversation: by default the SDK names the answer by its id (an
// item_reference the server resolves from what it kept); with store: false
// it sends the text. The model reads the same conversation either way.
const messages = [{ role: "user", content: prompt }, ...gen.response.messages, { role: "user", content: "And two more?" }];
const again = await generateText({ model: openai(model), system, messages, maxOutputTokens: 8, temperature: 0, maxRetries: 0 });
const sent = await generateText({
  model: openai(model), system, messages, maxOutputTokens: 8, temperature: 0, maxRetries: 0,
  providerOptions: { openai: { store: false } },
});
assert.ok(again.usage.inputTokens > gen.usage.inputTokens + gen.usage.outputTokens);
assert.equal(again.usage.inputTokens, sent.usage.inputTokens);
assert.equal(again.text, sent.text);

// A forced tool call: the input follows the tool's schema.
const bookTable = tool({
  description: "Book a table",
  inputSchema: jsonSchema({
    type: "object", additionalProperties: false, required: ["guests", "time"],
    properties: { guests: { type: "integer" }, time: { enum: ["18:00", "19:00", "20:00"] },
      name: { type: "string", maxLength: 12 } },
  }),
});
const valid = (input) => Number.isInteger(input.guests) && ["18:00", "19:00", "20:00"].includes(input.time) &&
  (input.name === undefined || (typeof input.name === "string" && [...input.name].length <= 12)) &&
  Object.keys(input).every((k) => ["guests", "time", "name"].includes(k));
const callReq = { model: openai(model), prompt: "A table for two at seven.", tools: { book_table: bookTable },
  toolChoice: { type: "tool", toolName: "book_table" }, maxOutputTokens: 200, temperature: 0, maxRetries: 0 };
const called = await generateText(callReq);
assert.equal(called.finishReason, "tool-calls");
assert.equal(called.toolCalls.length, 1);
assert.equal(called.toolCalls[0].toolName, "book_table");
assert.ok(valid(called.toolCalls[0].input), JSON.stringify(called.toolCalls[0].input));
const streamedCall = streamText(callReq);
const scalls = await streamedCall.toolCalls;
assert.equal(scalls.length, 1);
assert.deepEqual(scalls[0].input, called.toolCalls[0].input);
assert.equal(await streamedCall.finishReason, "tool-calls");
// The call and its result in a next step: the call by its item id (kept by
// the server), the result sent; and the same with store: false (all sent).
const followUp = [{ role: "user", content: "A table for two at seven." }, ...called.response.messages,
  { role: "tool", content: [{ type: "tool-result", toolCallId: called.toolCalls[0].toolCallId, toolName: "book_table",
    output: { type: "json", value: { booked: true } } }] }];
const next = await generateText({ model: openai(model), messages: followUp, tools: { book_table: bookTable },
  maxOutputTokens: 4, temperature: 0, maxRetries: 0 });
const nextSent = await generateText({ model: openai(model), messages: followUp, tools: { book_table: bookTable },
  maxOutputTokens: 4, temperature: 0, maxRetries: 0, providerOptions: { openai: { store: false } } });
assert.ok(next.usage.inputTokens > called.usage.inputTokens);
assert.equal(next.usage.inputTokens, nextSent.usage.inputTokens);

console.log(`ai sdk: generateText and streamText (${parts} parts) give the chat's ${chat.usage.completion_tokens} tokens; ` +
  `a second turn of ${again.usage.inputTokens} prompt tokens; forced call: book_table(${JSON.stringify(called.toolCalls[0].input)}), ` +
  `its result in a next step of ${next.usage.inputTokens} prompt tokens`);
