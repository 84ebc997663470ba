#!/usr/bin/env python3
"""Golden gpt-oss (harmony) prompts for test_chat, rendered with jinja2 from
the published GPT-OSS chat template, as Hugging Face transformers renders
chat templates (trim_blocks, lstrip_blocks, tojson as json.dumps with
non-ASCII kept, strftime_now).

The template is not part of this project. It was read from
models/templates/openai-gpt-oss-120b.jinja of llama.cpp (ggml-org/llama.cpp;
as of upstream commit b204a5a234f4cf0b3f449476da639a5510c6d157, "gpt-oss:
implement harmony parsing (#15181)", read from the mirror
github.com/ye-NX/llama.cpp; 16738 bytes, md5
4d4366d7bcdeb848ad0aebc3ef06d514), llama.cpp's copy of the chat_template
of openai/gpt-oss-120b on Hugging Face. (Some forks edit its generation
prompt to "<|start|>assistant<|channel|>final<|message|>"; the published
one ends with "<|start|>assistant".) Give its path:

    python3 tests/harmony_golden.py TEMPLATE.jinja > tests/harmony_golden.h

Each case's messages, tools and options are mirrored in test_chat.c
(test_harmony_golden); the date is fixed (strftime_now gives DATE) so the
strings do not change from day to day.
"""
import json
import sys

import jinja2
from jinja2.sandbox import ImmutableSandboxedEnvironment

DATE = "2026-12-07"

WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather in a city",
    "parameters": {"type": "object", "properties": {
        "city": {"type": "string", "description": "The city"},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"], "default": "celsius"},
        "days": {"type": "integer", "default": 1},
        "tags": {"type": "array", "items": {"type": "string"}},
        "where": {"type": "object", "properties": {"lat": {"type": "number"}, "lon": {"type": "number"}},
                  "required": ["lat"]},
        "points": {"type": "array", "items": {"type": "object", "properties": {"x": {"type": "number"}}}},
        "exact": {"type": "boolean", "nullable": True},
        "mode": {"type": ["string", "null"]},
        "note": {"type": "string", "nullable": True},
        "any": {},
        "label": {"type": "string", "default": "x \u00e9"},
    }, "required": ["city"]}}}
NOW = {"type": "function", "function": {"name": "now", "description": "The time", "parameters": {}}}

ARGS = {"city": "Paris", "note": "caf\u00e9 \"x\"\n"}
CALL = {"type": "function", "function": {"name": "get_weather", "arguments": ARGS}}

CASES = [
    ("PLAIN", dict(messages=[{"role": "user", "content": "Hello"}], add_generation_prompt=True)),
    ("SYSTEM", dict(messages=[{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi"}],
                    add_generation_prompt=True, reasoning_effort="high")),
    ("TOOLS", dict(messages=[{"role": "system", "content": "Be brief."},
                             {"role": "user", "content": "Weather in Paris?"}],
                   tools=[WEATHER, NOW], add_generation_prompt=True)),
    ("CALL", dict(messages=[{"role": "user", "content": "Weather in Paris?"},
                            {"role": "assistant", "content": "", "tool_calls": [CALL]},
                            {"role": "tool", "content": "{\"temp\": 20}\n\u00b0C"}],
                  tools=[WEATHER], add_generation_prompt=True)),
    ("CALL_THINKING", dict(messages=[{"role": "user", "content": "Weather in Paris?"},
                                     {"role": "assistant", "thinking": "Use the tool.", "tool_calls": [CALL]},
                                     {"role": "tool", "content": "20"}],
                           tools=[WEATHER], add_generation_prompt=True)),
    ("CALL_ANSWERED", dict(messages=[{"role": "user", "content": "Weather in Paris?"},
                                     {"role": "assistant", "thinking": "Use the tool.", "tool_calls": [CALL]},
                                     {"role": "tool", "content": "20"},
                                     {"role": "assistant", "content": "It is 20."},
                                     {"role": "user", "content": "Thanks"}],
                           tools=[WEATHER], add_generation_prompt=True)),
    ("MULTI", dict(messages=[{"role": "user", "content": "2+2?"},
                             {"role": "assistant", "thinking": "Add them.", "content": "4"},
                             {"role": "user", "content": "And 3+3?"}],
                   add_generation_prompt=True, reasoning_effort="low")),
    ("WHOLE", dict(messages=[{"role": "user", "content": "2+2?"},
                             {"role": "assistant", "thinking": "Add them.", "content": "4"}],
                   add_generation_prompt=False)),
]


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def raise_exception(msg):
    raise jinja2.exceptions.TemplateError(msg)


def c_string(s):
    out = []
    for ch in s:
        out.append({"\\": "\\\\", "\"": "\\\"", "\n": "\\n", "?": "\\?"}.get(ch, ch))
    return "\"" + "".join(out) + "\""


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: DATE
    tmpl = env.from_string(open(sys.argv[1], encoding="utf-8").read())
    print("// Generated by tests/harmony_golden.py from the published gpt-oss chat template (see there); do not edit.")
    print("#define HARMONY_GOLDEN_DATE " + c_string(DATE))
    for name, kw in CASES:
        text = tmpl.render(**kw)
        print("#define HARMONY_GOLDEN_%s %s" % (name, c_string(text)))


if __name__ == "__main__":
    main()
