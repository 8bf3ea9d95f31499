#!/bin/sh
# Rewrites test/data/trainer/chat_fixtures.json from chat_templates.json and
# chat_conversations.jsonl. Needs node (npm ci here first) and /usr/bin/python3
# with Jinja2 (Debian: python3-jinja2).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data="$here/../../../../test/data/trainer"
js=$(mktemp)
trap 'rm -f "$js"' EXIT
node "$here/render.mjs" "$data" > "$js"
/usr/bin/python3 "$here/render_jinja2.py" "$data" "$js"
