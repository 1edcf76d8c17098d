#!/usr/bin/env python3
"""dockerd's userland-proxy-path in daemon.json, changed without touching anything else.

    daemon-json.py set FILE PATH     set userland-proxy-path to PATH (the file is made if missing)
    daemon-json.py unset FILE PATH   remove it, if it is PATH

The other keys stay as they were, in their order; the file is replaced in one rename, with its
mode. A file that is not a JSON object is refused, with the parser's reason, and left alone.
"""

import json
import os
import sys
import tempfile

KEY = "userland-proxy-path"


def fail(message):
    sys.exit(f"daemon-json: {message}")


def read(path):
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except FileNotFoundError:
        return None
    except OSError as error:
        fail(f"cannot read {path}: {error.strerror}")
    if not text.strip():
        return {}
    try:
        config = json.loads(text)
    except json.JSONDecodeError as error:
        fail(f"{path} is not valid JSON (line {error.lineno} column {error.colno}: {error.msg}); "
             f"nothing changed: fix it, or set \"{KEY}\" by hand")
    if not isinstance(config, dict):
        fail(f"{path} is JSON but not an object; nothing changed")
    return config


def write(path, config, mode):
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, temporary = tempfile.mkstemp(dir=directory, prefix=".daemon.json.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(config, f, indent=2)
            f.write("\n")
        os.chmod(temporary, mode)
        os.rename(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise


def main():
    if len(sys.argv) != 4 or sys.argv[1] not in ("set", "unset"):
        sys.exit(__doc__)
    action, path, proxy = sys.argv[1:]
    path = os.path.realpath(path)  # a linked daemon.json keeps its link
    config = read(path)
    mode = os.stat(path).st_mode & 0o7777 if config is not None else 0o644
    if action == "set":
        config = config if config is not None else {}
        if config.get(KEY) == proxy:
            print(f"daemon-json: {path} already has \"{KEY}\": \"{proxy}\"")
            return
        config[KEY] = proxy
        write(path, config, mode)
        print(f"daemon-json: {path}: \"{KEY}\": \"{proxy}\"; restart dockerd to use it")
        if config.get("userland-proxy") is False:
            print("daemon-json: note: \"userland-proxy\" is false there, so dockerd starts no proxy")
    else:
        if config is None or config.get(KEY) != proxy:
            print(f"daemon-json: {path} does not name {proxy}; nothing changed")
            return
        del config[KEY]
        write(path, config, mode)
        print(f"daemon-json: {path}: \"{KEY}\" removed; restart dockerd")


if __name__ == "__main__":
    main()
