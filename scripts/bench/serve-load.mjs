#!/usr/bin/env node
// Load generator for `pipelm serve` (or any OpenAI-compatible server): N requests at concurrency
// C through the npm `openai` client (pinned in scripts/clients/package.json; `npm ci` there,
// as scripts/setup.sh does), streamed, and the result in the layout of vLLM's benchmark_serving.py: request and token
// throughput, then TTFT, TPOT (time per output token after the first), ITL (between streamed
// token events) and E2EL (end-to-end latency), each as mean, median, P90 and P99, and the failures.
//
//   node scripts/bench/serve-load.mjs --base-url http://127.0.0.1:8080 -n 64 -c 16 \
//        --prompt-tokens 32 --max-tokens 64 [--endpoint completions|chat] [--json out.json]
//
// Every request asks for exactly --max-tokens tokens (ignore_eos, as benchmark_serving's random
// dataset does), so throughput does not depend on where a model happens to stop. Prompts are
// distinct (request i starts with its number) and about --prompt-tokens tokens long: one request
// first measures how many tokens a word takes with this model's tokenizer (the server counts them;
// "Total input tokens" is the exact sum).
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';

const { OpenAI } = createRequire(new URL('../clients/package.json', import.meta.url))('openai');

function parseArgs(argv) {
  const o = { baseUrl: 'http://127.0.0.1:8080', n: 64, c: 16, promptTokens: 32, maxTokens: 64, endpoint: 'completions',
              model: '', apiKey: process.env.OPENAI_API_KEY ?? 'unused', json: '', temperature: 0, warmup: 0 };
  const names = { '--base-url': 'baseUrl', '-n': 'n', '--num-prompts': 'n', '-c': 'c', '--concurrency': 'c',
                  '--prompt-tokens': 'promptTokens', '--max-tokens': 'maxTokens', '--endpoint': 'endpoint',
                  '--model': 'model', '--api-key': 'apiKey', '--json': 'json', '--temperature': 'temperature',
                  '--warmup': 'warmup' };
  for (let i = 0; i < argv.length; ++i) {
    const key = names[argv[i]];
    if (argv[i] === '-h' || argv[i] === '--help') {
      console.log('usage: serve-load.mjs [--base-url URL] [-n N] [-c C] [--prompt-tokens P] [--max-tokens M]\n' +
                  '       [--endpoint completions|chat] [--model ID] [--api-key K] [--temperature T] [--warmup W] [--json FILE]');
      process.exit(0);
    }
    if (!key || i + 1 >= argv.length) {
      console.error(`serve-load.mjs: unknown flag or missing value: ${argv[i]} (see --help)`);
      process.exit(2);
    }
    const v = argv[++i];
    o[key] = typeof o[key] === 'number' ? Number(v) : v;
  }
  for (const k of ['n', 'c', 'promptTokens', 'maxTokens'])
    if (!Number.isInteger(o[k]) || o[k] < 1) {
      console.error(`serve-load.mjs: ${k} must be a positive integer`);
      process.exit(2);
    }
  if (o.endpoint !== 'completions' && o.endpoint !== 'chat') {
    console.error('serve-load.mjs: --endpoint must be completions or chat');
    process.exit(2);
  }
  return o;
}

const WORDS = ('the whale sea ship captain harpoon sailor ocean wind deck mast rope storm island harbor voyage ' +
               'nation people congress law freedom union state economy work future history world').split(' ');

function prompt(i, words) {
  const w = [`Request ${i}:`];
  for (let k = 0; w.length < words; ++k) w.push(WORDS[(i * 7 + k * 13) % WORDS.length]);
  return w.join(' ');
}

// Words per prompt so that a prompt has about `tokens` tokens, from one non-streamed probe.
async function wordsFor(client, o, tokens) {
  const probe = 8;  // words; short enough for a small --ctx
  const body = { model: o.model, max_tokens: 1 };
  if (o.endpoint === 'chat') body.messages = [{ role: 'user', content: prompt(0, probe) }];
  else body.prompt = prompt(0, probe);
  const api = o.endpoint === 'chat' ? client.chat.completions : client.completions;
  const r = await api.create(body);
  const perWord = r.usage.prompt_tokens / probe;
  return Math.max(2, Math.round(tokens / perWord));
}

