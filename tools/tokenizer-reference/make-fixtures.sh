#!/bin/sh
# Regenerates test/data/tokenizer: trains the fixture tokenizers with
# bitloom's BPE trainer, builds GPT-2's real tokenizer.json, and records the
# reference ids of tokenizers.js for every case.
#
# Needs `npm ci` (or `npm install`) in this directory and the fixture tool:
#   cmake -G Ninja -B build-tokenizer -DBITLOOM_ENABLE_COMPILER=OFF
#   ninja -C build-tokenizer bitloom-tokenizer-fixture
set -eu
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
tool=${TOOL:-$root/build-tokenizer/test/unit/tokenizer/bitloom-tokenizer-fixture}
data=$root/test/data/tokenizer
cd "$here"
mkdir -p "$data/gpt2-style" "$data/llama3-style" "$data/llama3-added" "$data/gpt2-real"

"$tool" train "$data/corpus.txt" 1000 gpt2 "$data/gpt2-style/tokenizer.json" \
  --special "<|endoftext|>"
"$tool" train "$data/corpus.txt" 1024 llama3 "$data/llama3-style/tokenizer.json" \
  --bos "<|begin_of_text|>" \
  --special "<|begin_of_text|>" --special "<|end_of_text|>" \
  --special "<|start_header_id|>" --special "<|end_header_id|>" \
  --special "<|eot_id|>"
cat > "$data/llama3-style/tokenizer_config.json" <<'JSON'
{
  "bos_token": "<|begin_of_text|>",
  "eos_token": "<|eot_id|>",
  "clean_up_tokenization_spaces": false,
  "tokenizer_class": "PreTrainedTokenizerFast"
}
JSON
node add-added-tokens.mjs "$data/llama3-style/tokenizer.json" \
  > "$data/llama3-added/tokenizer.json"
node make-gpt2-fixture.mjs > "$data/gpt2-real/tokenizer.json"

for name in gpt2-style llama3-style gpt2-real; do
  node encode.mjs "$data/$name" "$data/cases.jsonl" > "$data/$name/expected.jsonl"
done
node encode.mjs "$data/llama3-added" "$data/cases-added.jsonl" \
  > "$data/llama3-added/expected.jsonl"
