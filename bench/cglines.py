#!/usr/bin/python3
"""Self cost of one shared object, per source line and per (inlined) function,
from a callgrind file made with --dump-instr=yes (see bench/dictprof.lua).
callgrind_annotate attributes what gcc inlined to the caller, and valgrind
3.19 reads no line for some of gcc 12's functions: this maps every
instruction with addr2line -i instead.
usage: cglines.py CALLGRIND_FILE SHARED_OBJECT [OPS]   (costs divided by OPS)"""
import collections
import re
import subprocess
import sys


def parse(path, so):
    """{(function, address): self cost} for the instructions of `so`."""
    names, cost = {}, collections.Counter()

    def name(kind, s):
        m = re.match(r'\((\d+)\)(?: (.*))?', s)
        if not m:
            return s
        if m.group(2) is not None:
            names[(kind, m.group(1))] = m.group(2)
        return names.get((kind, m.group(1)), '?')

    ob = fn = cur_ob = None
    prev, skip = [0, 0], False
    for line in open(path):
        line = line.rstrip('\n')
        key, _, val = line.partition('=')
        if key == 'ob':
            cur_ob = name('ob', val)
        elif key in ('fl', 'fi', 'fe', 'cfi', 'cfl'):
            name('fl', val)
        elif key == 'fn':
            fn, ob = name('fn', val), cur_ob
        elif key == 'cob':
            name('ob', val)
        elif key == 'cfn':
            name('fn', val)
        elif key == 'calls':
            skip = True  # the next cost line is the call's inclusive cost
        elif line and line[0] in '0123456789+-*':
            parts, pos = line.split(), []
            for i, p in enumerate(parts[:2]):
                pos.append(prev[i] if p == '*' else prev[i] + int(p, 0) if p[0] in '+-' else int(p, 0))
            prev = pos
            if skip:
                skip = False
            elif ob and ob.endswith(so):
                cost[(fn, pos[0])] += int(parts[2]) if len(parts) > 2 else 0
    return cost


def main():
    path, so = sys.argv[1], sys.argv[2]
    ops = float(sys.argv[3]) if len(sys.argv) > 3 else 1.0
    cost = parse(path, so)
    syms = {}
    for line in subprocess.run(['nm', so], capture_output=True, text=True).stdout.splitlines():
        f = line.split()
        if len(f) == 3:
            syms[f[2]] = int(f[0], 16)
    low = {}
    for (fn, a) in cost:
        low[fn] = min(low.get(fn, a), a)
    # the load address: the usual difference between a function's first
    # instruction seen and its symbol
    base = collections.Counter(low[f] - syms[f] for f in low if f in syms).most_common(1)[0][0]
    addrs = sorted(set(a for (_, a) in cost))
    out = subprocess.run(['addr2line', '-e', so, '-f', '-i', '-a'] + [hex(a - base) for a in addrs],
                         capture_output=True, text=True).stdout.splitlines()
    where, cur, i = {}, None, 0
    while i < len(out):
        if out[i].startswith('0x'):
            cur = int(out[i], 16)
            where[cur] = []
            i += 1
        else:
            where[cur].append((out[i], out[i + 1].split('/')[-1].split(' ')[0]))
            i += 2
    byline, byfn = collections.Counter(), collections.Counter()
    for (fn, a), c in cost.items():
        inner, loc = where.get(a - base, [('?', '?')])[0]
        byline[(fn, inner, loc)] += c
        byfn[inner] += c
    total = sum(cost.values())
    print('%s: %.1f instructions per op in %s (self)' % (path, total / ops, so))
    print('\nper function, inlined ones apart:')
    for f, c in byfn.most_common(30):
        print('%8.1f %5.1f%%  %s' % (c / ops, 100.0 * c / total, f))
    print('\nper line (function, inlined function, line):')
    for (fn, inner, loc), c in byline.most_common(40):
        print('%8.1f  %-26s %-22s %s' % (c / ops, fn, inner, loc))


if __name__ == '__main__':
    main()
