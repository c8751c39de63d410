#!/usr/bin/env python3
"""Generates the chat-template fixtures of tests/chat_template_test.cpp with Jinja2 itself.

Renders every chat template (tests/fixtures/chat/templates/*.jinja, written from the published
templates of Llama 3/3.1, Mistral Instruct, ChatML, Qwen2 and Qwen2.5, and the Qwen3
tokenizer_config.json of tests/data) over a set of conversations, and a set of small
templates that exercise one Jinja feature each, in the environment Hugging Face transformers
renders chat templates with: ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
with loopcontrols, its own tojson filter (json.dumps, ensure_ascii=False, keys unsorted), the
raise_exception and strftime_now globals and the {% generation %} tag. The render variables are
transformers': messages, tools=None, documents=None, add_generation_prompt, the special tokens,
then the caller's keyword arguments.

Writes tests/fixtures/chat/cases.json and tests/fixtures/chat/features.json: each case is the
expected text, or "error" with Jinja2's exception when it raised (our renderer must raise too).

Needs Debian's python3-jinja2 (apt-get install python3-jinja2). Run from the project root:
    /usr/bin/python3 tools/gen_chat_fixtures.py [--testdata tests/data]
"""
import argparse
import json
import os

import jinja2
from jinja2 import nodes
from jinja2.exceptions import TemplateError
from jinja2.ext import Extension, loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class GenerationTag(Extension):
    """{% generation %}...{% endgeneration %}: transformers marks assistant text with it."""

    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return nodes.CallBlock(self.call_method("_render"), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def make_env():
    def raise_exception(message):
        raise TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators,
                          sort_keys=sort_keys)

    def strftime_now(format):
        raise TemplateError("strftime_now is not deterministic: not used in fixtures")

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[loopcontrols, GenerationTag])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def render(env, source, variables):
    try:
        return {"expected": env.from_string(source).render(**variables)}
    except Exception as e:  # what Jinja2 raised: our renderer must raise as well
        return {"error": f"{type(e).__name__}: {e}"}


SYSTEM = {"role": "system", "content": "You are a terse assistant."}
TOOLS = [{
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string", "description": "City name"},
                           "unit": {"type": "string", "enum": ["C", "F"]}},
            "required": ["city"],
        },
    },
}]

CONVERSATIONS = {
    "user": [{"role": "user", "content": "Hello!"}],
    "system_user": [SYSTEM, {"role": "user", "content": "What is 2+2?"}],
    "multi_turn": [
        SYSTEM,
        {"role": "user", "content": "Name a prime."},
        {"role": "assistant", "content": "7"},
        {"role": "user", "content": "Another one?"},
    ],
    "no_system_multi_turn": [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello! How can I help?"},
        {"role": "user", "content": "Tell me a joke."},
        {"role": "assistant", "content": "Why did the chicken cross the road?"},
    ],
    "whitespace_unicode": [
        {"role": "system", "content": "  \n Réponds en français. 中文 ok 🙂\t"},
        {"role": "user", "content": "\n\nQuote \"this\" and 'that' \\ {{ not jinja }} {% raw %}\n"},
    ],
    "thinking_history": [
        {"role": "user", "content": "What is 3*4?"},
        {"role": "assistant", "content": "<think>\n3*4 = 12.\n</think>\n\n12"},
        {"role": "user", "content": "And 5*6?"},
    ],
    "thinking_last": [
        {"role": "user", "content": "What is 3*4?"},
        {"role": "assistant", "content": "<think>\nSimple.\n</think>\n\n12"},
    ],
    "reasoning_field": [
        {"role": "user", "content": "Why?"},
        {"role": "assistant", "content": "Because.", "reasoning_content": "Think first."},
    ],
    "tool_round_trip": [
        {"role": "user", "content": "Weather in Paris?"},
        {"role": "assistant", "content": "",
         "tool_calls": [{"type": "function", "function": {
             "name": "get_weather", "arguments": {"city": "Paris", "unit": "C"}}}]},
        {"role": "tool", "content": "{\"temp\": 21}"},
        {"role": "tool", "content": "{\"sky\": \"clear\"}"},
    ],
    "double_user": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"}],
    "system_only": [SYSTEM],
    "empty": [],
}

