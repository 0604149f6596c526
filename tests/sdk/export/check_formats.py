#!/usr/bin/python3
"""tests/sdk/export/check_formats.py FORMAT FILE: checks an export line by line against what its
consumer requires, written from their documentation, not from prefcap's code:
  trl-dpo    TRL's preference datasets: "prompt", "chosen", "rejected"; standard (all strings) or
             conversational (lists of {"role","content"} messages); every row of one kind (TRL decides
             the kind from the first row); chosen/rejected conversations end in an assistant turn;
             no None anywhere TRL reads text.
  trl-kto    TRL's unpaired preference datasets: "prompt", "completion", "label" (a bool).
  openai-dpo OpenAI's preference fine-tuning: "input": {"messages": [...]}, "preferred_output" and
             "non_preferred_output": lists of one assistant message with string content.
Prints one line and exits 1 at the first violation."""
import json, sys

fmt, path = sys.argv[1], sys.argv[2]


def is_messages(v):
    return isinstance(v, list) and len(v) > 0 and all(
        isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str) for m in v)


def fail(n, why):
    print(f"{path}:{n}: {why}")
    sys.exit(1)


kind = None
n = 0
for n, line in enumerate(open(path, encoding="utf-8"), 1):
    row = json.loads(line)
    if fmt in ("trl-dpo", "trl-kto"):
        fields = ["prompt", "chosen", "rejected"] if fmt == "trl-dpo" else ["prompt", "completion"]
        for f in fields:
            if f not in row or row[f] is None:
                fail(n, f"field {f!r} missing or null")
        k = "conversational" if is_messages(row["prompt"]) else "standard" if isinstance(row["prompt"], str) else None
        if k is None:
            fail(n, "prompt is neither a string nor a list of messages")
        kind = kind or k
        if k != kind:
            fail(n, f"row is {k}, earlier rows are {kind}: TRL reads a dataset as one kind")
        for f in fields[1:]:
            if k == "standard" and not isinstance(row[f], str):
                fail(n, f"{f} must be a string in a standard dataset")
            if k == "conversational" and not (is_messages(row[f]) and row[f][-1]["role"] == "assistant"):
                fail(n, f"{f} must be assistant messages in a conversational dataset")
        if fmt == "trl-kto" and not isinstance(row.get("label"), bool):
            fail(n, "label must be true or false")
    elif fmt == "openai-dpo":
        if not is_messages(row.get("input", {}).get("messages")):
            fail(n, "input.messages must be a list of messages")
        for f in ("preferred_output", "non_preferred_output"):
            v = row.get(f)
            if not (is_messages(v) and len(v) == 1 and v[0]["role"] == "assistant"):
                fail(n, f"{f} must be one assistant message")
    else:
        fail(0, f"unknown format {fmt}")
print(f"{path}: {n} row(s) valid {fmt}" + (f" ({kind})" if kind else ""))
