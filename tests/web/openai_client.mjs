// The official openai package as a real client of moe-coordinator --serve:
// the model list, a whole and a streamed chat completion (the same text,
// the same usage), a raw completion, and a bad request surfacing as the
// client's BadRequestError.
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

const raw = await client.completions.create({ model, prompt: "Once upon a time", max_tokens: 10, temperature: 0 });
assert.equal(raw.object, "text_completion");
assert.equal(typeof raw.choices[0].text, "string");

await assert.rejects(
  client.chat.completions.create({ model, messages: [{ role: "robot", content: "hi" }] }),
  (err) => err instanceof OpenAI.BadRequestError && err.status === 400 && /roles are system, user and assistant/.test(err.message),
);

console.log(`openai ${OpenAI.VERSION ?? ""}: ${chunks} chunks streamed, ${usage.completion_tokens} tokens, the same as the whole answer`);
