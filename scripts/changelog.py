#!/usr/bin/env python3
"""Write CHANGELOG.md from the git history, grouped by issue: ``python3 scripts/changelog.py > CHANGELOG.md``.

A commit names its issue in its subject as ``(#N)``; the commits made before that convention
(issues 2-15) are listed by hash below.
"""

import collections
import re
import subprocess

groups = {
    2: (
        "Foundation and verifiable private billing (Paillier)",
        "5d53c14 264bea4 04e0ea1 1cdfde4 1b2cd3e 5195827 62cd89e e3133de b04e309 d317867 7e60bfe f94fefa",
    ),
    3: (
        "Private real-time load aggregation (SMC secure sum)",
        "da53062 02dd36b 3019ed3 85fa76a 7d7ba6d b54cbd3 6137d52 59e2587 943577b b47d09c 2ce5243 cdc075b b6498ac",
    ),
    4: ("Demand management with individual households (secure comparison)", "be72163"),
    5: (
        "The networked system: head-end, meters, households, concentrators, realistic homes, privmeter simulate",
        "6c4e092 eb48875 e292960 353f1a5 20cdaf2 e91e839 f5bbcea f22d831 50ef0b6 7c8dd79 db993f3 7f1c12c 54295ac 6f0a3b8",
    ),
    6: ("The demonstration: live web dashboard and privmeter demo", "6b99102 f6e2fd1"),
    8: ("Real meters as input: DSMR P1 and DLMS/COSEM", "b955f65 4d1fc0b 0f59288"),
    12: (
        "Privacy against a lying utility (malicious head-end)",
        "252cdfb 06549cc efd342f 7eb6f1e 08264b3 c1c2db6 a4fc37b ba4b6df bc0b5b0 d2db23b efe3f27 5b7a38e 9236294 d9b82ad e0ea15a 52c6c93 278f4d3 edae61c 58b8430 2013dc5 53b6a02 0adbf81 7f4fed4",
    ),
    13: (
        "Run privmeter for real households: deployment, own keys, enrolment",
        "8e0dbd4 3f50d34 1502eef e58f7be 67bdff9 2f475ac 6daef9e 5500f70 c50f272 465a7a1 0045675 9598a88 4afe03d",
    ),
    14: (
        "Beyond one machine: the head-end sharded on Ray with PostgreSQL",
        "8b941e6 6f90dd7 d42c1cb 38d2636 2c62a67 9a5afa1 1e44b0c 5ff2641 cd778a3 b4b62a6 b754a19 29a55e9 a3810d9 c646dfa 6539817 7c406a0 a5da358 7b5af5a 1ab0050",
    ),
    15: (
        "A new user's first hour: the README works as written, one-line errors",
        "2f23ec1 278278e 3b33266 c5256ff 77f2f92 0001070 f7a4357 e369c2d 634b771 6dc24ed",
    ),
    16: (
        "A codebase others can carry on: no import cycles, a public API, the checks that keep them",
        "",
    ),
}
log = subprocess.run(
    ["git", "log", "--reverse", "--format=%h%x09%ad%x09%s", "--date=short", "HEAD"],
    capture_output=True,
    text=True,
    check=True,
).stdout.splitlines()
owner = {h: i for i, (_, hs) in groups.items() for h in hs.split()}
by = collections.defaultdict(list)
for line in log:
    h, d, s = line.split("\t", 2)
    m = re.search(r"\(#(\d+)\)", s)
    i = owner.get(h, int(m.group(1)) if m else 0)
    by[i].append((h, d, s))
out = [
    "# Changelog",
    "",
    "All notable changes to privmeter, from the git history, grouped by the issue they served",
    "(`issues show N` for the issue's text). Newest issue first; within an issue, oldest commit first.",
    "The version is `privmeter.__version__` (one source; pyproject reads it).",
    "",
    "## 0.1.0 (unreleased)",
    "",
]
for i in sorted(set(groups) | set(by) - {0}, reverse=True):
    if not by[i]:
        continue
    title = groups[i][0] if i in groups else "(see the issue)"
    out += [f"### Issue {i}: {title}", ""]
    out += [f"- {s} ({h}, {d})" for h, d, s in by[i]]
    out.append("")
if by[0]:
    out += ["### Other", ""] + [f"- {s} ({h}, {d})" for h, d, s in by[0]] + [""]
print("\n".join(out).rstrip() + "\n", end="")
