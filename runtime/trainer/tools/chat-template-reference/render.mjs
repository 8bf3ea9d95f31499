// Renders every supported chat template of test/data/trainer/chat_templates.json
// over every conversation of chat_conversations.jsonl with @huggingface/jinja
// (the Jinja engine of transformers.js; trim_blocks, lstrip_blocks and a
// raise_exception global, like transformers' apply_chat_template), with and
// without the generation prompt, and prints one JSON list to stdout.
// make-fixtures.sh merges it with the Python Jinja2 rendering.
//
//   node render.mjs DATA_DIR > renderings.json
import { Template } from "@huggingface/jinja";
import fs from "node:fs";
import path from "node:path";

const dataDir = process.argv[2];
const templates = JSON.parse(fs.readFileSync(path.join(dataDir, "chat_templates.json"), "utf8"));
const conversations = fs
  .readFileSync(path.join(dataDir, "chat_conversations.jsonl"), "utf8")
  .split("\n")
  .filter((l) => l.trim() !== "")
  .map((l) => JSON.parse(l).messages);

function render(t, messages, addGenerationPrompt) {
  return new Template(t.chat_template).render({
    messages,
    bos_token: t.bos_token,
    eos_token: t.eos_token,
    add_generation_prompt: addGenerationPrompt,
  });
}

const out = [];
for (const t of templates) {
  if (t.refuse) continue;
  for (let c = 0; c < conversations.length; ++c) {
    const rec = { template: t.name, conversation: c };
    try {
      rec.text = render(t, conversations[c], false);
      rec.text_generation = render(t, conversations[c], true);
    } catch (e) {
      rec.error = e.message;
    }
    out.push(rec);
  }
}
process.stdout.write(JSON.stringify(out) + "\n");
