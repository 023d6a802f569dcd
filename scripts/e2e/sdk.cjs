// One streamed request through an official Node SDK, for make e2e: the
// OpenAI or the Anthropic client, pointed at an edge. It prints one JSON
// line: the streamed text, the x-meridian-route header, the event count.
// Run with NODE_PATH=scripts/sdktest/node/node_modules (the pinned SDKs).
//
//   node scripts/e2e/sdk.cjs openai|anthropic BASE_URL KEY MODEL [LOCATION]
const [kind, baseURL, apiKey, model, location] = process.argv.slice(2);
const headers = location ? { 'X-Meridian-Client-Location': location } : {};

async function main() {
  const out = { text: '', route: '', events: 0 };
  if (kind === 'openai') {
    const OpenAI = require('openai');
    const client = new OpenAI({ baseURL: baseURL + '/v1', apiKey, maxRetries: 0, defaultHeaders: headers });
    const { data: stream, response } = await client.chat.completions
      .create({ model, max_tokens: 12, stream: true, messages: [{ role: 'user', content: 'hello' }] })
      .withResponse();
    out.route = response.headers.get('x-meridian-route') || '';
    for await (const chunk of stream) {
      out.events++;
      out.text += chunk.choices[0]?.delta?.content || '';
    }
  } else if (kind === 'anthropic') {
    const Anthropic = require('@anthropic-ai/sdk');
    const client = new Anthropic({ baseURL, apiKey, maxRetries: 0, defaultHeaders: headers });
    const { data: stream, response } = await client.messages
      .create({ model, max_tokens: 12, stream: true, messages: [{ role: 'user', content: 'hello' }] })
      .withResponse();
    out.route = response.headers.get('x-meridian-route') || '';
    for await (const ev of stream) {
      out.events++;
      if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') out.text += ev.delta.text;
    }
  } else {
    throw new Error('unknown SDK ' + kind);
  }
  console.log(JSON.stringify(out));
}

main().catch((err) => {
  console.error(String(err && err.stack || err));
  process.exit(1);
});
