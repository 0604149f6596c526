#!/usr/bin/python3
"""tests/train/test_report.py: the training report (trainer/train/report.c) and the progress display
(common/progress.c), through build/tests/report_driver.

The report is read back with two real parsers: Python's html.parser (with a check that every element
is closed in order) and xml.etree, which refuses anything that is not well-formed. On the parsed SVG:
four charts; one polyline per series with exactly as many points as the input has finite values for
that key; every point of a series and every tick label of its axis on one affine map value -> pixel
(so the drawing agrees with the axes), decreasing in y (a larger value is higher up); eval series
present exactly when eval lines are; nothing loaded from elsewhere. Edge inputs: one point, no eval
lines, NaN/Infinity/null values, a constant series, no data at all, a resumed run that logs steps
again. Bad inputs: errors naming FILE:LINE, and no page left behind.

Tolerance: coordinates are written with two decimals (error <= 0.005 px); predicting a point from the
affine map fitted on the two extreme points can at most triple that, so points must lie within
0.02 px of the map. A wrong sign, offset or scale in the mapping moves points by whole pixels.

The progress display runs once on a pipe (plain lines) and once on a pseudo-terminal (a bar redrawn
after '\\r'). Prints PASS/FAIL lines; exits non-zero on any failure.
"""
import json
import math
import os
import pty
import re
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from html.parser import HTMLParser

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BUILD = os.environ.get("BUILD", "build")
DRIVER = os.path.join(ROOT, BUILD, "tests/report_driver")
SVG = "{http://www.w3.org/2000/svg}"
TOL_PX = 0.02
failures = 0


def report(name, ok, detail=""):
    global failures
    if not ok:
        failures += 1
        if detail:
            sys.stderr.write(f"  {name}: {detail}\n")
    print(f"{'PASS' if ok else 'FAIL'} {name}", flush=True)


# ---- reading the page

class Nesting(HTMLParser):
    """Checks that every element is closed, in order (html.parser itself accepts anything)."""
    VOID = {"meta", "br", "img", "input", "link", "hr"}

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.stack, self.errors, self.svgs = [], [], 0

    def handle_starttag(self, tag, attrs):
        if tag == "svg":
            self.svgs += 1
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag, attrs):
        if tag == "svg":
            self.svgs += 1

    def handle_endtag(self, tag):
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1] if self.stack else 'nothing'} at {self.getpos()}")
        else:
            self.stack.pop()


def parse_page(path):
    """Returns (xml root, list of problems)."""
    text = open(path, encoding="utf-8").read()
    bad = []
    n = Nesting()
    n.feed(text)
    n.close()
    bad += n.errors
    if n.stack:
        bad.append(f"unclosed: {n.stack}")
    if n.svgs != 4:
        bad.append(f"html.parser sees {n.svgs} svg elements, not 4")
    if not text.startswith("<!DOCTYPE html>"):
        bad.append("no doctype")
    # self-contained: nothing fetched from elsewhere
    for pat in (r"<script", r"\bsrc=", r"\bhref=", r"url\(", r"@import", r"<link", r"<img"):
        if re.search(pat, text, re.I):
            bad.append(f"external reference or script: {pat}")
    try:
        root = ET.fromstring(text.replace("<!DOCTYPE html>", "", 1))
    except ET.ParseError as e:
        return None, bad + [f"not well-formed: {e}"]
    return root, bad


def points(pl):
    out = []
    for p in pl.get("points").split():
        x, y = p.split(",")
        out.append((float(x), float(y)))
    return out


def charts(root):
    """{figure id: svg element}"""
    res = {}
    for fig in root.iter("figure"):
        svg = fig.find(SVG + "svg")
        res[fig.get("id")] = svg
    return res


