// The edge cache through the official Node SDKs: a deterministic
// question streamed twice is answered the second time from the cache,
// replayed chunk for chunk in the client's own format, with its usage
// marked cached. It runs only against an edge with its cache on
// (MERIDIAN_CACHE=1, set by edge/node's TestNodeSDKsCache).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.MERIDIAN_URL;
const on = process.env.MERIDIAN_CACHE === '1';
const model = 'gpt-4o-mini';

test('openai: a cached stream replays chunk for chunk', { skip: !on && 'the edge cache is off (MERIDIAN_CACHE)' }, async () => {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-unused', maxRetries: 0 });
  const ask = async () => {
    const { data: stream, response } = await client.chat.completions.create({
      model, stream: true, temperature: 0, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'node openai cache #mock chunks=8' }],
    }).withResponse();
    const deltas = [];
    let usage = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) deltas.push(c.delta.content ?? '');
    }
    return { deltas, usage, cache: response.headers.get('x-meridian-cache') };
  };
  const miss = await ask();
  const hit = await ask();
  assert.equal(miss.cache, 'miss');
  assert.equal(hit.cache, 'hit');
  assert.deepEqual(hit.deltas, miss.deltas);
  assert.equal(hit.usage.completion_tokens, miss.usage.completion_tokens);
  assert.equal(hit.usage.prompt_tokens_details.cached_tokens, miss.usage.prompt_tokens);
});

test('anthropic: a cached stream replays as Anthropic events', { skip: !on && 'the edge cache is off (MERIDIAN_CACHE)' }, async () => {
  const client = new Anthropic({ baseURL: base, apiKey: 'sk-unused', maxRetries: 0 });
  const ask = async () => {
    const { data: stream, response } = await client.messages.create({
      model, max_tokens: 64, stream: true, temperature: 0,
      messages: [{ role: 'user', content: 'node anthropic cache #mock chunks=6' }],
    }).withResponse();
    const deltas = [];
    let usage = null;
    const types = [];
    for await (const ev of stream) {
      types.push(ev.type);
      if (ev.type === 'content_block_delta') deltas.push(ev.delta.text);
      if (ev.type === 'message_delta') usage = ev.usage;
    }
    return { deltas, usage, types, cache: response.headers.get('x-meridian-cache') };
  };
  const miss = await ask();
  const hit = await ask();
  assert.equal(miss.cache, 'miss');
  assert.equal(hit.cache, 'hit');
  assert.deepEqual(hit.deltas, miss.deltas);
  assert.equal(hit.types.at(-1), 'message_stop');
  assert.ok(hit.usage.cache_read_input_tokens > 0);
  assert.equal(hit.usage.input_tokens, 0);
  assert.equal(hit.usage.output_tokens, miss.usage.output_tokens);
});
