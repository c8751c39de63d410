// Runs Hugging Face's own tokenizers library (the Rust crate, through the npm package
// @anush008/tokenizers) for tests/bpe_trainer_test.cpp.
//
//   node tools/hf_tokenizers_check.mjs NODE_MODULES encode TOKENIZER_JSON TEXTS_JSONL
//     loads TOKENIZER_JSON; for each line of TEXTS_JSONL (a JSON string) prints the ids of
//     encode(text, add_special_tokens=false) and then the decoded ids, as one JSON line
//     {"ids": [...], "decoded": "..."}.
//   node tools/hf_tokenizers_check.mjs NODE_MODULES train CORPUS OUT_JSON
//     trains a BPE model with a ByteLevel pre-tokenizer (no prefix space, GPT-2 regex) and the
//     library's default BpeTrainer (min_frequency 0, vocab 30000, no special tokens) on CORPUS,
//     as Tokenizer.train(files) does, and saves the tokenizer to OUT_JSON.
//
// NODE_MODULES is the node_modules folder that holds @anush008/tokenizers (bench/node_modules).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';
import path from 'node:path';

const [nodeModules, mode, a, b] = process.argv.slice(2);
if (!nodeModules || !mode || !a || !b) {
  console.error('usage: hf_tokenizers_check.mjs NODE_MODULES (encode TOKENIZER_JSON TEXTS_JSONL | train CORPUS OUT_JSON)');
  process.exit(2);
}
const require = createRequire(path.join(path.resolve(nodeModules), 'index.js'));
const hf = require('@anush008/tokenizers');

if (mode === 'encode') {
  const tokenizer = hf.Tokenizer.fromFile(a);
  const lines = readFileSync(b, 'utf8').split('\n').filter((l) => l.length > 0);
  for (const line of lines) {
    const text = JSON.parse(line);
    const encoding = await tokenizer.encode(text, null, { addSpecialTokens: false });
    const ids = encoding.getIds();
    const decoded = await tokenizer.decode(ids, false);
    process.stdout.write(JSON.stringify({ ids, decoded }) + '\n');
  }
} else if (mode === 'train') {
  const tokenizer = new hf.Tokenizer(hf.BPE.empty());
  tokenizer.setPreTokenizer(hf.byteLevelPreTokenizer(false, true));
  tokenizer.train([a]);
  tokenizer.save(b, true);
} else {
  console.error(`unknown mode ${mode}`);
  process.exit(2);
}