def plot_box(svg):
    """The axes path 'M x0 y0 V y1 H x1' gives the plot area."""
    d = svg.find(f"{SVG}path[@class='axes']").get("d")
    x0, y0, y1, x1 = map(float, re.match(r"M([\d.]+) ([\d.]+)V([\d.]+)H([\d.]+)", d).groups())
    return x0, x1, y0, y1


def ticks(svg, cls, coord):
    g = svg.find(f"{SVG}g[@class='{cls}']")
    return [(float(t.text), float(t.get(coord))) for t in g.findall(SVG + "text")]


def check_affine(pairs, what):
    """pairs: (value, pixel); all on one affine map within TOL_PX. Returns (slope, problems)."""
    vs = sorted(pairs)
    (v0, p0), (v1, p1) = vs[0], vs[-1]
    if v1 == v0:
        return None, [] if all(abs(p - p0) <= TOL_PX for _, p in pairs) else [f"{what}: one value, several pixels"]
    b = (p1 - p0) / (v1 - v0)
    bad = [f"{what}: value {v} at {p}, map says {p0 + b * (v - v0):.3f}" for v, p in pairs
           if abs(p0 + b * (v - v0) - p) > TOL_PX]
    return b, bad[:3]


def finite_series(rows, key):
    """What the page must draw for key: (step, value) of the finite values, later steps replacing."""
    out = []
    for r in rows:
        v = r.get(key)
        if isinstance(v, (int, float)) and math.isfinite(v):
            while out and out[-1][0] >= r["step"]:
                out.pop()
            out.append((r["step"], v))
    return out


CHART_KEYS = {"loss": ["loss", "eval_loss"],
              "rewards": ["rewards/chosen", "rewards/rejected", "eval_rewards/chosen", "eval_rewards/rejected"],
              "accuracy": ["rewards/accuracies", "eval_rewards/accuracies"],
              "margins": ["rewards/margins", "eval_rewards/margins"]}


def check_page(path, rows):
    """Every structural check against the rows that were written. Returns a list of problems."""
    root, bad = parse_page(path)
    if root is None:
        return bad
    cs = charts(root)
    if sorted(cs) != sorted(CHART_KEYS) or any(s is None for s in cs.values()):
        return bad + [f"charts {sorted(cs)}"]
    for cid, keys in CHART_KEYS.items():
        svg = cs[cid]
        x0, x1, y0, y1 = plot_box(svg)
        yt, xt = ticks(svg, "yticks", "y"), ticks(svg, "xticks", "x")
        if len({v for v, _ in yt}) < 2 or len({v for v, _ in xt}) < 2:
            bad.append(f"{cid}: degenerate axis: y ticks {yt}, x ticks {xt}")
        ypairs, xpairs = list(yt), list(xt)
        pls = {pl.get("data-key"): pl for pl in svg.iter(SVG + "polyline")}
        for key in keys:
            want = finite_series(rows, key)
            pl = pls.pop(key, None)
            if not want:
                if pl is not None:
                    bad.append(f"{cid}: a polyline for {key}, which has no finite values")
                continue
            if pl is None:
                bad.append(f"{cid}: no polyline for {key}")
                continue
            pts = points(pl)
            if len(pts) != len(want):
                bad.append(f"{cid}: {key}: {len(pts)} points, {len(want)} finite values")
                continue
            if ("eval" in pl.get("class").split()) != key.startswith("eval_"):
                bad.append(f"{cid}: {key} has class {pl.get('class')}")
            if key.startswith("eval_"):
                g = svg.find(f"{SVG}g[@class='points'][@data-key='{key}']")
                if g is None or len(g.findall(SVG + "circle")) != len(want):
                    bad.append(f"{cid}: {key}: eval points missing")
            for (px, py) in pts:
                if not (x0 - TOL_PX <= px <= x1 + TOL_PX and y0 - TOL_PX <= py <= y1 + TOL_PX):
                    bad.append(f"{cid}: {key}: point ({px}, {py}) outside the plot")
            ypairs += [(v, py) for (_, v), (_, py) in zip(want, pts)]
            xpairs += [(s, px) for (s, _), (px, _) in zip(want, pts)]
        if pls:
            bad.append(f"{cid}: unexpected polylines {sorted(pls)}")
        by, e1 = check_affine(ypairs, f"{cid} y")
        bx, e2 = check_affine(xpairs, f"{cid} x")
        bad += e1 + e2
        if by is not None and not by < 0:
            bad.append(f"{cid}: y map not decreasing (slope {by})")
        if bx is not None and not bx > 0:
            bad.append(f"{cid}: x map not increasing (slope {bx})")
        strokes = {pl.get("data-key"): pl.get("stroke") for pl in svg.iter(SVG + "polyline")}
        if len(set(strokes.values())) != len(strokes):
            bad.append(f"{cid}: series share a colour: {strokes}")
        legend = [t.text for g in svg.findall(f"{SVG}g[@class='legend']") for t in g.findall(SVG + "text")]
        if len(legend) != len(strokes):
            bad.append(f"{cid}: legend {legend} for {len(strokes)} series")
    return bad


