#!/usr/bin/env python3
"""cu2cpp.py OUTDIR FILE.cu|FILE.cuh...: CUDA sources as C++ for the CPU emulator (tests/emu).

FILE.cu becomes OUTDIR/FILE.cpp; FILE.cuh (a header that launches kernels) keeps its
name, so that the sources' quoted includes find it next to them.

The one change: every kernel launch

    name<targs>  <<<grid, block[, smem[, stream]]>>>  (args)

becomes a call into the emulator (tests/emu/fake_cuda.h)

    emu_launch([](auto... a_) { name<targs>(a_...); }, KADDR, "name<targs>",
               grid, block, smem, stream, args)

The lambda lets the kernel's template arguments be deduced from the arguments, as
in a launch; the arguments themselves are evaluated once, at the launch, and each
emulated thread gets its own copy of them. KADDR is the kernel's address (for
cudaFuncSetAttribute) when the launch passes dynamic shared memory, else nullptr.
A `#line` directive keeps compiler messages on the original file and line. Any
`<<<` the script cannot take apart stops the build with the file and line.
"""
import os
import re
import sys

IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(::[A-Za-z_][A-Za-z0-9_]*)*$")


def fail(path, text, pos, why):
    line = text.count("\n", 0, pos) + 1
    sys.exit(f"{path}:{line}: cu2cpp: {why}")


def skip_ws_back(text, i):
    while i > 0 and text[i - 1].isspace():
        i -= 1
    return i


def kernel_start(path, text, end):
    """Start of the kernel expression that ends just before `end` (exclusive)."""
    i = skip_ws_back(text, end)
    if i > 0 and text[i - 1] == ">":          # template arguments: back to the matching '<'
        depth, j = 0, i - 1
        while j >= 0:
            c = text[j]
            if c == ">":
                depth += 1
            elif c == "<":
                depth -= 1
                if depth == 0:
                    break
            elif c in ";{}":
                fail(path, text, end, "unbalanced template arguments before <<<")
            j -= 1
        if j < 0:
            fail(path, text, end, "unbalanced template arguments before <<<")
        i = skip_ws_back(text, j)
    j = i
    while j > 0 and (text[j - 1].isalnum() or text[j - 1] in "_:"):
        j -= 1
    if not IDENT.match(text[j:i]):
        fail(path, text, end, f"no kernel name before <<< (found {text[j:i]!r})")
    return j


def matching(path, text, i, open_c, close_c):
    """Index of the bracket closing the one at text[i], skipping strings and chars."""
    pairs = {"(": ")", "[": "]", "{": "}"}
    stack = [close_c]
    j = i + 1
    while j < len(text):
        c = text[j]
        if c in "\"'":
            q, j = c, j + 1
            while j < len(text) and text[j] != q:
                j += 2 if text[j] == "\\" else 1
        elif c in pairs:
            stack.append(pairs[c])
        elif c in ")]}":
            if c != stack.pop():
                fail(path, text, i, "unbalanced brackets in a kernel launch")
            if not stack:
                return j
        j += 1
    fail(path, text, i, f"no closing {close_c!r}")


def split_top(path, text, s, pos):
    """s split at the commas outside brackets."""
    parts, depth, cur = [], 0, ""
    for c in s:
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        if c == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += c
    parts.append(cur)
    parts = [p.strip() for p in parts]
    if any(not p for p in parts):
        fail(path, text, pos, "empty launch configuration item")
    return parts


def transform(path, text):
    out, at = [], 0
    count = 0
    while True:
        k = text.find("<<<", at)
        if k < 0:
            break
        start = kernel_start(path, text, k)
        # the configuration: up to the first >>> outside brackets
        depth, j = 0, k + 3
        while j < len(text):
            c = text[j]
            if c in "([{":
                depth += 1
            elif c in ")]}":
                depth -= 1
            elif c == ";":
                fail(path, text, k, "no >>> before ';'")
            elif depth == 0 and text.startswith(">>>", j):
                break
            j += 1
        else:
            fail(path, text, k, "no >>>")
        config = split_top(path, text, text[k + 3 : j], k)
        if not 2 <= len(config) <= 4:
            fail(path, text, k, f"a launch takes 2 to 4 configuration items, not {len(config)}")
        config += ["0", "0"][: 4 - len(config)]
        p = j + 3
        while p < len(text) and text[p].isspace():
            p += 1
        if p >= len(text) or text[p] != "(":
            fail(path, text, k, "no argument list after >>>")
        q = matching(path, text, p, "(", ")")
        args = text[p + 1 : q].strip()
        name = " ".join(text[start:k].split())
        kaddr = "nullptr" if config[2] == "0" else f"(const void *)&{name}"
        call = (f"emu_launch([](auto... emu_a_) {{ {name}(emu_a_...); }}, {kaddr}, \"{name}\", "
                f"{config[0]}, {config[1]}, {config[2]}, {config[3]}" + (f", {args}" if args else "") + ")")
        # keep the line count: the launch's newlines go after the call
        out.append(text[at:start])
        out.append(call + "\n" * (text.count("\n", start, q + 1) - call.count("\n")))
        at = q + 1
        count += 1
    out.append(text[at:])
    return "".join(out), count


def main():
    if len(sys.argv) < 3:
        sys.exit("usage: cu2cpp.py OUTDIR FILE.cu|FILE.cuh...  (FILE.cu -> OUTDIR/FILE.cpp, FILE.cuh -> OUTDIR/FILE.cuh)")
    outdir = sys.argv[1]
    for src in sys.argv[2:]:
        name = os.path.basename(src)
        if name.endswith(".cu"):
            dst = os.path.join(outdir, name[:-3] + ".cpp")
        elif name.endswith(".cuh"):
            dst = os.path.join(outdir, name)
        else:
            sys.exit(f"cu2cpp: {src}: not a .cu or .cuh file")
        with open(src, encoding="utf-8") as f:
            text = f.read()
        body, n = transform(src, text)
        with open(dst, "w", encoding="utf-8") as f:
            f.write(f"// generated by tests/emu/cu2cpp.py from {src}: {n} kernel launches; do not edit\n")
            f.write(f'#line 1 "{src}"\n')
            f.write(body)


if __name__ == "__main__":
    main()
