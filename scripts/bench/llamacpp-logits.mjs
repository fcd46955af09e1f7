#!/usr/bin/env node
// llama.cpp's logits of every position of a token list, through node-llama-cpp (CPU build), as a
// raw little-endian float32 file [n_tokens][n_vocab] like `pipelm logits -o`: checks that a GGUF
// (e.g. `pipelm convert` output) loads in llama.cpp and computes what pipelm computes.
// F32 KV cache, flash attention off, one batch: llama.cpp's exact settings.
// Install node-llama-cpp first (scripts/bench/compare-llamacpp.sh shows how).
//
// usage: node llamacpp-logits.mjs MODEL.gguf OUT.f32 ID,ID,...
import { getLlama, LlamaLogLevel } from "node-llama-cpp";
import fs from "node:fs";

const [model, out, ids] = process.argv.slice(2);
if (!model || !out || !ids) throw new Error("usage: node llamacpp-logits.mjs MODEL.gguf OUT.f32 ID,ID,...");
const tokens = ids.split(",").map(Number);
const llama = await getLlama({ gpu: false, logLevel: LlamaLogLevel.error, build: "never" });
const m = await llama.loadModel({ modelPath: model });
const ctx = await m.createContext({
    contextSize: Math.max(256, tokens.length), threads: 1, flashAttention: false, batchSize: Math.max(256, tokens.length),
    experimentalKvCacheKeyType: "F32", experimentalKvCacheValueType: "F32",
});
const res = await ctx.getSequence().controlledEvaluate(tokens.map((t) => [t, { generateNext: { logits: true } }]));
const n_vocab = Math.max(...res.map((r) => Math.max(...r.next.logits.keys()))) + 1;  // every token has a logit
const buf = new Float32Array(tokens.length * n_vocab);
res.forEach((r, i) => { for (const [tok, v] of r.next.logits) buf[i * n_vocab + tok] = v; });
fs.writeFileSync(out, Buffer.from(buf.buffer));
console.log(`llama.cpp: ${tokens.length} x ${n_vocab} logits -> ${out}`);
