"""Checks a running apex stack through Prometheus's HTTP API (used by
scripts/e2e-compose.sh). Each subcommand polls until its condition holds or
its deadline passes, then prints what it saw and exits non-zero on failure.

  promcheck.py URL targets JOB=COUNT...     every target up, COUNT per job
  promcheck.py URL positive EXPR            every series of EXPR is > 0
  promcheck.py URL rises EXPR SECONDS       every series of EXPR grows
  promcheck.py URL labels EXPR LABEL V...   EXPR has series with LABEL=V, each > 0
  promcheck.py URL distinct EXPR LABEL N    N series, with N distinct LABELs and N distinct values
  promcheck.py URL show EXPR                prints EXPR's series (no check)
  promcheck.py URL dashboard FILE [ID...]   every panel query returns data; the
                                            panels with these ids, numbers (not only NaN);
                                            template variables read as "All"
"""
import json
import math
import sys
import time
import urllib.parse
import urllib.request

DEADLINE = float(__import__("os").environ.get("PROMCHECK_TIMEOUT", "240"))


def api(base, path, **params):
    url = f"{base}/api/v1/{path}?{urllib.parse.urlencode(params)}"
    with urllib.request.urlopen(url, timeout=10) as r:
        body = json.load(r)
    if body.get("status") != "success":
        raise RuntimeError(f"{path}: {body}")
    return body["data"]


def query(base, expr):
    return api(base, "query", query=expr)["result"]


def values(result):
    return {json.dumps(s["metric"], sort_keys=True): float(s["value"][1]) for s in result}


def poll(check, what):
    start = time.monotonic()
    last = None
    while True:
        try:
            ok, last = check()
        except Exception as e:  # the stack may still be starting
            ok, last = False, f"error: {e}"
        if ok:
            print(f"ok   {what} ({time.monotonic() - start:.0f}s): {last}")
            return True
        if time.monotonic() - start > DEADLINE:
            print(f"FAIL {what} after {DEADLINE:.0f}s: {last}")
            return False
        time.sleep(3)


def targets(base, wants):
    want = {w.split("=")[0]: int(w.split("=")[1]) for w in wants}

    def check():
        active = api(base, "targets", state="active")["activeTargets"]
        seen = {}
        down = []
        for t in active:
            job = t["labels"]["job"]
            seen[job] = seen.get(job, 0) + 1
            if t["health"] != "up":
                down.append(f"{job} {t['labels'].get('instance')} {t['health']} {t.get('lastError', '')}")
        ok = not down and all(seen.get(j, 0) == n for j, n in want.items())
        return ok, f"targets {seen}" + (f", not up: {down}" if down else "")

    return poll(check, f"prometheus targets {want}")


def positive(base, expr):
    def check():
        v = values(query(base, expr))
        return bool(v) and all(x > 0 for x in v.values()), v
    return poll(check, expr)


def rises(base, expr, seconds):
    first = {}

    def check():
        v = values(query(base, expr))
        if not first:
            first.update(v)
            time.sleep(float(seconds))
            v = values(query(base, expr))
        grown = {k: (first[k], x) for k, x in v.items() if k in first and x > first[k]}
        return bool(first) and len(grown) == len(first), {k: (first.get(k), x) for k, x in v.items()}
    return poll(check, f"{expr} rises within {seconds}s")


def labels(base, expr, label, wanted):
    def check():
        got = {s["metric"].get(label): float(s["value"][1]) for s in query(base, expr)}
        return all(got.get(w, 0) > 0 for w in wanted), got
    return poll(check, f"{expr} has {label} in {wanted}")


def distinct(base, expr, label, count):
    def check():
        series = [(s["metric"].get(label), float(s["value"][1])) for s in query(base, expr)]
        labels = {lv for lv, _ in series}
        values = {v for _, v in series}
        ok = len(series) == count and len(labels) == count and len(values) == count
        return ok, dict(sorted((str(lv), v) for lv, v in series))
    return poll(check, f"{expr}: {count} series with distinct {label} and values")


def show(base, expr):
    for s in query(base, expr):
        print(f"     {expr} {s['metric']}: {float(s['value'][1]):.6g}")
    return True


def dashboard(base, path, strict_ids=()):
    """Panels in strict_ids must return numbers: NaN alone fails them."""
    dash = json.load(open(path))
    # Template variables as Grafana's "All" sends them (the run selector: .*).
    variables = {v["name"]: v.get("allValue") or ".*" for v in dash.get("templating", {}).get("list", [])}

    def expand(expr):
        for name, value in variables.items():
            expr = expr.replace("${" + name + "}", value).replace("$" + name, value)
        return expr
    exprs = []
    strict = set()

    def walk(panels):
        for p in panels:
            walk(p.get("panels", []))
            for t in p.get("targets", []):
                if str(p.get("id")) in strict_ids:
                    strict.add(len(exprs))
                exprs.append((p["title"], expand(t["expr"])))
    walk(dash["panels"])
    missing = set(strict_ids) - {str(p.get("id")) for p in dash["panels"]}
    if missing:
        print(f"FAIL dashboard has no panels with ids {sorted(missing)}")
        return False
    pending = dict(enumerate(exprs))
    start = time.monotonic()
    nan = {}
    while pending and time.monotonic() - start < DEADLINE:
        for i, (title, expr) in list(pending.items()):
            try:
                result = query(base, expr)
            except Exception as e:
                print(f"     query error for [{title}] {expr}: {e}")
                continue
            if result:
                nums = [float(s["value"][1]) for s in result]
                if all(math.isnan(x) for x in nums):
                    nan[i] = (title, expr)
                else:
                    nan.pop(i, None)
                    del pending[i]
        if pending:
            time.sleep(5)
    # A query whose only values are NaN (a ratio over a window with no events)
    # still returned data; report it, but it does not fail the check, unless
    # its panel is one that must show numbers.
    only_nan = 0
    for i, (title, expr) in nan.items():
        pending.pop(i, None)
        if i in strict:
            print(f"FAIL [{title}] returned only NaN: {expr}")
            only_nan += 1
        else:
            print(f"note [{title}] returned only NaN: {expr}")
    for title, expr in pending.values():
        print(f"FAIL [{title}] returned no data: {expr}")
    ok = not pending and not only_nan
    print(f"{'ok  ' if ok else 'FAIL'} dashboard: {len(exprs) - len(pending)} of {len(exprs)} queries returned data"
          + (f", {len(strict)} required to be numbers, {only_nan} only NaN" if strict else ""))
    return ok


def main():
    base, cmd, *args = sys.argv[1:]
    ok = {
        "targets": lambda: targets(base, args),
        "positive": lambda: positive(base, args[0]),
        "rises": lambda: rises(base, args[0], args[1]),
        "labels": lambda: labels(base, args[0], args[1], args[2:]),
        "show": lambda: show(base, args[0]),
        "distinct": lambda: distinct(base, args[0], args[1], int(args[2])),
        "dashboard": lambda: dashboard(base, args[0], args[1:]),
    }[cmd]()
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
