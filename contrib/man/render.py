#!/usr/bin/env python3
"""Writes a man page from a template and the built binaries' own --help, so the two cannot drift.

    render.py TEMPLATE BIN_DIR VERSION DATE [NAME=VALUE ...] > PAGE

The template is roff with a hand-written NAME, DESCRIPTION, FILES and SEE ALSO. Each line

    .\\" @help berth run --help        (the command's stdout, as subsections and entries)
    .\\" @help-stderr berth -help      (its stderr: docker-proxy mode prints Go's usage there)
    .\\" @usage berth                  (only the USAGE lines of its output, for SYNOPSIS)
    .\\" @options berth run --help     (only the entries of its OPTIONS section)

is replaced by that text turned into roff; the program (`berth`, `berth-cni`) is run from BIN_DIR,
and its path reads as its name in the page. @VERSION@, @DATE@ and each @NAME@ of the arguments are
substituted everywhere.

The help texts (Sources/Mappings, Sources/BerthCLI, Sources/BerthCNI) share one layout: a heading
line (`OPTIONS:`, `USAGE: ...`), entries indented two spaces with the description from column 26
or on the lines below, deeper indented; paragraphs at column 0; indented examples. Go's flag usage
(`Usage of berth:`, `  -flag type`, a tab and the description) is the docker-proxy mode's.
"""

import re
import subprocess
import sys

# Headings whose indented lines are entries (an option, an argument, a subcommand, a key).
ENTRY_SECTIONS = {"OPTIONS", "ARGUMENTS", "SUBCOMMANDS", "CONFIGURATION"}
# A two-space-indented entry: its term, then two spaces and the description, or the end of the line;
# a term 23 or 24 characters long has one space before the description, at column 26.
TERM = r'((?:-[-\w]+(?:, -[-\w]+)*(?: <[-\w:.]+>)?)|<[-\w]+>|"\w+"|[a-z][-\w]*)'
ENTRY = re.compile(r"^  " + TERM + r"(?:\s{2,}(\S.*))?$")
ENTRY_TIGHT = re.compile(r"^  " + TERM + r" (\S.*)$")
DESCRIPTION_COLUMN = 26
HEADING = re.compile(r"^([A-Z][A-Z]+)(?: \(.*\))?:(?: (.*))?$")
GO_FLAG = re.compile(r"^  (-[-\w]+)(?: (\w+))?(?:\t(.*))?$")


def escape(text):
    """Plain text as roff: backslashes, minus signs, a leading dot or quote."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    return "\\&" + text if text[:1] in (".", "'") else text


def inline(text):
    """A description: `code` in bold, <placeholders> in italics."""
    out = escape(text)
    out = re.sub(r"`([^`]+)`", r"\\fB\1\\fR", out)
    return re.sub(r"(<[^<>\s]+>)", r"\\fI\1\\fR", out)


def term(text):
    """An entry's term: options bold, placeholders italic."""
    parts = []
    for word in re.split(r"(, | )", text):
        if word.startswith("<"):
            parts.append("\\fI" + escape(word) + "\\fR")
        elif word in (", ", " "):
            parts.append(word)
        else:
            parts.append("\\fB" + escape(word) + "\\fR")
    return "".join(parts)


def preformatted(lines):
    body = [escape(line[2:] if line.startswith("  ") else line) for line in lines]
    return [".RS 2", ".nf"] + body + [".fi", ".RE"]


def usage_lines(text):
    """The USAGE: line and the lines that continue it (indented as far as the first command)."""
    lines, out, inside = text.splitlines(), [], False
    for line in lines:
        if line.startswith("USAGE: "):
            out.append(line[len("USAGE: "):])
            inside = True
        elif inside and line.startswith("       ") and line.strip():
            out.append(line.strip())
        else:
            inside = False
    return out


def synopsis(text):
    return [".nf"] + [inline(line) for line in usage_lines(text)] + [".fi"]


def go_usage(text):
    """Go's flag.PrintDefaults: `  -name type` and a tab, or the description on the next line."""
    out, entry = [], None
    for line in text.splitlines()[1:]:
        match = GO_FLAG.match(line)
        if match:
            name, kind, description = match.groups()
            entry = [".TP", term(name) + (" \\fI" + escape(kind) + "\\fR" if kind else "")]
            out += entry
            if description:
                out.append(inline(description.strip()))
        elif line.strip() and entry:
            out.append(inline(line.strip()))
    return out


