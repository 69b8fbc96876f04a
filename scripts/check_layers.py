#!/usr/bin/env python3
"""Check that csrc/ keeps its layers: a file includes only its own layer or layers below it.

The layers, lowest first, are LAYERS below; a file's layer is its first folder under csrc/
(csrc/core/tensor.c is in core), and a public header's is named in PUBLIC_HEADERS
(csrc/include/ddl/nn_conv.h is in kernels). Quoted includes are resolved as the compiler
does (next to the file, then csrc/include, then csrc). The check fails on:
  - an include that points up (core/tensor.c including "ddl/autograd.h");
  - an include it cannot resolve, or a file in a folder that has no place in LAYERS;
  - a cycle of includes between files.
It prints each problem with file and line and exits 1; silent and 0 when the tree is clean.
Run it as `python3 scripts/check_layers.py` (CI does).
"""
import os
import re
import sys

LAYERS = ["core", "kernels", "autograd", "optim", "data", "ml", "store", "comm", "reducer",
          "api", "python"]

# csrc/include/ddl/<name>: the layer each public header belongs to ("api": the umbrella).
PUBLIC_HEADERS = {
    "core.h": "core",
    "fixed_point.h": "core",
    "half.h": "core",
    "nn_act.h": "kernels", "nn_conv.h": "kernels", "nn_loss.h": "kernels",
    "nn_norm.h": "kernels", "nn_rnn.h": "kernels",
    "nn_layer_norm.h": "kernels", "nn_attention.h": "kernels",
    "autograd.h": "autograd",
    "optim.h": "optim",
    "data.h": "data",
    "ml.h": "ml",
    "store.h": "store",
    "comm.h": "comm",
    "reducer.h": "reducer",
    "ddl.h": "api",
}

INCLUDE = re.compile(r'^\s*#\s*include\s+"([^"]+)"')
SOURCE_ENDINGS = (".c", ".cc", ".h")


def layer_of(csrc, path):
    rel = os.path.relpath(path, csrc).replace(os.sep, "/")
    if rel.startswith("include/ddl/"):
        return PUBLIC_HEADERS.get(rel[len("include/ddl/"):])
    top = rel.split("/", 1)[0]
    return top if top in LAYERS and "/" in rel else None


def resolve(csrc, src, name):
    for base in (os.path.dirname(src), os.path.join(csrc, "include"), csrc):
        cand = os.path.normpath(os.path.join(base, name))
        if os.path.isfile(cand):
            return cand
    return None


def check(csrc):
    problems = []
    edges = {}
    files = sorted(os.path.join(d, f) for d, _, fs in os.walk(csrc) for f in fs
                   if f.endswith(SOURCE_ENDINGS))
    for path in files:
        rel = os.path.relpath(path, csrc)
        src_layer = layer_of(csrc, path)
        if src_layer is None:
            problems.append(f"csrc/{rel}: not in a layer (place its folder or header in "
                            f"scripts/check_layers.py)")
            continue
        edges[path] = []
        with open(path, encoding="utf-8") as fh:
            for lineno, line in enumerate(fh, 1):
                m = INCLUDE.match(line)
                if not m:
                    continue
                target = resolve(csrc, path, m.group(1))
                where = f"csrc/{rel}:{lineno}"
                if target is None:
                    problems.append(f'{where}: cannot resolve "{m.group(1)}"')
                    continue
                edges[path].append((target, where))
                dst_layer = layer_of(csrc, target)
                if dst_layer is None:
                    continue  # reported as a file of its own
                if LAYERS.index(dst_layer) > LAYERS.index(src_layer):
                    problems.append(f'{where}: {src_layer} includes "{m.group(1)}" of the '
                                    f"higher layer {dst_layer}")
    problems += find_cycles(csrc, edges)
    return problems


def find_cycles(csrc, edges):
    state, stack, found = {}, [], []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for target, where in edges.get(node, []):
            if state.get(target) == "open":
                cycle = stack[stack.index(target):] + [target]
                names = " -> ".join("csrc/" + os.path.relpath(p, csrc) for p in cycle)
                found.append(f"{where}: include cycle {names}")
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def main(argv):
    root = argv[1] if len(argv) > 1 else os.path.join(os.path.dirname(__file__), "..")
    csrc = os.path.abspath(os.path.join(root, "csrc"))
    problems = check(csrc)
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
