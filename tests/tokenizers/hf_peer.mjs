// The Hugging Face side of tests/tokenizer_unicode_test.cpp: Hugging Face's tokenizers library
// (the Rust crate, through @anush008/tokenizers, pinned in package-lock.json beside this file).
//
//   node tests/tokenizers/hf_peer.mjs TOKENIZER_JSON TEXTS_JSONL
//
// For each line of TEXTS_JSONL (a JSON string) prints one JSON line
//   {"ids": [...], "splits": [[begin, end], ...] | null}
// ids: encode(text, add_special_tokens=false); splits: the tokenizer's pre-tokenizer alone on
// the text (no normalizer), each word's offsets in code points of the text (null when the
// tokenizer has no pre-tokenizer).
import { createRequire } from 'node:module';
import { readFileSync } from 'node:fs';

const require = createRequire(import.meta.url);
const { Tokenizer } = require('@anush008/tokenizers');

const [tokenizerPath, textsPath] = process.argv.slice(2);
if (!tokenizerPath || !textsPath) {
  console.error('usage: hf_peer.mjs TOKENIZER_JSON TEXTS_JSONL');
  process.exit(2);
}
const tokenizer = Tokenizer.fromFile(tokenizerPath);
const preTokenizer = tokenizer.getPreTokenizer();
const lines = readFileSync(textsPath, 'utf8').split('\n').filter((l) => l.length > 0);
const out = [];
for (const line of lines) {
  const text = JSON.parse(line);
  const encoding = await tokenizer.encode(text, null, { addSpecialTokens: false });
  const splits = preTokenizer ? preTokenizer.preTokenizeString(text).map(([, o]) => o) : null;
  out.push(JSON.stringify({ ids: encoding.getIds(), splits }));
}
process.stdout.write(out.join('\n') + '\n');
