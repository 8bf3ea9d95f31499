// Prints reference ids from tokenizers.js (@huggingface/tokenizers, the
// tokenizer core of transformers.js) for each case of a .jsonl file.
//
//   node encode.mjs <tokenizer.json | dir with tokenizer.json> <cases.jsonl>
//
// Each input line is a JSON string (so newlines and tabs survive). Each output
// line is {"text", "ids", "ids_with_special", "decoded"}: ids without and with
// the post-processor's special tokens, and the decoding of "ids" (special
// tokens kept, no clean_up_tokenization_spaces, as HF tokenizers' decode).
import { Tokenizer } from "@huggingface/tokenizers";
import fs from "node:fs";
import path from "node:path";

const [tokPath, casesPath] = process.argv.slice(2);
if (!tokPath || !casesPath) {
  console.error("usage: node encode.mjs <tokenizer.json|dir> <cases.jsonl>");
  process.exit(2);
}
let jsonPath = tokPath;
let config = {};
if (fs.statSync(tokPath).isDirectory()) {
  jsonPath = path.join(tokPath, "tokenizer.json");
  const cfgPath = path.join(tokPath, "tokenizer_config.json");
  if (fs.existsSync(cfgPath)) config = JSON.parse(fs.readFileSync(cfgPath, "utf8"));
}
const tokenizer = new Tokenizer(JSON.parse(fs.readFileSync(jsonPath, "utf8")), config);

const lines = fs.readFileSync(casesPath, "utf8").split("\n").filter((l) => l.length > 0);
for (const line of lines) {
  const text = JSON.parse(line);
  const ids = tokenizer.encode(text, { add_special_tokens: false }).ids;
  const withSpecial = tokenizer.encode(text, { add_special_tokens: true }).ids;
  const decoded =
    ids.length === 0
      ? ""
      : tokenizer.decode(ids, { skip_special_tokens: false, clean_up_tokenization_spaces: false });
  process.stdout.write(JSON.stringify({ text, ids, ids_with_special: withSpecial, decoded }) + "\n");
}
