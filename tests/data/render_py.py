#!/usr/bin/python3
# tests/data/render_py.py: a second reference for chat rendering, the engine transformers itself uses:
# Python's jinja2 in the environment apply_chat_template builds (ImmutableSandboxedEnvironment with
# trim_blocks and lstrip_blocks, the loopcontrols extension, a tojson filter, raise_exception).
# Reads the JSON lines of `ref.cjs render` (FILE) and prints, per line, {"rendered": …} from jinja2.
# Exits 3 when jinja2 is not installed (the caller skips).
import json
import sys

try:
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment
    import jinja2.ext
except ImportError:
    sys.exit(3)


def raise_exception(message):
    raise jinja2.exceptions.TemplateError(message)


def main():
    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols])
    env.filters["tojson"] = lambda x, **kw: json.dumps(x, ensure_ascii=False, **kw)
    env.globals["raise_exception"] = raise_exception
    cache = {}
    with open(sys.argv[1], encoding="utf-8") as f:
        for line in f:
            d = json.loads(line)
            t = cache.get(d["template_text"])
            if t is None:
                t = cache[d["template_text"]] = env.from_string(d["template_text"])
            ctx = dict(messages=d["messages"], add_generation_prompt=d["agp"], **d["kwargs"])
            if d.get("bos") is not None:
                ctx["bos_token"] = d["bos"]
            ctx["eos_token"] = d.get("eos")
            print(json.dumps({"rendered": t.render(**ctx)}, ensure_ascii=False))


main()