def final_values(root):
    """{metric: (train cell, eval cell)} from the table."""
    out = {}
    for tr in root.iter("tr"):
        tds = [td.text for td in tr.findall("td")]
        if tds:
            out[tds[0]] = (tds[1], tds[3])
    return out


def write_rows(path, rows, raw_tail=""):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")   # json writes NaN, Infinity, -Infinity as bare tokens
        f.write(raw_tail)


def run_report(metrics, html, title=None):
    args = [DRIVER, "report", metrics, html] + ([title] if title is not None else [])
    return subprocess.run(args, capture_output=True, text=True)


def train_row(s, n, bad=None):
    r = {"step": s, "epoch": s / n, "loss": 0.69 * math.exp(-s / 20), "rewards/chosen": 0.01 * s,
         "rewards/rejected": -0.02 * s, "rewards/accuracies": min(1.0, 0.5 + s / 80), "rewards/margins": 0.03 * s,
         "logps/chosen": -50 + s, "logps/rejected": -60 - s, "grad_norm": 1.0 / s, "learning_rate": 1e-4,
         "tokens_per_s": 1234.5}
    if bad:
        r.update(bad)
    return r


def eval_row(s, n):
    return {"step": s, "epoch": s / n, "eval_loss": 0.69 * math.exp(-s / 25), "eval_rewards/chosen": 0.008 * s,
            "eval_rewards/rejected": -0.015 * s, "eval_rewards/accuracies": 0.5 + s / 100,
            "eval_rewards/margins": 0.023 * s, "eval_logps/chosen": -51.0, "eval_logps/rejected": -61.0}


# ---- the tests

