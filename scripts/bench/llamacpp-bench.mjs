#!/usr/bin/env node
// llama.cpp reference numbers for `pipelm bench`, through node-llama-cpp (CPU build, no GPU).
// Loads a GGUF, then runs the same tests as pipelm bench:
//   ppN: evaluate an N-token prompt of random ids (fixed seed) in one call and sample the next
//        token (greedy), timed to the sampled token;
//   tgN: from an empty context and one random token, N greedy single-token steps, EOS ignored.
// Each test: one warm-up run, then --reps timed runs. Prints one JSON object on stdout:
//   {"model": ..., "threads": ..., "tests": [{"test": "pp512", "tps": [...], "mean": x}, ...]}
//
// usage: node llamacpp-bench.mjs --model FILE.gguf [--threads 2] [--n-prompt 512] [--n-gen 128]
//                                [--ctx 1024] [--batch 512] [--reps 1]
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import path from "node:path";

function parseArgs(argv) {
    const opt = { model: "", threads: 2, nPrompt: 512, nGen: 128, ctx: 1024, batch: 512, reps: 1, vocab: 0 };
    const names = {
        "--model": "model", "--threads": "threads", "--n-prompt": "nPrompt", "--n-gen": "nGen",
        "--ctx": "ctx", "--batch": "batch", "--reps": "reps", "--vocab": "vocab",
    };
    for (let i = 0; i < argv.length; i++) {
        const key = names[argv[i]];
        if (!key || i + 1 >= argv.length) throw new Error(`llamacpp-bench: bad argument '${argv[i]}'`);
        opt[key] = key === "model" ? argv[++i] : Number(argv[++i]);
    }
    if (!opt.model) throw new Error("llamacpp-bench: pass --model FILE.gguf");
    return opt;
}

// xorshift64*: fixed-seed random token ids (the speed does not depend on which ids).
function randomTokens(n, nVocab, seed) {
    let s = BigInt(seed) | 1n;
    const mask = (1n << 64n) - 1n;
    const out = [];
    for (let i = 0; i < n; i++) {
        s ^= s >> 12n; s ^= (s << 25n) & mask; s ^= s >> 27n;
        const r = (s * 0x2545F4914F6CDD1Dn) & mask;
        out.push(Number(r % BigInt(nVocab)));
    }
    return out;
}

const opt = parseArgs(process.argv.slice(2));
const llama = await getLlama({ gpu: false, build: "never", logLevel: LlamaLogLevel.error, maxThreads: opt.threads });
const model = await llama.loadModel({ modelPath: path.resolve(opt.model), gpuLayers: 0 });
const context = await model.createContext({
    contextSize: opt.ctx, batchSize: opt.batch, sequences: 1, threads: { ideal: opt.threads, min: opt.threads },
});
const sequence = context.getSequence();
const nVocab = opt.vocab || model.fileInfo.metadata?.tokenizer?.ggml?.tokens?.length;
if (!nVocab) throw new Error("llamacpp-bench: cannot read the vocabulary size; pass --vocab N");
const greedy = { temperature: 0, yieldEogToken: true };  // greedy, generation continues past EOS

async function pp(prompt) {
    await sequence.clearHistory();
    const t0 = process.hrtime.bigint();
    const gen = sequence.evaluate(prompt, greedy);
    const first = await gen.next();
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    await gen.return();
    if (first.done) throw new Error("pp: no token sampled");
    return prompt.length / dt;
}

async function tg(first, n) {
    await sequence.clearHistory();
    const t0 = process.hrtime.bigint();
    const gen = sequence.evaluate([first], greedy);
    for (let i = 0; i < n; i++) {
        const r = await gen.next();
        if (r.done) throw new Error(`tg: generation stopped after ${i} tokens`);
    }
    const dt = Number(process.hrtime.bigint() - t0) / 1e9;
    await gen.return();
    return n / dt;
}

const prompt = randomTokens(opt.nPrompt, nVocab, 42);
const tests = [];
if (opt.nPrompt > 0) tests.push({ test: `pp${opt.nPrompt}`, run: () => pp(prompt) });
if (opt.nGen > 0) tests.push({ test: `tg${opt.nGen}`, run: () => tg(prompt[0], opt.nGen) });
const result = {
    model: path.basename(opt.model), threads: context.currentThreads ?? opt.threads, ctx: context.contextSize,
    batch: context.batchSize, n_vocab: nVocab, tests: [],
};
for (const t of tests) {
    await t.run();  // warm-up
    const tps = [];
    for (let r = 0; r < opt.reps; r++) tps.push(await t.run());
    result.tests.push({ test: t.test, tps, mean: tps.reduce((a, b) => a + b, 0) / tps.length });
}
await context.dispose();
await model.dispose();
console.log(JSON.stringify(result));
