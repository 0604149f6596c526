#!/usr/bin/python3
# tests/data/render_jinja2.py: the reference for `prefcap-dpo render`: Python's jinja2 set up exactly as
# transformers' apply_chat_template sets it up (transformers/utils/chat_template_utils.py):
# ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[AssistantTracker,
# loopcontrols]), its tojson (json.dumps, ensure_ascii=False), raise_exception and strftime_now
# globals; variables messages, tools=None, documents=None, add_generation_prompt, the special tokens,
# and the line's other fields as **kwargs.
#   render_jinja2.py TEMPLATE_FILE CONFIG_JSON INPUT_JSONL AGP(0|1)  ->  one {"text"} or {"error"} per line
#   render_jinja2.py cases FILE      lines {"template", "vars"}        ->  the same
# Exits 3 when jinja2 is not installed (the caller fails: python3-jinja2 is a declared dependency).
import json
import sys
from datetime import datetime

try:
    import jinja2
    import jinja2.ext
    from jinja2.sandbox import ImmutableSandboxedEnvironment
except ImportError:
    sys.exit(3)


class AssistantTracker(jinja2.ext.Extension):
    # transformers' {% generation %} block: renders its body (the mask it records is not used here)
    tags = {"generation"}

    def parse(self, parser):
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(["name:endgeneration"], drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_render", []), [], [], body).set_lineno(lineno)

    def _render(self, caller):
        return caller()


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(format):
    return datetime.now().strftime(format)


def make_env():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True,
                                        extensions=[AssistantTracker, jinja2.ext.loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = strftime_now
    return env


def cases(path):
    # render_jinja2.py cases FILE: lines {"template", "vars"}, one {"text"} or {"error"} each
    env = make_env()
    with open(path, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            try:
                out = {"text": env.from_string(d["template"]).render(**d["vars"])}
            except Exception as e:
                out = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(out, ensure_ascii=False))


def main():
    if sys.argv[1] == "cases":
        return cases(sys.argv[2])
    tpath, cpath, ipath, agp = sys.argv[1:5]
    env = make_env()
    with open(tpath, encoding="utf-8") as f:
        template = env.from_string(f.read())
    with open(cpath, encoding="utf-8") as f:
        config = json.load(f)
    specials = {}
    for k in ("bos_token", "eos_token", "unk_token", "pad_token"):
        v = config.get(k)
        if isinstance(v, dict):
            v = v.get("content")
        if isinstance(v, str):
            specials[k] = v
    with open(ipath, encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            ctx = dict(tools=None, documents=None, add_generation_prompt=agp == "1", **specials)
            ctx.update(d)
            try:
                out = {"text": template.render(**ctx)}
            except Exception as e:  # the template's own raise_exception, or jinja2 refusing
                out = {"error": f"{type(e).__name__}: {e}"}
            print(json.dumps(out, ensure_ascii=False))


main()
