// The official openai SDK against `distill serve` (driven by tests/serve_sdk_test.cpp):
//   node sdk_test.mjs BASE_URL KEY LIMITED_KEY MODEL FAULTY_BASE_URL
// Prints "ok <check>" per passing check; exits non-zero on the first failure.
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const [baseURL, key, limitedKey, model, faultyURL] = process.argv.slice(2);
const client = new OpenAI({ baseURL, apiKey: key, maxRetries: 0, timeout: 60000 });

async function check(name, fn) {
  try {
    await fn();
    console.log(`ok ${name}`);
  } catch (e) {
    console.error(`FAILED ${name}: ${e.stack || e}`);
    process.exit(1);
  }
}

async function expectError(name, ErrorClass, status, fn, param) {
  await check(name, async () => {
    let caught = null;
    try {
      await fn();
    } catch (e) {
      caught = e;
    }
    assert.ok(caught, 'expected an error');
    assert.ok(caught instanceof ErrorClass, `expected ${ErrorClass.name}, got ${caught.constructor.name}: ${caught.message}`);
    assert.equal(caught.status, status);
    assert.equal(typeof caught.error?.message, 'string');
    if (param) assert.equal(caught.param, param);
  });
}

await check('models.list', async () => {
  const models = await client.models.list();
  assert.deepEqual(models.data.map((m) => m.id), [model]);
});

let greedyCompletion = '';
await check('completions with n, seed and logprobs', async () => {
  const req = { model, prompt: 'hello there', max_tokens: 8, n: 2, seed: 1, logprobs: 3 };
  const a = await client.completions.create(req);
  const b = await client.completions.create(req);
  assert.equal(a.object, 'text_completion');
  assert.equal(a.choices.length, 2);
  assert.deepEqual(a.choices.map((c) => c.text), b.choices.map((c) => c.text));
  assert.equal(a.usage.completion_tokens, 16);
  assert.equal(a.choices[0].logprobs.tokens.length, 8);
  for (const lp of a.choices[0].logprobs.token_logprobs) assert.ok(lp <= 0);
  const g = await client.completions.create({ model, prompt: 'hello there', max_tokens: 12, temperature: 0 });
  greedyCompletion = g.choices[0].text;
});

await check('completions with a token-id prompt and echo', async () => {
  const r = await client.completions.create({ model, prompt: [104, 105], max_tokens: 4, echo: true, logprobs: 1 });
  assert.ok(r.choices[0].text.startsWith('hi'), r.choices[0].text);
  assert.equal(r.choices[0].logprobs.token_logprobs[0], null);
  assert.equal(r.choices[0].logprobs.tokens.length, 6);
});

await check('completions streaming', async () => {
  const stream = await client.completions.create({ model, prompt: 'hello there', max_tokens: 12, temperature: 0, stream: true });
  let text = '';
  let finish = null;
  for await (const chunk of stream) {
    text += chunk.choices[0]?.text ?? '';
    finish = chunk.choices[0]?.finish_reason ?? finish;
  }
  assert.equal(text, greedyCompletion);
  assert.equal(finish, 'length');
});

const messages = [{ role: 'system', content: 'You are terse.' }, { role: 'user', content: 'Name a colour.' }];
let greedyChat = '';
await check('chat with logprobs and top_logprobs', async () => {
  const r = await client.chat.completions.create({ model, messages, max_tokens: 10, temperature: 0, logprobs: true, top_logprobs: 2 });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.role, 'assistant');
  assert.equal(typeof r.choices[0].message.content, 'string');
  assert.equal(r.choices[0].logprobs.content.length, 10);
  for (const t of r.choices[0].logprobs.content) {
    assert.equal(t.top_logprobs.length, 2);
    assert.ok(t.logprob <= 0);
    assert.ok(Array.isArray(t.bytes));
  }
  greedyChat = r.choices[0].message.content;
});

await check('chat streaming with usage', async () => {
  const stream = await client.chat.completions.create({
    model, messages, max_tokens: 10, temperature: 0, stream: true, stream_options: { include_usage: true },
    logprobs: true, top_logprobs: 1,
  });
  let text = '';
  let usage = null;
  let lpTokens = 0;
  let role = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    role = c.delta?.role ?? role;
    text += c.delta?.content ?? '';
    lpTokens += c.logprobs?.content?.length ?? 0;
  }
  assert.equal(role, 'assistant');
  assert.equal(text, greedyChat);
  assert.equal(lpTokens, 10);
  assert.equal(usage.completion_tokens, 10);
});

await expectError('400 bad parameter (BadRequestError)', OpenAI.BadRequestError, 400,
  () => client.completions.create({ model, prompt: 'x', max_tokens: 100000 }), 'max_tokens');
await expectError('400 wrong type (BadRequestError)', OpenAI.BadRequestError, 400,
  () => client.chat.completions.create({ model, messages, temperature: 'hot' }), 'temperature');
await check('400 malformed JSON', async () => {
  const res = await fetch(`${baseURL}/chat/completions`, {
    method: 'POST', headers: { Authorization: `Bearer ${key}`, 'Content-Type': 'application/json' }, body: '{"model": ',
  });
  assert.equal(res.status, 400);
  const body = await res.json();
  assert.equal(typeof body.error.message, 'string');
});
await expectError('401 wrong key (AuthenticationError)', OpenAI.AuthenticationError, 401,
  () => new OpenAI({ baseURL, apiKey: 'sk-not-a-key', maxRetries: 0 }).models.list());
await expectError('404 unknown model (NotFoundError)', OpenAI.NotFoundError, 404,
  () => client.chat.completions.create({ model: 'gpt-nonexistent', messages }), 'model');
await expectError('413 body too large (APIError)', OpenAI.APIError, 413,
  () => client.completions.create({ model, prompt: 'a'.repeat(40000), max_tokens: 1 }));
await check('429 rate limit (RateLimitError) with retry-after', async () => {
  const limited = new OpenAI({ baseURL, apiKey: limitedKey, maxRetries: 0 });
  let caught = null;
  for (let i = 0; i < 4 && !caught; i++) {
    try {
      await limited.completions.create({ model, prompt: 'x', max_tokens: 1 });
    } catch (e) {
      caught = e;
    }
  }
  assert.ok(caught instanceof OpenAI.RateLimitError, `got ${caught}`);
  assert.equal(caught.status, 429);
  assert.ok(Number(caught.headers.get('retry-after')) >= 1);
});
await expectError('500 server error (InternalServerError)', OpenAI.InternalServerError, 500,
  () => new OpenAI({ baseURL: faultyURL, apiKey: key, maxRetries: 0 }).completions.create({ model, prompt: 'x', max_tokens: 2 }));

await check('still serving after the errors', async () => {
  const r = await client.completions.create({ model, prompt: 'hello there', max_tokens: 12, temperature: 0 });
  assert.equal(r.choices[0].text, greedyCompletion);
});
