#!/usr/bin/python3
"""Reference chat-template renderings for bitloom's trainer tests.

Renders every supported template of DATA_DIR/chat_templates.json over every
conversation of DATA_DIR/chat_conversations.jsonl with Python Jinja2 set up
as transformers' apply_chat_template does (ImmutableSandboxedEnvironment,
trim_blocks, lstrip_blocks, loopcontrols, a raise_exception global), compares
each rendering with @huggingface/jinja's (JS_RENDERINGS, from render.mjs),
and writes DATA_DIR/chat_fixtures.json.

Each fixture holds the text without and with the generation prompt (or the
exception the template raises) and each assistant turn's expected loss span,
found from the template alone: the turn's content is replaced by a sentinel,
the sentinel's offset is where the span starts (everything before it, the
turn header, is the same in both renderings), and the span ends with the
template's end-of-turn marker (the first one after the start; eos_token-
terminated turns use the eos). Where the prefix rendering
render(messages[:k], add_generation_prompt=True) is a prefix of
render(messages[:k+1]), the span is checked against that difference too.

Python Jinja2 is authoritative (it is what transformers runs); a fixture
where @huggingface/jinja renders differently records the JS text under
"js_differs" (one known case: JS compares "" != false as false, so an empty
Llama-2 system message loses its <<SYS>> block there).

    render_jinja2.py DATA_DIR JS_RENDERINGS
"""

import json
import os
import sys

from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment

SENTINEL = "\u27e6BITLOOMSPAN\u27e7"


class TemplateException(Exception):
    pass


def raise_exception(message):
    raise TemplateException(message)


def compile_template(source):
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
    env.globals["raise_exception"] = raise_exception
    return env.from_string(source)


def render(t, messages, add_generation_prompt):
    return compile_template(t["chat_template"]).render(
        messages=messages, bos_token=t["bos_token"], eos_token=t["eos_token"],
        add_generation_prompt=add_generation_prompt)


def spans(t, messages, text):
    end_marker = t["end_of_turn"]
    out = []
    for k, m in enumerate(messages):
        if m["role"] != "assistant":
            continue
        probe = [dict(x) for x in messages]
        probe[k]["content"] = SENTINEL
        start = render(t, probe, False).index(SENTINEL)
        end = text.index(end_marker, start) + len(end_marker)
        span = text[start:end]
        try:
            before = render(t, messages[:k], True)
            after = render(t, messages[: k + 1], False)
        except TemplateException:
            before = after = None
        if after is not None and after.startswith(before) and len(before) <= start:
            diff = after[len(before):]
            cut = diff.index(end_marker) + len(end_marker)
            prefix = t.get("assistant_prefix", "")
            assert diff[:cut] == prefix + span, (t["name"], k, diff, span)
        out.append({"message": k, "start": len(text[:start].encode()), "text": span})
    return out


def main():
    data_dir, js_path = sys.argv[1], sys.argv[2]
    templates = json.load(open(os.path.join(data_dir, "chat_templates.json"), encoding="utf-8"))
    conversations = [json.loads(line)["messages"]
                     for line in open(os.path.join(data_dir, "chat_conversations.jsonl"), encoding="utf-8")
                     if line.strip()]
    js = {(r["template"], r["conversation"]): r for r in json.load(open(js_path, encoding="utf-8"))}
    fixtures = []
    differ = 0
    for t in templates:
        if t.get("refuse"):
            continue
        for c, messages in enumerate(conversations):
            rec = {"template": t["name"], "conversation": c}
            try:
                rec["text"] = render(t, messages, False)
                rec["text_generation"] = render(t, messages, True)
                rec["targets"] = spans(t, messages, rec["text"])
            except TemplateException as e:
                rec = {"template": t["name"], "conversation": c, "error": str(e)}
            other = js[(t["name"], c)]
            mine = {k: rec.get(k) for k in ("text", "text_generation", "error")}
            theirs = {k: other.get(k) for k in ("text", "text_generation", "error")}
            if mine != theirs:
                rec["js_differs"] = theirs
                differ += 1
            fixtures.append(rec)
    with open(os.path.join(data_dir, "chat_fixtures.json"), "w", encoding="utf-8") as f:
        json.dump(fixtures, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"wrote {len(fixtures)} fixtures ({differ} where @huggingface/jinja differs)")


if __name__ == "__main__":
    main()
