// The peer of `distill tokenizer bench`: Hugging Face tokenizers (the Rust library, through the
// npm binding @anush008/tokenizers, pinned in package-lock.json) encoding the same file line by
// line with encodeBatch, so per-call JavaScript overhead is spread over the whole file.
// Threads: the Rust side uses rayon; RAYON_NUM_THREADS sets how many (tokenizer_bench.sh sets it
// equal to distill's --threads). Prints one JSON line like distill's.
//   node bench/tokenizer_peer.mjs --tokenizer tokenizer.json --file text.txt [--seconds 3]
import { readFileSync } from 'node:fs';
import { Tokenizer } from '@anush008/tokenizers';

function arg(name, fallback) {
  const i = process.argv.indexOf(name);
  if (i < 0) {
    if (fallback === undefined) throw new Error(`missing ${name}`);
    return fallback;
  }
  return process.argv[i + 1];
}

const tokenizerPath = arg('--tokenizer');
const file = arg('--file');
const seconds = Number(arg('--seconds', '3'));

const loadStart = process.hrtime.bigint();
const tokenizer = Tokenizer.fromFile(tokenizerPath);
const loadSeconds = Number(process.hrtime.bigint() - loadStart) / 1e9;

// Lines without their '\n'; no empty line after a final '\n' (as distill's split_lines).
const text = readFileSync(file, 'utf8');
const lines = text.split('\n');
if (text.endsWith('\n')) lines.pop();
let bytes = 0;
for (const l of lines) bytes += Buffer.byteLength(l, 'utf8');

const options = { addSpecialTokens: false };
// One untimed pass (warms the BPE cache, as distill's bench does) that also counts tokens.
let tokens = 0;
for (const e of await tokenizer.encodeBatch(lines, options)) tokens += e.getIds().length;

let passes = 0;
const cpuStart = process.cpuUsage();  // microseconds, all threads of the process
const start = process.hrtime.bigint();
let elapsed = 0;
while (passes === 0 || elapsed < seconds) {
  await tokenizer.encodeBatch(lines, options);
  passes++;
  elapsed = Number(process.hrtime.bigint() - start) / 1e9;
}
const cpuUsed = process.cpuUsage(cpuStart);
const cpu = (cpuUsed.user + cpuUsed.system) / 1e6;
console.log(JSON.stringify({
  impl: 'hf-tokenizers', tokenizer: tokenizerPath,
  threads: Number(process.env.RAYON_NUM_THREADS || 0), lines: lines.length, bytes, tokens,
  passes, seconds: Number(elapsed.toFixed(3)), cpu_seconds: Number(cpu.toFixed(3)),
  load_seconds: Number(loadSeconds.toFixed(3)),
  mb_per_s: Number((bytes * passes / elapsed / 1e6).toFixed(2)),
  mb_per_cpu_s: Number((bytes * passes / cpu / 1e6).toFixed(2)),
}));
