#!/usr/bin/env bash
# build_corpus.sh — build the default English pretraining corpus for mlmgpu.
#
# Usage: scripts/build_corpus.sh [OUT_DIR]   (default: corpus/ at the repo root)
#
# Installs seven DFSG-free Debian documentation packages with apt (Debian 12,
# run as root) and converts every source document to plain UTF-8 text, one
# .txt file per document, in one subfolder per package:
#
#   perl-doc           Perl's .pod pages          -> pod2text --utf8
#   python3.11-doc     Sphinx HTML (Python 3.11)  -> inline html.parser converter
#   cmake-doc          Sphinx HTML (CMake)        -> same converter
#   postgresql-doc-15  DocBook HTML (PostgreSQL)  -> same converter
#   sqlite3-doc        HTML (SQLite)              -> same converter
#   apache2-doc        HTML (Apache httpd, the English manual only) -> same
#   git-doc            AsciiDoc .txt manuals      -> kept as text, include::/
#                      ifdef:: lines dropped, linkgit:x[1] written as x(1)
#
# The HTML converter keeps the page's main content and drops navigation bars,
# sidebars, tables of contents, language switchers, "¶" links and SVG diagrams.
#
# Index, search and table-of-contents pages and generated tables are skipped
# (see EXCLUDE_* below and docs/CORPUS.md). Every output file then gets the same
# light normalisation: trailing spaces stripped, runs of 3+ blank lines
# collapsed to 2, leading/trailing blank lines removed; files under 1 KB are
# dropped. Inputs are processed in sorted order and nothing depends on time or
# locale, so the same package versions give byte-identical output.
#
# Idempotent: OUT_DIR/.done records the package versions, converter versions
# and this script's hash; if they match, the script only prints the summary.
# Only OUT_DIR/<package>/ folders and OUT_DIR/.done are ever replaced.
set -euo pipefail

REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT_DIR=${1:-$REPO_ROOT/corpus}
OUT_DIR=${OUT_DIR%/}

DOC_PKGS=(perl-doc python3.11-doc cmake-doc postgresql-doc-15 sqlite3-doc
          apache2-doc git-doc)
TOOL_PKGS=(perl python3)            # pod2text, and python3 for the HTML converter
PY=/usr/bin/python3                 # Debian's python, not a pyenv/venv shim

PERL_POD_DIR=/usr/share/perl/5.36.0/pod
PY_HTML_DIR=/usr/share/doc/python3.11/html
CMAKE_HTML_DIR=/usr/share/doc/cmake-doc/html
PG_HTML_DIR=/usr/share/doc/postgresql-doc-15/html
SQLITE_HTML_DIR=/usr/share/doc/sqlite3
APACHE_HTML_DIR=/usr/share/doc/apache2-doc/manual/en
GIT_DOC_DIR=/usr/share/doc/git-doc

export LC_ALL=C                     # sort order and tool behaviour fixed
export DEBIAN_FRONTEND=noninteractive
NPROC=$(nproc 2>/dev/null || echo 2)

log() { printf '[build_corpus] %s\n' "$*" >&2; }

# ---------------------------------------------------------------- packages
installed_version() {
    dpkg-query -W -f='${db:Status-Abbrev} ${Version}' "$1" 2>/dev/null |
        awk '$1 == "ii" { print $2 }'
}

missing=()
for p in "${DOC_PKGS[@]}" "${TOOL_PKGS[@]}"; do
    [[ -n "$(installed_version "$p")" ]] || missing+=("$p")
done
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        log "missing packages: ${missing[*]}; run as root (or install them) first"
        exit 1
    fi
    log "installing: ${missing[*]}"
    apt_log=$(mktemp)
    if ! { apt-get update -qq &&
           apt-get install -y -qq --no-install-recommends "${missing[@]}"; } \
           > "$apt_log" 2>&1; then
        cat "$apt_log" >&2; rm -f "$apt_log"
        log "apt-get failed"
        exit 1
    fi
    rm -f "$apt_log"
fi

