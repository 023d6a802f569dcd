// The OpenAI Node SDK's Responses API (client.responses) against a
// Meridian edge, routed to every model in MERIDIAN_MODELS, and the
// Anthropic Node SDK's messages.countTokens.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.MERIDIAN_URL;
const models = (process.env.MERIDIAN_MODELS || 'gpt-4o-mini').split(',');
const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-unused', maxRetries: 0 });
const anthropic = new Anthropic({ baseURL: base, apiKey: 'sk-unused', maxRetries: 0 });

const weatherTool = {
  type: 'function', name: 'get_weather', strict: false,
  parameters: { type: 'object', properties: { location: { type: 'string' } } },
};

for (const model of models) {
  test(`responses ${model}: plain`, async () => {
    const r = await client.responses.create({ model, instructions: 'Be terse.', input: 'hello #mock chunks=5' });
    assert.equal(r.object, 'response');
    assert.equal(r.status, 'completed');
    assert.ok(r.id.startsWith('resp_'));
    assert.ok(r.output_text.length > 0);
    assert.equal(r.output[0].type, 'message');
    assert.equal(r.usage.output_tokens, 5);
  });

  test(`responses ${model}: streamed`, async () => {
    const stream = await client.responses.create({ model, input: 'hello #mock chunks=7', stream: true });
    let text = '';
    let completed = null;
    let seq = 0;
    const types = [];
    for await (const ev of stream) {
      assert.equal(ev.sequence_number, seq++);
      types.push(ev.type);
      if (ev.type === 'response.output_text.delta') text += ev.delta;
      if (ev.type === 'response.completed') completed = ev.response;
    }
    assert.equal(types[0], 'response.created');
    assert.equal(types.at(-1), 'response.completed');
    assert.ok(text.length > 0);
    assert.equal(completed.output[0].content[0].text, text);
    assert.equal(completed.usage.output_tokens, 7);
  });

  test(`responses ${model}: tool call round trip (stream helper)`, async () => {
    const input = [{ role: 'user', content: 'weather in Paris? #mock tool_call=get_weather' }];
    const first = await client.responses.stream({ model, input, tools: [weatherTool] }).finalResponse();
    const call = first.output.find((it) => it.type === 'function_call');
    assert.equal(call.name, 'get_weather');
    assert.deepEqual(JSON.parse(call.arguments), { location: 'Paris' });
    input[0] = { role: 'user', content: 'thanks' };
    input.push(...first.output.filter((it) => it.type === 'function_call'));
    input.push({ type: 'function_call_output', call_id: call.call_id, output: '{"temp_c":18}' });
    const second = await client.responses.create({ model, input, tools: [weatherTool] });
    assert.equal(second.status, 'completed');
    assert.ok(second.output_text.length > 0);
  });

  test(`responses ${model}: typed 429`, async () => {
    await assert.rejects(
      client.responses.create({ model, input: 'x #mock status=429 retry_after=3' }),
      (err) => err instanceof OpenAI.RateLimitError && err.status === 429,
    );
  });

  test(`responses ${model}: a cut stream throws`, async () => {
    const stream = await client.responses.create({ model, input: 'x #mock chunks=10 cut_after=4', stream: true });
    await assert.rejects(async () => {
      for await (const ev of stream) assert.notEqual(ev.type, 'response.completed');
    });
  });
}

test('responses: store is refused with a 400 naming it', async () => {
  await assert.rejects(
    client.responses.create({ model: models[0], input: 'x', store: true }),
    (err) => err instanceof OpenAI.BadRequestError && err.param === 'store',
  );
});

test('anthropic: messages.countTokens', async () => {
  const claude = models.find((m) => m.startsWith('claude')) || models[0];
  const res = await anthropic.messages.countTokens({
    model: claude, system: 'Be terse.', messages: [{ role: 'user', content: 'one two three four' }],
  });
  assert.ok(Number.isInteger(res.input_tokens) && res.input_tokens > 0);
  const estimated = await anthropic.messages.countTokens({
    model: models[0], messages: [{ role: 'user', content: 'one two three four' }],
  }).asResponse();
  assert.equal(estimated.status, 200);
  assert.ok(['estimate', 'upstream', 'tokenizer'].includes(estimated.headers.get('x-meridian-token-count')));
});