def test_reports(tmp):
    n = 40
    rows = [eval_row(0, n)]
    nonfinite = {7: {"loss": float("nan")}, 8: {"rewards/chosen": float("inf")},
                 9: {"rewards/rejected": float("-inf")}, 12: {"rewards/margins": None}}
    for s in range(1, n + 1):
        rows.append(train_row(s, n, nonfinite.get(s)))
        if s % 10 == 0:
            rows.append(eval_row(s, n))
    m, h = os.path.join(tmp, "full.jsonl"), os.path.join(tmp, "full.html")
    write_rows(m, rows, "\n   \n")  # blank lines pass
    title = "run <1> & \"dpo\" 'x'"
    p = run_report(m, h, title)
    if p.returncode != 0:
        report("report_full", False, p.stderr.strip())
    else:
        bad = check_page(h, rows)
        root = ET.fromstring(open(h).read().replace("<!DOCTYPE html>", "", 1))
        if root.find("head/title").text != title or root.find("body/h1").text != title:
            bad.append(f"title: {root.find('head/title').text!r}")
        fv = final_values(root)
        want_loss = "%.6g" % [r["loss"] for r in rows if "loss" in r][-1]
        if fv.get("loss") != (want_loss, "%.6g" % rows[-1]["eval_loss"]):
            bad.append(f"final loss row {fv.get('loss')}, want {want_loss}")
        if "4 null, NaN or infinite" not in open(h).read():
            bad.append("the skipped values are not counted on the page")
        if os.path.exists(h + ".tmp"):
            bad.append("the .tmp file is left behind")
        report("report_full", not bad, "; ".join(bad[:6]))

    # no eval lines: no eval series anywhere (check_page fails on any polyline without finite values)
    rows = [train_row(s, 10) for s in range(1, 11)]
    write_rows(m, rows)
    p = run_report(m, h)
    bad = [p.stderr.strip()] if p.returncode else check_page(h, rows)
    if not bad and 'class="series eval"' in open(h).read():
        bad.append("an eval series without eval lines")
    if not bad and "<title>prefcap-dpo run</title>" not in open(h).read():
        bad.append("default title")
    report("report_no_eval", not bad, "; ".join(bad[:6]))

    # one point (and its lone marker, so that it shows)
    rows = [train_row(1, 1)]
    write_rows(m, rows)
    p = run_report(m, h)
    bad = [p.stderr.strip()] if p.returncode else check_page(h, rows)
    report("report_one_point", not bad, "; ".join(bad[:6]))

    # one eval point and one train point at different steps, negative and large values
    rows = [{"step": 0, "eval_loss": -3e7, "eval_rewards/margins": 1e-9}, {"step": 100, "loss": 5e7, "rewards/margins": 2e-9}]
    write_rows(m, rows)
    p = run_report(m, h)
    bad = [p.stderr.strip()] if p.returncode else check_page(h, rows)
    report("report_extreme_values", not bad, "; ".join(bad[:6]))

    # constant series: the y axis still spans a range around the value
    rows = [{"step": s, "loss": 0.5, "rewards/chosen": 0.0, "rewards/rejected": 0.0, "rewards/accuracies": 1.0,
             "rewards/margins": -2.0} for s in range(1, 6)]
    write_rows(m, rows)
    p = run_report(m, h)
    bad = [p.stderr.strip()] if p.returncode else check_page(h, rows)
    if not bad:
        root = ET.fromstring(open(h).read().replace("<!DOCTYPE html>", "", 1))
        for cid, svg in charts(root).items():
            yt = [v for v, _ in ticks(svg, "yticks", "y")]
            c = {"loss": 0.5, "rewards": 0.0, "accuracy": 1.0, "margins": -2.0}[cid]
            if not (min(yt) <= c <= max(yt) and min(yt) < max(yt)):
                bad.append(f"{cid}: y ticks {yt} do not span {c}")
    report("report_constant", not bad, "; ".join(bad[:6]))

    # nothing to draw: an empty file, and one whose only values are NaN
    for name, text in (("empty", ""), ("all_nan", '{"step": 1, "loss": NaN, "eval_loss": null}\n')):
        with open(m, "w") as f:
            f.write(text)
        p = run_report(m, h)
        bad = [p.stderr.strip()] if p.returncode else check_page(h, [])
        if not bad and open(h).read().count(">no data<") != 4:
            bad.append("charts without data do not say so")
        report(f"report_{name}", not bad, "; ".join(bad[:6]))

    # a resumed run logs steps 6..12 again after 1..10: those replace the first ones from step 6 on
    rows = [train_row(s, 12) for s in range(1, 11)] + [train_row(s, 12, {"loss": 0.1}) for s in range(6, 13)]
    write_rows(m, rows)
    p = run_report(m, h)
    bad = [p.stderr.strip()] if p.returncode else check_page(h, rows)
    report("report_resumed_run", not bad, "; ".join(bad[:6]))


