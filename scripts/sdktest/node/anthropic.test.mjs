// The Anthropic Node SDK against a Meridian edge's /v1/messages, routed
// to every model in MERIDIAN_MODELS (each on a different kind of upstream).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.MERIDIAN_URL;
const models = (process.env.MERIDIAN_MODELS || 'gpt-4o-mini').split(',');
const client = new Anthropic({ baseURL: base, apiKey: 'sk-unused', maxRetries: 0 });

const weatherTool = { name: 'get_weather', input_schema: { type: 'object', properties: { location: { type: 'string' } } } };

for (const model of models) {
  test(`anthropic ${model}: message`, async () => {
    const msg = await client.messages.create({
      model, max_tokens: 256, system: 'Be terse.',
      messages: [{ role: 'user', content: 'hello #mock chunks=5' }],
    });
    assert.equal(msg.type, 'message');
    assert.equal(msg.content[0].type, 'text');
    assert.ok(msg.content[0].text.length > 0);
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.usage.output_tokens, 5);
  });

  test(`anthropic ${model}: stream`, async () => {
    const stream = client.messages.stream({ model, max_tokens: 256, messages: [{ role: 'user', content: 'hello #mock chunks=7' }] });
    const types = [];
    stream.on('streamEvent', (ev) => types.push(ev.type));
    const msg = await stream.finalMessage();
    assert.ok(msg.content[0].text.length > 0);
    assert.equal(msg.stop_reason, 'end_turn');
    assert.equal(msg.usage.output_tokens, 7);
    assert.equal(types[0], 'message_start');
    assert.equal(types.at(-1), 'message_stop');
  });

  test(`anthropic ${model}: tool use round trip`, async () => {
    const messages = [{ role: 'user', content: 'weather in Paris? #mock tool_call=get_weather' }];
    const first = await client.messages.stream({ model, max_tokens: 256, messages, tools: [weatherTool] }).finalMessage();
    const use = first.content.find((b) => b.type === 'tool_use');
    assert.equal(use.name, 'get_weather');
    assert.deepEqual(use.input, { location: 'Paris' });
    assert.equal(first.stop_reason, 'tool_use');
    messages[0] = { role: 'user', content: 'thanks' };
    messages.push({ role: 'assistant', content: first.content });
    messages.push({ role: 'user', content: [{ type: 'tool_result', tool_use_id: use.id, content: '{"temp_c":18}' }] });
    const second = await client.messages.create({ model, max_tokens: 256, messages, tools: [weatherTool] });
    assert.equal(second.stop_reason, 'end_turn');
  });

  test(`anthropic ${model}: typed 429`, async () => {
    await assert.rejects(
      client.messages.create({ model, max_tokens: 16, messages: [{ role: 'user', content: 'x #mock status=429 retry_after=3' }] }),
      (err) => err instanceof Anthropic.RateLimitError && err.status === 429,
    );
  });
}

test('anthropic: typed 404 for an unknown model', async () => {
  await assert.rejects(
    client.messages.create({ model: 'no-such-model', max_tokens: 16, messages: [{ role: 'user', content: 'x' }] }),
    (err) => err instanceof Anthropic.NotFoundError && err.status === 404,
  );
});

test('anthropic: an unknown content block is a 400 that names it', async () => {
  await assert.rejects(
    client.messages.create({ model: models[0], max_tokens: 16, messages: [{ role: 'user', content: [{ type: 'hologram' }] }] }),
    (err) => err instanceof Anthropic.BadRequestError && /messages\.0\.content\.0\.type/.test(err.message),
  );
});
