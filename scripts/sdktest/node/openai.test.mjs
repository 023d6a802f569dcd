// The OpenAI Node SDK against a Meridian edge. MERIDIAN_URL is the edge's
// base URL; MERIDIAN_MODELS is a comma-separated list of chat models to
// run every case against (each routed to a different kind of upstream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const base = process.env.MERIDIAN_URL;
const models = (process.env.MERIDIAN_MODELS || 'gpt-4o-mini').split(',');
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-unused', maxRetries: 0 });

const weatherTool = {
  type: 'function',
  function: { name: 'get_weather', parameters: { type: 'object', properties: { location: { type: 'string' } } } },
};

for (const model of models) {
  test(`openai ${model}: chat`, async () => {
    const cc = await client.chat.completions.create({ model, messages: [{ role: 'user', content: 'hello #mock chunks=5' }] });
    assert.ok(cc.choices[0].message.content.length > 0);
    assert.equal(cc.choices[0].finish_reason, 'stop');
    assert.equal(cc.usage.completion_tokens, 5);
  });

  test(`openai ${model}: stream`, async () => {
    const stream = await client.chat.completions.create({
      model, stream: true, stream_options: { include_usage: true },
      messages: [{ role: 'user', content: 'hello #mock chunks=7' }],
    });
    let text = '';
    let usage = null;
    let finish = null;
    for await (const chunk of stream) {
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        text += c.delta.content || '';
        if (c.finish_reason) finish = c.finish_reason;
      }
    }
    assert.ok(text.length > 0);
    assert.equal(finish, 'stop');
    assert.equal(usage.completion_tokens, 7);
  });

  test(`openai ${model}: tool call round trip`, async () => {
    const messages = [{ role: 'user', content: 'weather in Paris? #mock tool_call=get_weather' }];
    const runner = client.chat.completions.stream({ model, messages, tools: [weatherTool] });
    const first = await runner.finalChatCompletion();
    const call = first.choices[0].message.tool_calls[0];
    assert.equal(call.function.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.function.arguments), { location: 'Paris' });
    assert.equal(first.choices[0].finish_reason, 'tool_calls');
    messages[0] = { role: 'user', content: 'thanks' };
    messages.push(first.choices[0].message, { role: 'tool', tool_call_id: call.id, content: '{"temp_c":18}' });
    const second = await client.chat.completions.create({ model, messages, tools: [weatherTool] });
    assert.equal(second.choices[0].finish_reason, 'stop');
  });

  test(`openai ${model}: typed 429`, async () => {
    await assert.rejects(
      client.chat.completions.create({ model, messages: [{ role: 'user', content: 'x #mock status=429 retry_after=3' }] }),
      (err) => err instanceof OpenAI.RateLimitError && err.status === 429,
    );
  });
}

test('openai: typed 404 for an unknown model', async () => {
  await assert.rejects(
    client.chat.completions.create({ model: 'no-such-model', messages: [{ role: 'user', content: 'x' }] }),
    (err) => err instanceof OpenAI.NotFoundError && err.status === 404,
  );
});

test('openai: embeddings', async () => {
  const res = await client.embeddings.create({ model: 'text-embedding-3-small', input: ['a', 'b'] });
  assert.equal(res.data.length, 2);
  assert.ok(res.data[0].embedding.length > 0);
});
