#!/usr/bin/env python3
"""image_size.py -- the installed size of the cs-pdns container image, without a Docker engine.

Reads the runtime packages from the Dockerfile's last `apt-get install`, resolves their Depends and
Pre-Depends (no Recommends, as the Dockerfile passes --no-install-recommends) against the local apt
lists of Debian bookworm, drops what debian:bookworm-slim already holds (its minbase: every
Priority: required package, apt, and their dependencies), and adds the Installed-Size fields plus
the stripped binary. Must not: download anything; run `apt-get update` first if the lists are
stale. Usage: image_size.py [--dockerfile PATH] [--binary PATH] (the binary stripped, as the
image holds it). Installed-Size counts /usr/share/doc, man pages and translations, which the slim
images tell dpkg to skip (for packages installed later too), so every figure is an upper bound.
"""
import argparse
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def load_archive():
    """Package -> its fields, from `apt-cache dumpavail` (one candidate version each)."""
    out = subprocess.run(["apt-cache", "dumpavail"], capture_output=True, text=True,
                         check=True).stdout
    pkgs, provides = {}, {}
    for block in out.split("\n\n"):
        fields, key = {}, None
        for line in block.splitlines():
            if line[:1] in (" ", "\t") and key:
                fields[key] += "\n" + line
            elif ":" in line:
                key, _, value = line.partition(":")
                fields[key] = value.strip()
        name = fields.get("Package")
        if not name:
            continue
        pkgs[name] = fields
        for p in fields.get("Provides", "").split(","):
            p = p.split("(")[0].strip()
            if p:
                provides.setdefault(p, []).append(name)
    return pkgs, provides


def alternatives(field):
    """'a (>= 1) | b, c:any' -> [['a', 'b'], ['c']]"""
    out = []
    for group in filter(None, (g.strip() for g in field.split(","))):
        out.append([re.sub(r"[\s(:].*", "", alt.strip()) for alt in group.split("|")])
    return out


def closure(roots, pkgs, provides, have=frozenset()):
    """Every package roots pull in through Depends and Pre-Depends, beyond have."""
    seen, todo = set(), list(roots)
    while todo:
        name = todo.pop()
        if name in seen or name in have:
            continue
        if name not in pkgs:
            sys.exit(f"image_size: {name} is not in the apt lists (run apt-get update?)")
        seen.add(name)
        f = pkgs[name]
        for group in alternatives(f.get("Pre-Depends", "") + "," + f.get("Depends", "")):
            # An alternative already installed satisfies the group; else apt takes the first
            # real package (or the first provider of a virtual one).
            cands = []
            for alt in group:
                cands += [alt] if alt in pkgs else provides.get(alt, [])
            if not cands:
                sys.exit(f"image_size: nothing provides {group} for {name}")
            if not any(c in seen or c in have for c in cands):
                todo.append(cands[0])
    return seen


def runtime_packages(dockerfile):
    text = open(dockerfile).read().replace("\\\n", " ")
    last = text[text.rindex("\nFROM "):]
    m = re.search(r"apt-get install ([^&]*)", last)
    if not m:
        sys.exit(f"image_size: no apt-get install in the last stage of {dockerfile}")
    return [w for w in m.group(1).split() if not w.startswith("-")]


def kib(pkgs, names):
    return sum(int(pkgs[n].get("Installed-Size", "0")) for n in names)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dockerfile", default=os.path.join(ROOT, "Dockerfile"))
    ap.add_argument("--binary", help="the cs-pdns executable (stripped here if it is not)")
    args = ap.parse_args()

    pkgs, provides = load_archive()
    # debootstrap merges /usr itself and installs usr-is-merged, which keeps apt from taking
    # init-system-helpers' first alternative, usrmerge (and perl with it).
    base_roots = [n for n, f in pkgs.items()
                  if f.get("Priority") == "required" or f.get("Essential") == "yes"]
    base_roots += ["apt", "usr-is-merged"]
    base = closure(base_roots, pkgs, provides)
    wanted = runtime_packages(args.dockerfile)
    added = closure(wanted, pkgs, provides, have=base)

    print(f"runtime packages named in the Dockerfile: {' '.join(wanted)}")
    print(f"{'package':32} {'version':28} {'KiB':>8}")
    for n in sorted(added, key=lambda n: -int(pkgs[n].get("Installed-Size", "0"))):
        print(f"{n:32} {pkgs[n]['Version']:28} {int(pkgs[n].get('Installed-Size', '0')):8}")
    pkg_kib = kib(pkgs, added)
    base_kib = kib(pkgs, base)
    bin_kib = 0
    if args.binary:
        with tempfile.TemporaryDirectory() as d:
            stripped = os.path.join(d, "cs-pdns")
            subprocess.run(["strip", "-o", stripped, args.binary], check=True)
            bin_kib = (os.path.getsize(stripped) + 1023) // 1024
    policy_kib = (os.path.getsize(os.path.join(ROOT, "lua", "policy.lua")) + 1023) // 1024
    print(f"\nbase debian:bookworm-slim (minbase, {len(base)} packages): {base_kib / 1024:7.1f} MiB"
          " (upper bound: Installed-Size, with the docs slim drops)")
    print(f"added packages ({len(added)}, upper bound likewise):{' ' * 6}{pkg_kib / 1024:7.1f} MiB")
    if args.binary:
        own = (bin_kib + policy_kib) / 1024
        print(f"cs-pdns binary (stripped) + policy:{' ' * 14}{own:7.1f} MiB")
    print(f"image total:{' ' * 37}{(base_kib + pkg_kib + bin_kib + policy_kib) / 1024:7.1f} MiB"
          f"  (cs-pdns's own layers: {(pkg_kib + bin_kib + policy_kib) / 1024:.1f} MiB)")


if __name__ == "__main__":
    main()
