#!/usr/bin/env python3
"""Sums the results of tools/test.sh runs and prints the line CI reads.

Each argument is LABEL:DIR, where DIR holds meson's testlog.json and the GoogleTest JSON reports
(GTEST_OUTPUT=json:DIR/). A GoogleTest binary counts each of its test cases; any other test (a
script, an lbd --check run) counts as one. A binary that crashed or timed out counts as one
failure on top of what it reported. "sanitizer-build-failed" counts as one failure;
"fuzz-skipped" counts the fuzz targets as skipped (no clang to build them).
"""
import json
import os
import sys

FUZZ_TARGETS = 4  # tests/fuzz/meson.build: packet, config, control, pool_update


def gtest_counts(path):
    with open(path) as f:
        report = json.load(f)
    passed = failed = skipped = 0
    failures = []
    for suite in report.get("testsuites", []):
        for case in suite.get("testsuite", []):
            name = f"{suite['name']}.{case['name']}"
            if case.get("result") == "SKIPPED" or case.get("status") == "NOTRUN":
                skipped += 1
                msg = case.get("skipped", [{}])
                print(f"SKIPPED {name}: {msg[0].get('message', '') if msg else ''}".strip())
            elif case.get("failures"):
                failed += 1
                failures.append(name)
            else:
                passed += 1
    return passed, failed, skipped, failures


def main(args):
    total = [0, 0, 0]
    failures = []
    for arg in args:
        if arg in ("build",):
            continue
        if arg == "sanitizer-build-failed":
            total[1] += 1
            failures.append("sanitizer build")
            continue
        if arg == "fuzz-skipped":  # no clang: the fuzz suite's targets, skipped
            total[2] += FUZZ_TARGETS
            print(f"SKIPPED fuzz: {FUZZ_TARGETS} targets (clang++ not installed)")
            continue
        label, _, d = arg.partition(":")
        prefix = f"{label}:" if label else ""
        log = os.path.join(d, "testlog.json")
        if not os.path.exists(log):
            total[1] += 1
            failures.append(f"{prefix}meson test (no log)")
            continue
        with open(log) as f:
            entries = [json.loads(line) for line in f if line.strip()]
        for e in entries:
            name = e["name"]
            result = e["result"]
            exe = os.path.basename(e.get("command", [""])[0])
            report = os.path.join(d, exe + ".json")
            if os.path.exists(os.path.join(d, exe + "_1.json")):
                print(f"test_summary: two test binaries are named {exe}: rename one")
                total[1] += 1
            if exe and os.path.exists(report):
                p, fl, s, fails = gtest_counts(report)
                os.rename(report, report + ".seen")  # a binary run by two tests is not counted twice
                total[0] += p
                total[1] += fl
                total[2] += s
                failures += [prefix + x for x in fails]
                if result not in ("OK", "EXPECTEDFAIL") and fl == 0:
                    total[1] += 1
                    failures.append(f"{prefix}{name} ({result})")
            elif result in ("OK", "EXPECTEDFAIL"):
                total[0] += 1
            elif result == "SKIP":
                total[2] += 1
                print(f"SKIPPED {prefix}{name}: {e.get('stdout', '').strip().splitlines()[-1:]}")
            else:
                total[1] += 1
                failures.append(f"{prefix}{name} ({result})")
    for f in failures:
        print(f"FAILED {f}")
    line = f"{total[0]} passed, {total[1]} failed"
    if total[2]:
        line += f", {total[2]} skipped"
    print(line)
    return 1 if total[1] or total[0] == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
