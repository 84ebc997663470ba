// The Vercel AI SDK through its default OpenAI provider
// (createOpenAI({baseURL})(model), which speaks the Responses API):
// generateText and streamText give the chat endpoint's greedy answer, with
// its usage and finish reason.
import assert from "node:assert/strict";
import { createOpenAI } from "@ai-sdk/openai";
import { generateText, streamText } from "ai";
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

console.log(`ai sdk: generateText and streamText (${parts} parts) give the chat's ${chat.usage.completion_tokens} tokens; ` +
  `a second turn of ${again.usage.inputTokens} prompt tokens`);