TEMPLATES = {
    # name: (special tokens, conversations, extra option sets)
    "chatml.jinja": ({}, ["user", "system_user", "multi_turn", "whitespace_unicode", "empty"], [{}]),
    "qwen2.jinja": ({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
                    ["user", "system_user", "multi_turn", "no_system_multi_turn", "whitespace_unicode"], [{}]),
    "qwen2.5.jinja": ({"eos_token": "<|im_end|>", "pad_token": "<|endoftext|>"},
                      ["user", "system_user", "multi_turn", "whitespace_unicode", "tool_round_trip", "empty"],
                      [{}, {"tools": TOOLS}]),
    "llama3.jinja": ({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                     ["user", "system_user", "multi_turn", "whitespace_unicode", "empty"], [{}]),
    "llama3.1.jinja": ({"bos_token": "<|begin_of_text|>", "eos_token": "<|eot_id|>"},
                       ["user", "system_user", "multi_turn", "whitespace_unicode", "tool_round_trip", "empty"],
                       [{}, {"date_string": "01 Jan 2025"}, {"tools": TOOLS},
                        {"tools": TOOLS, "tools_in_user_message": False},
                        {"builtin_tools": ["brave_search", "code_interpreter", "wolfram_alpha"]}]),
    "mistral-instruct-v0.1.jinja": ({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
                                    ["user", "no_system_multi_turn", "system_user", "double_user", "empty"], [{}]),
    "mistral-instruct-system.jinja": ({"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>"},
                                      ["user", "system_user", "multi_turn", "no_system_multi_turn",
                                       "double_user", "system_only"], [{}]),
    "testdata:hf-tokenizers/qwen3/tokenizer_config.json": (
        None, ["user", "system_user", "multi_turn", "whitespace_unicode", "thinking_history",
               "thinking_last", "reasoning_field", "tool_round_trip", "empty"],
        [{}, {"enable_thinking": False}, {"enable_thinking": True}, {"tools": TOOLS}]),
}

# Small templates, one Jinja feature each: (template, variables).
FEATURES = [
    ("a\n  {% if true %}\n    b\n  {% endif %}\nc", {}),
    ("a  {%- if true -%}  b  {%- endif -%}  c", {}),
    ("x\n  {%+ if true %}y{% endif +%}\nz", {}),
    ("  {{ 'v' }}\n  {# comment #}\n{{- '  w' }}", {}),
    ("{# only a comment #}", {}),
    ("line\n{% for i in range(3) %}\n  {{ i }}\n{% endfor %}\nend\n", {}),
    ("{{ '{{' }} {{ '}}' }} { not a tag } {{ {'a': {'b': 1}} }}", {}),
    ("{% for x in items %}{{ loop.index }}/{{ loop.index0 }}/{{ loop.revindex }}/{{ loop.revindex0 }}"
     "/{{ loop.first }}/{{ loop.last }}/{{ loop.length }};{% endfor %}", {"items": ["a", "b", "c"]}),
    ("{% for x in items %}[{{ loop.previtem }}<{{ x }}>{{ loop.nextitem }}]{% endfor %}", {"items": [1, 2, 3]}),
    ("{% for x in items if x is odd %}{{ x }}{% if not loop.last %},{% endif %}{% endfor %}", {"items": [1, 2, 3, 4, 5]}),
    ("{% for x in items %}{% if x == 3 %}{% break %}{% endif %}{% if x == 1 %}{% continue %}{% endif %}{{ x }}{% endfor %}",
     {"items": [0, 1, 2, 3, 4]}),
    ("{% for x in [] %}no{% else %}empty{% endfor %}", {}),
    ("{% for k, v in d|items %}{{ k }}={{ v }} {% endfor %}{% for k in d %}{{ k }}{% endfor %}", {"d": {"z": 1, "a": [2]}}),
    ("{% for a, b in [[1, 2], [3, 4]] %}{{ a + b }} {% endfor %}", {}),
    ("{% set x = 1 %}{% for i in [1, 2] %}{{ x }}{% set x = x + 10 %}{{ x }} {% endfor %}{{ x }}", {}),
    ("{% set ns = namespace(n=0, s='') %}{% for i in range(4) %}{% set ns.n = ns.n + i %}"
     "{% set ns.s = ns.s ~ i %}{% endfor %}{{ ns.n }} {{ ns.s }}", {}),
    ("{% set a, b = 1, 2 %}{{ a }}{{ b }}{% set t = 1, 2 %}{{ t | length }}", {}),
    ("{% set block %}inner {{ 1 + 1 }}{% endset %}[{{ block }}]", {}),
    ("{% if x %}A{% elif y %}B{% else %}C{% endif %}", {"x": 0, "y": ""}),
    ("{% if x %}A{% elif y %}B{% else %}C{% endif %}", {"x": 0, "y": "yes"}),
    ("{{ 1 + 2 * 3 }} {{ (1 + 2) * 3 }} {{ 7 / 2 }} {{ 7 // 2 }} {{ -7 // 2 }} {{ -7 % 3 }} {{ 7 % -3 }}"
     " {{ 2 ** 10 }} {{ 2 ** -1 }} {{ 1.5 + 1 }} {{ 10 / 5 }} {{ -3 }} {{ 1e3 }} {{ 0.1 + 0.2 }}", {}),
    ("{{ 'ab' * 3 }} {{ [1] * 2 }} {{ [1, 2] + [3] }} {{ 'a' ~ 1 ~ none ~ true }} {{ 'x' 'y' }}", {}),
    ("{{ 1 < 2 < 3 }} {{ 3 > 2 > 2 }} {{ 'a' < 'b' }} {{ [1, 2] < [1, 3] }} {{ 1 == 1.0 }} {{ true == 1 }}"
     " {{ none == none }} {{ 'a' != 'a' }} {{ u == u2 }} {{ u == 'x' }}", {}),
    ("{{ 'ell' in 'hello' }} {{ 2 in [1, 2] }} {{ 'k' in {'k': 1} }} {{ 'q' not in 'abc' }} {{ 'x' in u }}", {}),
    ("{{ true and 'x' }} {{ 0 or 'y' }} {{ none or [] }} {{ not [] }} {{ not not 'a' }} {{ u or 'dflt' }}", {}),
    ("{{ 'yes' if 1 else 'no' }}|{{ 'yes' if 0 }}|{{ 'a' if false else 'b' if true else 'c' }}", {}),
    ("{{ none }} {{ true }} {{ false }} {{ [1, 'a', none, true, 2.5] }} {{ {'k': 'v', 'n': none} }} {{ u }}", {}),
    ("{{ 1.0 }} {{ 1e16 }} {{ 1.5e-7 }} {{ 0.0001 }} {{ 123456789.123 }} {{ -0.0 }} {{ 3.0e3 }}", {}),
    ("{{ s[0] }} {{ s[-1] }} {{ s[1:] }} {{ s[:2] }} {{ s[::-1] }} {{ s[1:-1] }} {{ s[::2] }} {{ s[10:] }}", {"s": "héllo"}),
    ("{{ l[1:] }} {{ l[::-1] }} {{ l[-2:] }} {{ l[:-1] }} {{ l[5] }} {{ l[-1] }} {{ l.0 }}", {"l": [1, 2, 3]}),
    ("{{ d.a }} {{ d['a'] }} {{ d.missing }} {{ d.get('a') }} {{ d.get('m', 'dflt') }} {{ d.get('m') }}", {"d": {"a": 1}}),
    ("{{ d.keys() | list }} {{ d.values() | list }} {{ d.items() | list }}", {"d": {"a": 1, "b": 2}}),
    ("{{ '  a b  ' | trim }}|{{ 'xxaxx' | trim('x') }}|{{ 'Ab' | upper }}|{{ 'Ab' | lower }}|{{ 'ab cd' | title }}"
     "|{{ 'aB' | capitalize }}|{{ [1, 2] | length }}|{{ 'héllo' | length }}|{{ {'a': 1} | count }}", {}),
    ("{{ u | default('d') }}|{{ '' | default('d') }}|{{ '' | default('d', true) }}|{{ none | d('x') }}|{{ u | length }}", {}),
    ("{{ [1, 2, 3] | join(', ') }}|{{ ['a', 'b'] | join }}|{{ [1, 2] | first }}|{{ [1, 2] | last }}"
     "|{{ 'abc' | list }}|{{ [3, 1, 2] | sort }}|{{ [3, 1, 2] | sort(reverse=true) }}|{{ 'abc' | reverse }}"
     "|{{ [1, 2, 1] | unique | list }}|{{ '3' | int + 1 }}|{{ '2.5' | float }}|{{ -3 | abs }}|{{ 'aXa' | replace('a', 'b') }}", {}),
    ("{{ [1, 2, 3, 4] | select('odd') | list }} {{ ['a', 'b', 'c'] | reject('equalto', 'b') | list }}"
     " {{ [0, 1, ''] | select | list }}", {}),
    ("{{ users | selectattr('admin') | map(attribute='name') | join(',') }}|"
     "{{ users | rejectattr('admin') | map(attribute='name') | list }}|{{ users | map(attribute='age', default=0) | list }}"
     "|{{ ['a', 'b'] | map('upper') | list }}|{{ users | selectattr('name', 'equalto', 'b') | list | length }}",
     {"users": [{"name": "a", "admin": True, "age": 3}, {"name": "b", "admin": False}]}),
    ("{{ x | tojson }}\n{{ x | tojson(indent=2) }}\n{{ x | tojson(sort_keys=true) }}\n{{ 'é\"\\\n' | tojson }}"
     "\n{{ [] | tojson }} {{ {} | tojson(indent=2) }} {{ 1.0 | tojson }} {{ none | tojson }}",
     {"x": {"b": [1, 2.5, "é\n\u0001"], "a": None, "c": True, "d": {}}}),
    ("{{ 'a,b,,c'.split(',') }} {{ ' a  b '.split() }} {{ 'a b c'.split(' ', 1) }} {{ 'x\\n\\n'.rstrip('\\n') }}|"
     "{{ '\\nx'.lstrip() }}|{{ '--x--'.strip('-') }} {{ 'abc'.startswith('ab') }} {{ 'abc'.endswith(('x', 'c')) }}"
     " {{ 'abc'.upper() }} {{ 'a-b'.replace('-', '+') }} {{ 'abc'.find('c') }} {{ '-'.join(['a', 'b']) }}", {}),
    ("{% set c = '<think>\\nr\\n</think>\\n\\nanswer' %}{{ c.split('</think>')[-1].lstrip('\\n') }}|"
     "{{ c.split('</think>')[0].rstrip('\\n').split('<think>')[-1].lstrip('\\n') }}", {}),
    ("{{ x is defined }} {{ u is defined }} {{ u is undefined }} {{ n is none }} {{ n is not none }}"
     " {{ 's' is string }} {{ 1 is number }} {{ 1 is integer }} {{ 1.5 is float }} {{ true is boolean }}"
     " {{ false is false }} {{ 0 is false }} {{ true is true }} {{ {} is mapping }} {{ [] is iterable }}"
     " {{ 's' is iterable }} {{ 3 is odd }} {{ 4 is even }} {{ 9 is divisibleby 3 }} {{ 2 is in [1, 2] }}"
     " {{ n is sameas none }} {{ 1 is equalto 1 }} {{ 'ab' is lower }} {{ 'AB' is upper }}", {"x": 1, "n": None}),
    ("{{ range(3) | list }} {{ range(1, 7, 2) | list }} {{ range(3, 0, -1) | list }} {{ dict(a=1) }}", {}),
    ("{% generation %}assistant text {{ 1 }}{% endgeneration %}", {}),
    ("{{ raise_exception('stop here') }}", {}),
    ("{{ u.attr }}", {}),
    ("{{ d.missing.deeper }}", {"d": {}}),
    ("{{ 'a' + 1 }}", {}),
    ("{{ u + 'a' }}", {}),
    ("{{ l[0].x }}", {"l": []}),
    ("{% for x in 5 %}{% endfor %}", {}),
    ("{{ 1 / 0 }}", {}),
    ("{{ n | length }}", {"n": None}),
    ("{{ 1 < 'a' }}", {}),
]


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--testdata", default=os.path.join(root, "tests", "data"))
    args = ap.parse_args()
    out_dir = os.path.join(root, "tests", "fixtures", "chat")
    env = make_env()

    cases = []
    for name, (tokens, conversations, option_sets) in TEMPLATES.items():
        if name.startswith("testdata:"):
            with open(os.path.join(args.testdata, name[len("testdata:"):]), encoding="utf-8") as f:
                config = json.load(f)
            source = config["chat_template"]
            tokens = {k: config[k] for k in ("bos_token", "eos_token", "unk_token", "sep_token",
                                             "pad_token", "cls_token", "mask_token")
                      if isinstance(config.get(k), str)}
        else:
            with open(os.path.join(out_dir, "templates", name), encoding="utf-8") as f:
                source = f.read()
        for conv in conversations:
            for options in option_sets:
                for gen in (False, True):
                    variables = {"messages": CONVERSATIONS[conv], "tools": None, "documents": None,
                                 "add_generation_prompt": gen, **tokens, **options}
                    case = {"template": name, "conversation": conv, "messages": CONVERSATIONS[conv],
                            "add_generation_prompt": gen, "special_tokens": tokens,
                            "variables": options}
                    case.update(render(env, source, variables))
                    cases.append(case)

    features = []
    for source, variables in FEATURES:
        case = {"template_text": source, "variables": variables}
        case.update(render(env, source, variables))
        features.append(case)

    header = {"generator": "tools/gen_chat_fixtures.py", "jinja2": jinja2.__version__}

    def write(path, key, items):
        with open(path, "w", encoding="utf-8") as f:
            f.write("{\n")
            for k, v in header.items():
                f.write(f"  {json.dumps(k)}: {json.dumps(v)},\n")
            f.write(f'  "{key}": [\n')
            f.write(",\n".join("    " + json.dumps(c, ensure_ascii=False) for c in items))
            f.write("\n  ]\n}\n")

    write(os.path.join(out_dir, "cases.json"), "cases", cases)
    write(os.path.join(out_dir, "features.json"), "features", features)
    n_err = sum("error" in c for c in cases) + sum("error" in c for c in features)
    print(f"wrote {len(cases)} template cases and {len(features)} feature cases ({n_err} expect an error)")


if __name__ == "__main__":
    main()