script_hash=$(sha256sum "${BASH_SOURCE[0]}" | cut -d' ' -f1)
stamp=$(
    for p in "${DOC_PKGS[@]}" "${TOOL_PKGS[@]}"; do
        printf '%s %s\n' "$p" "$(installed_version "$p")"
    done
    printf 'Pod::Text %s\n' "$(perl -MPod::Text -e 'print $Pod::Text::VERSION')"
    printf 'python %s\n' "$("$PY" -c 'import platform; print(platform.python_version())')"
    printf 'script %s\n' "$script_hash"
)

# ---------------------------------------------------------------- summary
summary() {
    local dir=$1 total_files=0 total_bytes=0 p n b
    printf '%-20s %8s %10s\n' package files MB
    for p in "${DOC_PKGS[@]}"; do
        n=$(find "$dir/$p" -type f -name '*.txt' | wc -l)
        b=$(find "$dir/$p" -type f -name '*.txt' -printf '%s\n' | awk '{s+=$1} END {print s+0}')
        printf '%-20s %8d %10.2f\n' "$p" "$n" "$(awk -v b="$b" 'BEGIN{print b/1e6}')"
        total_files=$((total_files + n)); total_bytes=$((total_bytes + b))
    done
    printf '%-20s %8d %10.2f\n' total "$total_files" "$(awk -v b="$total_bytes" 'BEGIN{print b/1e6}')"
}

if [[ -f "$OUT_DIR/.done" ]] && [[ "$(cat "$OUT_DIR/.done")" == "$stamp" ]]; then
    log "$OUT_DIR is up to date (same package versions); nothing to do"
    summary "$OUT_DIR"
    exit 0
fi

# ---------------------------------------------------------------- build
mkdir -p "$OUT_DIR"
WORK=$(mktemp -d "$OUT_DIR/.build.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/out
mkdir -p "$STAGE"

# Source files excluded (extended regexes over paths relative to each
# package's doc root); docs/CORPUS.md says why for each:
#   Perl: perltoc (generated table of contents), perluniprops (generated
#     Unicode property tables), perlmodlib (generated list of module names).
#   Sphinx (Python, CMake): indexes, search, the TOC page, copied reST sources.
#   PostgreSQL: the book index.
#   SQLite: capi3ref (all of c3ref/ again on one page), releaselog/ (repeats
#     changes.html), requirements (excerpts of the other pages), generated
#     cross-reference/keyword/site maps and lists, syntax diagram pages.
#   Apache: directive lists and quick reference tables, the site map.
EXCLUDE_PERL='^(perltoc|perluniprops|perlmodlib)\.pod$'
EXCLUDE_SPHINX='^(_sources|_static|_downloads|_images)/|^(genindex.*|search|py-modindex|contents)\.html$'
EXCLUDE_PG='^bookindex\.html$'
EXCLUDE_SQLITE='^(releaselog|syntax|images)/|^(capi3ref|requirements|doc_[a-z]+_crossref|keyword_index|sitemap|doclist|syntaxdiagrams|toc)\.html$|^c3ref/(funclist|objlist|constlist)\.html$'
EXCLUDE_APACHE='^(sitemap|mod/directives|mod/quickreference)\.html$'

list_files() {   # list_files DIR NAME_GLOB EXCLUDE_REGEX -> sorted relative paths
    (cd "$1" && find . -type f -name "$2" -printf '%P\n') | grep -Ev "$3" | sort
}

# --- perl-doc: pod2text per page, in parallel (output is per file, so order
# of execution does not matter).
log "perl-doc: converting .pod with pod2text"
mkdir -p "$STAGE/perl-doc"
# shellcheck disable=SC2016  # $1..$3 are expanded by the inner sh
list_files "$PERL_POD_DIR" '*.pod' "$EXCLUDE_PERL" |
    xargs -P "$NPROC" -I{} sh -c \
        'pod2text --utf8 "$1/$2" > "$3/${2%.pod}.txt"' _ "$PERL_POD_DIR" {} "$STAGE/perl-doc"

# --- HTML converter (Python standard library only).
cat > "$WORK/html2txt.py" <<'PY'
"""html2txt.py SRC_ROOT DST_ROOT < list-of-relative-paths

Renders the readable content of the Sphinx (Python, CMake), DocBook
(PostgreSQL), SQLite and Apache HTML pages as plain text: block elements become paragraphs, inline whitespace is
collapsed, <pre> is kept verbatim, navigation and tables of contents are
skipped, and when the page marks its main content (role="main") only that is
kept."""
import os
import re
import sys
from html.parser import HTMLParser

VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link",
        "meta", "param", "source", "track", "wbr"}