function stats(v) {
  const s = [...v].sort((a, b) => a - b);
  const q = (p) => (s.length ? s[Math.min(s.length - 1, Math.max(0, Math.ceil(p * s.length) - 1))] : NaN);
  const mean = s.length ? s.reduce((a, b) => a + b, 0) / s.length : NaN;
  return { mean, median: s.length ? (s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN,
           p90: q(0.9), p99: q(0.99) };
}

async function one(client, o, i) {
  const t0 = performance.now();
  const r = { ok: false, ttft: NaN, itl: [], e2el: NaN, promptTokens: 0, outputTokens: 0, error: '' };
  const body = { model: o.model, max_tokens: o.maxTokens, temperature: o.temperature, ignore_eos: true, stream: true,
                 stream_options: { include_usage: true } };
  if (o.endpoint === 'chat') body.messages = [{ role: 'user', content: prompt(i, o.words) }];
  else body.prompt = prompt(i, o.words);
  try {
    const api = o.endpoint === 'chat' ? client.chat.completions : client.completions;
    const stream = await api.create(body);
    let last = 0;
    for await (const chunk of stream) {
      if (chunk.usage) {
        r.promptTokens = chunk.usage.prompt_tokens;
        r.outputTokens = chunk.usage.completion_tokens;
      }
      // A token event: a choice that is not the closing one (finish_reason) nor chat's opening one
      // (role). pipelm sends one per token, its text possibly empty (incomplete UTF-8).
      const c = chunk.choices?.[0];
      if (!c || c.finish_reason || c.delta?.role) continue;
      const now = performance.now();
      if (Number.isNaN(r.ttft)) r.ttft = now - t0;
      else r.itl.push(now - last);
      last = now;
    }
    r.e2el = performance.now() - t0;
    r.ok = r.outputTokens > 0;
    if (!r.ok) r.error = 'no usage in the stream';
  } catch (e) {
    r.error = `${e.status ?? ''} ${e.message ?? e}`.trim();
  }
  return r;
}

async function main() {
  const o = parseArgs(process.argv.slice(2));
  const client = new OpenAI({ baseURL: `${o.baseUrl}/v1`, apiKey: o.apiKey, maxRetries: 0, timeout: 3600e3 });
  if (!o.model) o.model = (await client.models.list()).data[0].id;
  o.words = await wordsFor(client, o, o.promptTokens);
  for (let i = 0; i < o.warmup; ++i) await one(client, { ...o, maxTokens: 4 }, -1 - i);
  const results = new Array(o.n);
  let next = 0;
  const t0 = performance.now();
  await Promise.all(Array.from({ length: Math.min(o.c, o.n) }, async () => {
    while (next < o.n) {
      const i = next++;
      results[i] = await one(client, o, i);
    }
  }));
  const dur = (performance.now() - t0) / 1000;
  const ok = results.filter((r) => r.ok);
  const input = ok.reduce((a, r) => a + r.promptTokens, 0), output = ok.reduce((a, r) => a + r.outputTokens, 0);
  const ttft = stats(ok.map((r) => r.ttft));
  const tpot = stats(ok.filter((r) => r.outputTokens > 1).map((r) => (r.e2el - r.ttft) / (r.outputTokens - 1)));
  const itl = stats(ok.flatMap((r) => r.itl));
  const e2el = stats(ok.map((r) => r.e2el));
  const errors = results.filter((r) => !r.ok).map((r) => r.error);
  const row = (k, v) => console.log(k.padEnd(40) + (typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v));
  const title = (t) => console.log(t.length >= 50 ? t : (`${'-'.repeat((50 - t.length) >> 1)}${t}`).padEnd(50, '-'));
  console.log('============ Serving Benchmark Result ============');
  row('Successful requests:', ok.length);
  row('Failed requests:', errors.length);
  row('Maximum request concurrency:', o.c);
  row('Benchmark duration (s):', dur);
  row('Total input tokens:', input);
  row('Total generated tokens:', output);
  row('Request throughput (req/s):', ok.length / dur);
  row('Output token throughput (tok/s):', output / dur);
  row('Total Token throughput (tok/s):', (input + output) / dur);
  for (const [name, long, s] of [['TTFT', 'Time to First Token', ttft], ['TPOT', 'Time per Output Token (excl. 1st token)', tpot],
                                 ['ITL', 'Inter-token Latency', itl], ['E2EL', 'End-to-end Latency', e2el]]) {
    title(long);
    row(`Mean ${name} (ms):`, s.mean);
    row(`Median ${name} (ms):`, s.median);
    row(`P90 ${name} (ms):`, s.p90);
    row(`P99 ${name} (ms):`, s.p99);
  }
  console.log('='.repeat(50));
  for (const e of [...new Set(errors)].slice(0, 5)) console.log(`error: ${e}`);
  if (o.json)
    writeFileSync(o.json, JSON.stringify({ n: o.n, concurrency: o.c, duration_s: dur, completed: ok.length, failed: errors.length,
      total_input_tokens: input, total_output_tokens: output, request_throughput: ok.length / dur,
      output_throughput: output / dur, total_token_throughput: (input + output) / dur,
      ttft_ms: ttft, tpot_ms: tpot, itl_ms: itl, e2el_ms: e2el, errors }) + '\n');
  process.exit(errors.length ? 1 : 0);
}

await main();
