// The OpenAI Node SDK's Responses API against a model the edge runs
// itself (MERIDIAN_LOCAL_MODEL, through Ollama), and the Anthropic Node
// SDK's countTokens counted by that model's tokenizer. Skipped unless
// MERIDIAN_LOCAL_MODEL is set (edge/node's TestLocalResponses sets it).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.MERIDIAN_URL;
const model = process.env.MERIDIAN_LOCAL_MODEL;
const skip = !model && 'MERIDIAN_LOCAL_MODEL is not set';
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-unused', maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: 'sk-unused', maxRetries: 0 });

test('responses local: plain', { skip }, async () => {
  const r = await client.responses.create({ model, input: 'hello', max_output_tokens: 12 });
  assert.equal(r.status, 'incomplete');
  assert.equal(r.incomplete_details.reason, 'max_output_tokens');
  assert.ok(r.output_text.length > 0);
  assert.equal(r.usage.output_tokens, 12);
});

test('responses local: streamed', { skip }, async () => {
  const final = await client.responses.stream({ model, input: 'hello', max_output_tokens: 16 }).finalResponse();
  assert.ok(final.output_text.length > 0);
  assert.equal(final.usage.output_tokens, 16);
});

test('responses local: a tool round trip\'s second leg', { skip }, async () => {
  // The tiny model takes no tool definitions; the history of a call
  // and its output still translates to Ollama's messages.
  const r = await client.responses.create({
    model, max_output_tokens: 8,
    input: [
      { role: 'user', content: 'weather?' },
      { type: 'function_call', call_id: 'call_1', name: 'get_weather', arguments: '{}' },
      { type: 'function_call_output', call_id: 'call_1', output: '{"temp_c":18}' },
    ],
  });
  assert.equal(r.usage.output_tokens, 8);
});

test('anthropic local: countTokens by the tokenizer', { skip }, async () => {
  const res = await anthropic.messages.countTokens({ model, messages: [{ role: 'user', content: 'hello there' }] }).asResponse();
  assert.equal(res.headers.get('x-meridian-token-count'), 'tokenizer');
  const body = await res.json();
  assert.ok(Number.isInteger(body.input_tokens) && body.input_tokens > 0);
});
