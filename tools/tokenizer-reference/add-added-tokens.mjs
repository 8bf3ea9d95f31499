// Derives the llama3-added fixture: the trained Llama-3 style tokenizer.json
// plus added tokens with lstrip / rstrip / normalized flags. Ids continue
// after the largest existing id, which is what HF assigns on load.
//
//   node add-added-tokens.mjs <llama3-style/tokenizer.json> > llama3-added/tokenizer.json
import fs from "node:fs";

const tok = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
let next = Math.max(
  ...Object.values(tok.model.vocab),
  ...tok.added_tokens.map((t) => t.id),
) + 1;
const add = (content, flags) =>
  tok.added_tokens.push({
    id: next++,
    content,
    single_word: false,
    lstrip: false,
    rstrip: false,
    normalized: !flags.special,
    special: false,
    ...flags,
  });
add("<mask>", { lstrip: true });
add("[SEP]", { special: true, rstrip: true });
add("hello world", {});
process.stdout.write(JSON.stringify(tok, null, 2));