BLOCK = {"address", "article", "aside", "blockquote", "caption", "dd", "div",
         "dl", "dt", "figcaption", "figure", "footer", "h1", "h2", "h3", "h4",
         "h5", "h6", "header", "hr", "li", "main", "ol", "p", "pre", "section",
         "table", "tbody", "td", "tfoot", "th", "thead", "tr", "ul"}
SKIP_TAGS = {"head", "script", "style", "nav", "noscript", "button", "form", "svg"}
SKIP_IDS = {"page-header", "path", "quickview", "footer"}   # Apache manual
SKIP_CLASSES = {"navheader", "navfooter", "toc", "list-of-tables",
                "list-of-figures", "list-of-examples", "sphinxsidebar",
                "related", "footer", "headerlink", "toctree-wrapper",
                "navigation", "mobile-nav", "copybutton", "nosearch", "fancy_toc",
                "toplang", "bottomlang", "top", "up", "permalink",
                "contents"}
# A paragraph that is only a grammar rule's name ("select-stmt:", "expr:"): the label
# of an SVG syntax diagram in the SQLite pages.
DIAGRAM_LABEL = re.compile(r"[a-z][a-z0-9]*(-[a-z0-9]+)*:")


class Text(HTMLParser):
    def __init__(self, main_only):
        super().__init__(convert_charrefs=True)
        self.main_only = main_only
        self.stack = []        # (tag, skip, main, pre) per open element
        self.skip = 0          # >0 inside a skipped element
        self.main = 0          # >0 inside role="main"
        self.pre = 0           # >0 inside <pre>
        self.blocks = []       # finished paragraphs
        self.cur = []          # pieces of the paragraph being built
        self.pre_block = False # the paragraph being built is preformatted

    def active(self):
        return self.skip == 0 and (self.main > 0 or not self.main_only)

    def flush(self):
        if self.cur:
            text = "".join(self.cur)
            if not self.pre_block:
                text = " ".join(text.split())
            if text.strip() and not DIAGRAM_LABEL.fullmatch(text):
                self.blocks.append(text.strip("\n"))
            self.cur = []
        self.pre_block = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        classes = set((a.get("class") or "").split())
        skip = tag in SKIP_TAGS or bool(classes & SKIP_CLASSES) or \
            a.get("id") in SKIP_IDS or a.get("role") == "navigation"
        main = a.get("role") == "main"
        if tag in BLOCK or tag == "br":
            if self.active():
                if tag == "br" and self.cur:
                    self.cur.append("\n" if self.pre else " ")
                else:
                    self.flush()
        if tag in VOID:
            return
        is_pre = tag == "pre"
        self.stack.append((tag, skip, main, is_pre))
        self.skip += skip
        self.main += main
        self.pre += is_pre
        if is_pre and self.active():
            self.pre_block = True

    def handle_startendtag(self, tag, attrs):
        if tag == "br" and self.active() and self.cur:
            self.cur.append("\n" if self.pre else " ")

    def handle_endtag(self, tag):
        if not any(t == tag for t, *_ in self.stack):
            return
        while self.stack:
            t, skip, main, is_pre = self.stack.pop()
            was_active = self.active()
            if t in BLOCK and was_active:
                self.flush()
            self.skip -= skip
            self.main -= main
            self.pre -= is_pre
            if t == tag:
                break

    def handle_data(self, data):
        if self.active():
            if self.pre:
                self.pre_block = True
            self.cur.append(data)

    def text(self):
        self.flush()
        return "\n\n".join(self.blocks) + "\n"


