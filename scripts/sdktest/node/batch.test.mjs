// The OpenAI Node SDK's Files and Batches APIs against a Meridian edge
// that follows a control plane with JetStream. It runs only when
// MERIDIAN_BATCH_URL is set (edge/node's TestNodeSDKBatch sets it);
// MERIDIAN_BATCH_MODEL is the chat model, MERIDIAN_BATCH_LINES how many
// lines the batch holds.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI, { toFile } from 'openai';
import Anthropic from '@anthropic-ai/sdk';

const base = process.env.MERIDIAN_BATCH_URL;
const model = process.env.MERIDIAN_BATCH_MODEL || 'gpt-4o-mini';
const n = Number(process.env.MERIDIAN_BATCH_LINES || '1000');

test('openai batch: files.create, batches.create, batches.retrieve, files.content', { skip: !base && 'MERIDIAN_BATCH_URL is not set' }, async () => {
  const client = new OpenAI({ baseURL: `${base}/v1`, apiKey: 'sk-unused', maxRetries: 0 });
  const lines = [];
  for (let i = 0; i < n; i++) {
    lines.push(JSON.stringify({
      custom_id: `line-${i}`, method: 'POST', url: '/v1/chat/completions',
      body: { model, messages: [{ role: 'user', content: `line ${i} #mock chunks=3` }] },
    }));
  }
  const file = await client.files.create({ file: await toFile(Buffer.from(lines.join('\n') + '\n'), 'batch.jsonl'), purpose: 'batch' });
  assert.equal(file.object, 'file');
  assert.equal(file.purpose, 'batch');
  assert.ok(file.id.startsWith('file-'));

  let batch = await client.batches.create({ input_file_id: file.id, endpoint: '/v1/chat/completions', completion_window: '24h', metadata: { run: 'sdk' } });
  assert.equal(batch.object, 'batch');
  assert.equal(batch.request_counts.total, n);
  assert.equal(batch.metadata.run, 'sdk');

  const deadline = Date.now() + 150_000;
  while (batch.status !== 'completed') {
    assert.ok(!['failed', 'expired', 'cancelled'].includes(batch.status), `batch ended ${batch.status}`);
    assert.ok(Date.now() < deadline, `batch still ${batch.status} with ${JSON.stringify(batch.request_counts)}`);
    await new Promise((r) => setTimeout(r, 200));
    batch = await client.batches.retrieve(batch.id);
  }
  assert.deepEqual(batch.request_counts, { total: n, completed: n, failed: 0 });
  assert.equal(batch.error_file_id, null);

  const text = await (await client.files.content(batch.output_file_id)).text();
  const out = text.trim().split('\n').map((l) => JSON.parse(l));
  assert.equal(out.length, n);
  const seen = new Set();
  for (const line of out) {
    assert.ok(!seen.has(line.custom_id), `${line.custom_id} twice`);
    seen.add(line.custom_id);
    assert.equal(line.error, null);
    assert.equal(line.response.status_code, 200);
    assert.equal(line.response.body.object, 'chat.completion');
    assert.ok(line.response.body.choices[0].message.content.length > 0);
  }
  for (let i = 0; i < n; i++) assert.ok(seen.has(`line-${i}`), `line-${i} missing`);

  const page = await client.batches.list({ limit: 1 });
  assert.equal(page.data[0].id, batch.id);
});

test('anthropic message batch: messages.batches.create, retrieve, results', { skip: !base && 'MERIDIAN_BATCH_URL is not set' }, async () => {
  const client = new Anthropic({ baseURL: base, apiKey: 'sk-unused', maxRetries: 0 });
  const m = 50;
  const requests = [];
  for (let i = 0; i < m; i++) {
    requests.push({ custom_id: `req-${i}`, params: { model, max_tokens: 16, messages: [{ role: 'user', content: `message ${i} #mock chunks=2` }] } });
  }
  let batch = await client.messages.batches.create({ requests });
  assert.equal(batch.type, 'message_batch');
  assert.ok(batch.id.startsWith('msgbatch_'));
  assert.equal(batch.results_url, null);

  const deadline = Date.now() + 120_000;
  while (batch.processing_status !== 'ended') {
    assert.ok(Date.now() < deadline, `batch still ${batch.processing_status} with ${JSON.stringify(batch.request_counts)}`);
    await new Promise((r) => setTimeout(r, 200));
    batch = await client.messages.batches.retrieve(batch.id);
  }
  assert.deepEqual(batch.request_counts, { processing: 0, succeeded: m, errored: 0, canceled: 0, expired: 0 });
  assert.ok(batch.ended_at);

  const seen = new Set();
  for await (const line of await client.messages.batches.results(batch.id)) {
    assert.ok(!seen.has(line.custom_id), `${line.custom_id} twice`);
    seen.add(line.custom_id);
    assert.equal(line.result.type, 'succeeded');
    assert.equal(line.result.message.type, 'message');
    assert.equal(line.result.message.role, 'assistant');
    assert.ok(line.result.message.content[0].text.length > 0);
  }
  assert.equal(seen.size, m);

  const page = await client.messages.batches.list({ limit: 1 });
  assert.equal(page.data[0].id, batch.id);
});
