// The serve tests' client: drives `pipelm serve` with the npm `openai` package (pinned in
// scripts/clients/package.json) and prints one JSON object with what it saw, for serve_test.cc to
// check. Usage: node client.mjs SCENARIO BASE_URL MODEL [N C]
//   basic       chat and completions, streamed and not, a stop string, /v1/models, two 4xx errors
//   invariance  16 greedy requests (different prompts and lengths, both endpoints, streamed and
//               not) one at a time, then all 16 at once: the texts must be byte-identical
//   load N C    N requests at concurrency C, one in ten aborted by its client after its first
//               streamed token; every finished answer is compared with the same request run alone
import { createRequire } from 'node:module';

// The pinned client lives in scripts/clients (npm ci there; scripts/setup.sh does).
const { OpenAI } = createRequire(new URL('../../scripts/clients/package.json', import.meta.url))('openai');

const [scenario, base, model, nArg, cArg] = process.argv.slice(2);
const client = new OpenAI({
  baseURL: `${base}/v1`,
  apiKey: process.env.PIPELM_API_KEY ?? 'unused',
  maxRetries: 0,
  timeout: 120000,
});

const PROMPTS = [
  'Call me Ishmael.', 'The whale', 'It was the best of times', 'Mr. Speaker, Mr. President',
  'Towards thee I roll, thou all-destroying but unconquering whale', 'The state of the Union is',
  'Queequeg', 'There she blows!', 'We the people', 'Ahab stood upon the quarter-deck',
  'In the year of our Lord', 'The harpooneer', 'Our economy', 'Starbuck said', 'The sea', 'And God created',
];

// One request; returns {text, finish, usage, chunks}. kind: chat | completion; abortAfterFirst:
// the client aborts once it has the first piece of text.
async function run({ kind, prompt, maxTokens, stream, stop, abortAfterFirst = false }) {
  const common = { model, max_tokens: maxTokens, temperature: 0, stop };
  if (kind === 'chat') common.messages = [{ role: 'system', content: 'You are a sailor.' }, { role: 'user', content: prompt }];
  else common.prompt = prompt;
  const api = kind === 'chat' ? client.chat.completions : client.completions;
  if (!stream) {
    const r = await api.create(common);
    const c = r.choices[0];
    return { text: kind === 'chat' ? c.message.content : c.text, finish: c.finish_reason, usage: r.usage, object: r.object };
  }
  const s = await api.create({ ...common, stream: true, stream_options: { include_usage: true } });
  let text = '', finish = null, usage = null, chunks = 0, aborted = false;
  for await (const chunk of s) {
    ++chunks;
    if (chunk.usage) usage = chunk.usage;
    const c = chunk.choices[0];
    if (!c) continue;
    const piece = kind === 'chat' ? (c.delta?.content ?? '') : (c.text ?? '');
    text += piece;
    if (c.finish_reason) finish = c.finish_reason;
    if (abortAfterFirst && piece.length > 0) {
      s.controller.abort();
      aborted = true;
      break;
    }
  }
  return { text, finish, usage, chunks, aborted };
}

async function status(promise) {
  try {
    await promise;
    return 200;
  } catch (e) {
    return e instanceof OpenAI.APIError ? (e.status ?? -1) : -2;
  }
}

async function basic() {
  const out = {};
  out.models = (await client.models.list()).data.map((m) => m.id);
  for (const kind of ['chat', 'completion'])
    for (const stream of [false, true])
      out[`${kind}_${stream ? 'stream' : 'plain'}`] = await run({ kind, prompt: 'Call me Ishmael.', maxTokens: 12, stream });
  // Stop at the first word of the plain completion after its first one.
  const words = out.completion_plain.text.trim().split(/\s+/);
  out.stop_word = words.length > 1 ? ' ' + words[1] : words[0];
  for (const stream of [false, true])
    out[`stop_${stream ? 'stream' : 'plain'}`] = await run({ kind: 'completion', prompt: 'Call me Ishmael.', maxTokens: 12, stream, stop: [out.stop_word] });
  out.unknown_model_status = await status(client.completions.create({ model: 'gpt-4', prompt: 'x', max_tokens: 1 }));
  out.zero_tokens_status = await status(client.completions.create({ model, prompt: 'x', max_tokens: 0 }));
  return out;
}

function workload(n) {
  const reqs = [];
  for (let i = 0; i < n; ++i)
    reqs.push({ kind: i % 2 ? 'completion' : 'chat', prompt: PROMPTS[i % PROMPTS.length], maxTokens: 4 + ((i * 5) % 21), stream: i % 4 < 2 });
  return reqs;
}

async function invariance() {
  const reqs = workload(16);
  const alone = [];
  for (const r of reqs) alone.push(await run(r));
  const t0 = Date.now();
  const together = await Promise.all(reqs.map(run));
  const mismatches = [];
  reqs.forEach((r, i) => {
    if (alone[i].text !== together[i].text || alone[i].finish !== together[i].finish)
      mismatches.push({ i, alone: alone[i].text, together: together[i].text });
  });
  return { n: reqs.length, mismatches, together_s: (Date.now() - t0) / 1000, sample: alone[0].text, lengths: alone.map((a) => a.text.length) };
}

async function load(n, concurrency) {
  // References: each distinct request alone, before the load.
  const kinds = workload(8);
  const ref = [];
  for (const r of kinds) ref.push(await run(r));
  const res = { n, concurrency, ok: 0, aborted: 0, wrong: [], errors: [] };
  let next = 0;
  async function worker() {
    while (next < n) {
      const i = next++;
      const base = kinds[i % kinds.length];
      const abort = i % 10 === 9;
      const r = { ...base, maxTokens: abort ? 200 : base.maxTokens, stream: abort ? true : base.stream, abortAfterFirst: abort };
      try {
        const got = await run(r);
        if (abort) {
          if (got.aborted) ++res.aborted;
          else res.errors.push({ i, error: 'the stream ended before the client aborted it' });
        } else if (got.text !== ref[i % kinds.length].text || got.finish !== ref[i % kinds.length].finish) {
          res.wrong.push({ i, got: got.text, want: ref[i % kinds.length].text });
        } else {
          ++res.ok;
        }
      } catch (e) {
        res.errors.push({ i, status: e.status ?? null, error: String(e.message ?? e) });
      }
    }
  }
  const t0 = Date.now();
  await Promise.all(Array.from({ length: concurrency }, worker));
  res.seconds = (Date.now() - t0) / 1000;
  return res;
}

let result;
if (scenario === 'basic') result = await basic();
else if (scenario === 'invariance') result = await invariance();
else if (scenario === 'load') result = await load(Number(nArg), Number(cArg));
else {
  console.error(`client.mjs: unknown scenario '${scenario}' (basic, invariance, load N C)`);
  process.exit(2);
}
console.log(JSON.stringify(result));