def test_bad_input(tmp):
    m, h = os.path.join(tmp, "bad.jsonl"), os.path.join(tmp, "bad.html")
    good = json.dumps(train_row(1, 3)) + "\n" + json.dumps(train_row(2, 3)) + "\n"
    cases = [("bad_json", good + '{"step": 3, "loss": 0.5,\n', f"{m}:3"),
             ("not_object", good + "[1, 2]\n", f"{m}:3"),
             ("no_step", good + '{"loss": 0.5}\n', f"{m}:3"),
             ("string_value", good + '\n{"step": 3, "loss": "0.5"}\n', f"{m}:4"),
             ("trailing_garbage", good + '{"step": 3} x\n', f"{m}:3")]
    for name, text, want in cases:
        with open(m, "w") as f:
            f.write(text)
        if os.path.exists(h):
            os.remove(h)
        p = run_report(m, h)
        ok = p.returncode != 0 and want + ":" in p.stderr and not os.path.exists(h) and not os.path.exists(h + ".tmp")
        report(f"report_bad_{name}", ok, f"rc {p.returncode}, stderr {p.stderr.strip()!r}")
    missing = os.path.join(tmp, "missing.jsonl")
    p = run_report(missing, h)
    report("report_bad_missing_file", p.returncode != 0 and missing in p.stderr, p.stderr.strip())
    p = run_report(os.path.join(tmp, "full.jsonl"), os.path.join(tmp, "no/such/dir/r.html"))
    report("report_bad_out_dir", p.returncode != 0 and "no/such/dir/r.html.tmp" in p.stderr, p.stderr.strip())


def test_progress():
    # on a pipe: no update within 5 s prints, the break prints nothing, the end prints one plain line
    p = subprocess.run([DRIVER, "progress", "5", "5", "0.01"], capture_output=True, text=True)
    lines = p.stderr.splitlines()
    ok = (p.returncode == 0 and len(lines) == 2 and lines[0] == "eval at step 2"
          and re.fullmatch(r"train: 5/5 steps, \d+ tok/s, elapsed 0:00, ETA 0:00, done", lines[1]))
    report("progress_plain", bool(ok), repr(p.stderr))

    # on a terminal: a bar redrawn after '\r' (updates 0.25 s apart, past the 0.2 s throttle), the break
    # ends its line before the message, the end finishes the line
    pid, fd = pty.fork()
    if pid == 0:
        os.execv(DRIVER, [DRIVER, "progress", "4", "4", "0.25"])
    out = b""
    while True:
        try:
            chunk = os.read(fd, 4096)
        except OSError:
            break
        if not chunk:
            break
        out += chunk
    _, status = os.waitpid(pid, 0)
    text = out.decode().replace("\r\n", "\n")  # the tty turns '\n' into "\r\n"
    bad = []
    if status != 0:
        bad.append(f"status {status}")
    if not re.search(r"\rtrain \[#{15}\.{15}\] 2/4 steps  \d+ tok/s  0:01  ETA 0:0\d  loss 0\.5000\s*\neval at step 2\n", text):
        bad.append("no half bar followed by the break and the message")
    if not re.search(r"\rtrain \[#{30}\] 4/4 steps  \d+ tok/s  0:01  ETA 0:00  done\s*\n", text):
        bad.append("no full bar at the end")
    if "\n\n" in text:
        bad.append("an empty line")
    report("progress_tty", not bad, "; ".join(bad) + f"; output {text!r}")

    want = {"0": "0:00", "59.6": "1:00", "3725": "1:02:05", "-1": "--:--", "nan": "--:--", "1e9": "--:--"}
    got = {s: subprocess.run([DRIVER, "fmt", s], capture_output=True, text=True).stdout.strip() for s in want}
    report("progress_fmt_time", got == want, f"{got}")


def main():
    if not os.path.exists(DRIVER):
        print(f"FAIL report_driver_built: {DRIVER} missing (make {BUILD}/tests/report_driver)")
        sys.exit(1)
    with tempfile.TemporaryDirectory() as tmp:
        test_reports(tmp)
        test_bad_input(tmp)
    test_progress()
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