def entries(lines):
    """Entries of an OPTIONS-like section; lines that are none are paragraphs between them."""
    out, description, text = [], None, []

    def flush_text():
        if text:
            out.extend([".PP", inline(" ".join(t.strip() for t in text))])
            text.clear()

    for i, line in enumerate(lines):
        match = ENTRY.match(line)
        tight = ENTRY_TIGHT.match(line)
        if not match and tight and tight.start(2) == DESCRIPTION_COLUMN:
            match = tight
        deeper = i + 1 < len(lines) and lines[i + 1].startswith("    ")
        if match and (match.group(2) or deeper):
            flush_text()
            description = []
            out += [".TP", term(match.group(1))]
            if match.group(2):
                out.append(inline(match.group(2)))
        elif line.startswith("    ") and description is not None:
            out.append(inline(line.strip()))
        else:
            description = None
            text.append(line)
    flush_text()
    return out


def body(text, only=None):
    """The whole help as roff, or only the entries of the section named `only`."""
    out, section, block = [], None, []

    def flush():
        if not block:
            return
        if section in ENTRY_SECTIONS:
            if only is None or only == section:
                out.extend(entries(block))
        elif only is None:
            if block[0].startswith("  "):
                out.extend(preformatted(block))
            else:
                out.extend([".PP", inline(" ".join(line.strip() for line in block))])
        block.clear()

    lines = text.splitlines()
    i = 0
    while i < len(lines):
        line = lines[i]
        heading = HEADING.match(line)
        if heading and heading.group(1) == "USAGE":
            flush()
            if only is None:
                usage = usage_lines("\n".join(lines[i:]))
                out += [".PP", ".nf", escape("Usage: " + usage[0])] + [escape(" " * 7 + u) for u in usage[1:]] + [".fi"]
            i += 1
            while i < len(lines) and lines[i].startswith("       ") and lines[i].strip():
                i += 1
            section = None
            continue
        if heading and heading.group(1) == "OVERVIEW":
            flush()
            section = None
            block.append(heading.group(2))
        elif heading:
            flush()
            section = heading.group(1)
            if only is None:
                name = heading.group(1)
                out.append('.SS "' + (name if name == "API" else name.capitalize()) + '"')
                if " (" in line:
                    out.extend([".PP", inline(line[line.index("(") + 1:line.rindex(")")] + ":")])
        elif not line.strip():
            flush()
        elif section in ENTRY_SECTIONS and not block and not line.startswith(" "):
            # A paragraph after the entries (and a blank line) is the help's closing text.
            section = None
            block.append(line)
        elif block and block[0].startswith("  ") != line.startswith("  ") and section not in ENTRY_SECTIONS:
            # A paragraph followed at once by its indented example (`Example:` and the command).
            flush()
            block.append(line)
        else:
            block.append(line)
        i += 1
    flush()
    return out


def run(bin_dir, words, stream):
    program = words[0]
    path = bin_dir.rstrip("/") + "/" + program
    done = subprocess.run([path] + words[1:], capture_output=True, text=True, stdin=subprocess.DEVNULL)
    text = done.stdout if stream == "stdout" else done.stderr
    if stream == "any":
        text = done.stdout or done.stderr
    elif done.returncode != 0:
        sys.exit(f"render.py: {' '.join(words)} exited {done.returncode}: {done.stderr.strip()}")
    return text.replace(path, program)


def main():
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    template, bin_dir, version, date = sys.argv[1:5]
    values = {"VERSION": version, "DATE": date}
    values.update(pair.split("=", 1) for pair in sys.argv[5:])
    out = []
    for line in open(template, encoding="utf-8").read().splitlines():
        directive = re.match(r'^\.\\" @(help|help-stderr|usage|options) (.+)$', line)
        if not directive:
            for name, value in values.items():
                line = line.replace("@" + name + "@", value)
            out.append(line)
            continue
        kind, words = directive.group(1), directive.group(2).split()
        if kind == "usage":
            out += synopsis(run(bin_dir, words, "any"))
        elif kind == "help-stderr":
            out += go_usage(run(bin_dir, words, "stderr"))
        elif kind == "options":
            out += body(run(bin_dir, words, "stdout"), only="OPTIONS")
        else:
            out += body(run(bin_dir, words, "stdout"))
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