def main():
    src, dst = sys.argv[1], sys.argv[2]
    for rel in sys.stdin.read().split("\n"):
        if not rel:
            continue
        with open(os.path.join(src, rel), encoding="utf-8", errors="replace") as f:
            html = f.read()
        p = Text(main_only='role="main"' in html)
        p.feed(html)
        p.close()
        # Output name: the source path with .txt, spaces as "_" (some CMake
        # pages have spaces in their names).
        out = os.path.join(dst, re.sub(r"\s", "_", os.path.splitext(rel)[0]) + ".txt")
        os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w", encoding="utf-8") as f:
            f.write(p.text())


main()
PY

html_package() {   # html_package PKG SRC_DIR EXCLUDE_REGEX
    local pkg=$1 src=$2 excl=$3
    log "$pkg: converting HTML"
    mkdir -p "$STAGE/$pkg"
    list_files "$src" '*.html' "$excl" > "$WORK/$pkg.list"
    # NPROC interleaved shares of the list, one process each; every output
    # depends only on its own input file, so the split does not affect it.
    local i pids=()
    for ((i = 0; i < NPROC; i++)); do
        awk -v n="$NPROC" -v i="$i" 'NR % n == i' "$WORK/$pkg.list" |
            "$PY" "$WORK/html2txt.py" "$src" "$STAGE/$pkg" &
        pids+=($!)
    done
    for i in "${pids[@]}"; do wait "$i"; done
}

html_package python3.11-doc     "$PY_HTML_DIR"     "$EXCLUDE_SPHINX"
html_package cmake-doc          "$CMAKE_HTML_DIR"  "$EXCLUDE_SPHINX"
html_package postgresql-doc-15  "$PG_HTML_DIR"     "$EXCLUDE_PG"
html_package sqlite3-doc        "$SQLITE_HTML_DIR" "$EXCLUDE_SQLITE"
html_package apache2-doc        "$APACHE_HTML_DIR" "$EXCLUDE_APACHE"

# --- git-doc: the AsciiDoc sources are already plain text; drop include and
# conditional directives and write linkgit:git-foo[1] as git-foo(1).
log "git-doc: copying AsciiDoc .txt manuals"
mkdir -p "$STAGE/git-doc"
list_files "$GIT_DOC_DIR" '*.txt' '^$' | while IFS= read -r rel; do
    mkdir -p "$STAGE/git-doc/$(dirname "$rel")"
    sed -E -e '/^(include|ifdef|ifndef|endif|ifeval)::/d' \
           -e 's/linkgit:([A-Za-z0-9._-]+)\[([0-9]+)\]/\1(\2)/g' \
        "$GIT_DOC_DIR/$rel" > "$STAGE/git-doc/$rel"
done

# --- normalise every file; drop those under 1 KB and empty folders.
log "normalising whitespace, dropping files under 1 KB"
"$PY" - "$STAGE" <<'PY'
import os, re, sys
root = sys.argv[1]
for d, _, files in os.walk(root):
    for name in files:
        path = os.path.join(d, name)
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        lines = [l.rstrip() for l in text.replace("\r\n", "\n").split("\n")]
        text = "\n".join(lines).strip("\n")
        text = re.sub(r"\n{4,}", "\n\n\n", text) + "\n"  # 3+ blank lines -> 2
        data = text.encode("utf-8")
        if len(data) < 1024:
            os.remove(path)
        else:
            with open(path, "wb") as f:
                f.write(data)
PY
find "$STAGE" -mindepth 1 -type d -empty -delete

# --- swap in the new package folders, then write the stamp.
rm -f "$OUT_DIR/.done"
for p in "${DOC_PKGS[@]}"; do
    rm -rf "${OUT_DIR:?}/${p:?}"
    mv "$STAGE/$p" "$OUT_DIR/$p"
done
printf '%s\n' "$stamp" > "$OUT_DIR/.done"
log "done: $OUT_DIR"
summary "$OUT_DIR"
