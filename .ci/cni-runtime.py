#!/usr/bin/python3
"""A minimal CNI runtime for .ci/cni-test.sh: runs a network configuration list's plugins the way
SPEC.md section 3 (CNI 1.0.0 and 1.1.0) tells a runtime to, so real chains (bridge + host-local +
portmap or berth-cni) can be driven without cnitool or a container runtime.

  cni-runtime.py chain ADD|DEL|CHECK CONFLIST CONTAINER_ID NETNS IFNAME
                 [--port-mappings JSON] [--cache DIR] [--no-prev-result] [--no-cache]
      ADD: the plugins in order; each one's configuration is its object in the list plus the list's
      cniVersion and name, "runtimeConfig" holding the capability arguments it declares in
      "capabilities" (that key itself left out; here only portMappings, from --port-mappings),
      "prevResult" the previous plugin's result (none for the first). The final result is
      printed; it is cached in --cache (default: the conflist's directory) as
      <name>-<container id>-<ifname>.json, {"result": ..., "capabilityArgs": ..., "steps":
      [{"type": ..., "result": ...} for every plugin in order]}. A failed ADD leaves no cache.
      DEL: the plugins in reverse order, prevResult the cached ADD result, the capability
      arguments those of the ADD (as a runtime passes the same ones again), --port-mappings
      replacing them. --no-prev-result leaves prevResult out, --no-cache both (a runtime that
      lost its state). The cache is kept, so a second DEL gets the same again (libcni would
      forget the result; the test wants both cases).
      CHECK: the plugins in order, prevResult and capability arguments as for DEL (a cached
      result must exist).
  cni-runtime.py call TYPE COMMAND [--conflist CONFLIST | --config JSON] [--cni-version V]
                 [--valid-attachments CONTAINER_ID/IFNAME,...] [CONTAINER_ID NETNS IFNAME]
      One plugin, one command (GC, STATUS, VERSION, or any other), its configuration read from
      stdin or given as --config JSON, or built from the object of that type in --conflist
      (cniVersion replaced by --cni-version; --valid-attachments, a comma-separated list that may
      be empty, fills "cni.dev/valid-attachments", for GC).

CNI_PATH comes from the environment (the plugins are looked up there, and it is passed on).
A plugin's stderr goes to ours. When a plugin exits non-zero, its stdout (the CNI error JSON) is
printed on stdout, a line naming the plugin on stderr, and we exit with its status (1 if that
was 0 but its output was no JSON), so the caller can read the error's "code".
"""

import argparse
import json
import os
import subprocess
import sys


def die(msg, code=2):
    print("cni-runtime: %s" % msg, file=sys.stderr)
    sys.exit(code)


def find_plugin(ptype):
    for d in os.environ.get("CNI_PATH", "").split(":"):
        if d and os.access(os.path.join(d, ptype), os.X_OK):
            return os.path.join(d, ptype)
    die("no plugin %r in CNI_PATH=%r" % (ptype, os.environ.get("CNI_PATH", "")))


def exec_plugin(ptype, command, config, cid=None, netns=None, ifname=None, want_result=True):
    """Runs one plugin; returns its parsed stdout (None when empty), or exits as documented."""
    env = dict(os.environ)
    env["CNI_COMMAND"] = command
    for key, value in (("CNI_CONTAINERID", cid), ("CNI_NETNS", netns), ("CNI_IFNAME", ifname)):
        if value is not None:
            env[key] = value
        else:
            env.pop(key, None)
    env.pop("CNI_ARGS", None)
    data = json.dumps(config).encode() if not isinstance(config, bytes) else config
    try:
        proc = subprocess.run([find_plugin(ptype)], input=data, stdout=subprocess.PIPE, env=env, timeout=60)
    except subprocess.TimeoutExpired:
        die("%s %s: no answer in 60 s" % (ptype, command), 1)
    out = proc.stdout.decode(errors="replace")
    if proc.returncode != 0:
        sys.stdout.write(out if out.endswith("\n") or not out else out + "\n")
        sys.stdout.flush()
        die("%s %s exited %d" % (ptype, command, proc.returncode), proc.returncode)
    if not want_result:
        return out
    if not out.strip():
        return None
    try:
        return json.loads(out)
    except ValueError:
        sys.stdout.write(out + "\n")
        die("%s %s: its output is no JSON" % (ptype, command), 1)


def plugin_config(plugin, conflist, version=None, prev=None, capability_args=None):
    conf = {"cniVersion": version or conflist["cniVersion"], "name": conflist["name"]}
    for key, value in plugin.items():
        if key not in ("capabilities", "cniVersion", "name"):
            conf[key] = value
    runtime_config = {}
    for cap, enabled in plugin.get("capabilities", {}).items():
        if enabled and capability_args and cap in capability_args:
            runtime_config[cap] = capability_args[cap]
    if runtime_config:
        conf["runtimeConfig"] = runtime_config
    if prev is not None:
        conf["prevResult"] = prev
    return conf


def chain(args):
    with open(args.conflist) as f:
        conflist = json.load(f)
    cache_dir = args.cache or os.path.dirname(os.path.abspath(args.conflist))
    cache = os.path.join(cache_dir, "%s-%s-%s.json" % (conflist["name"], args.container_id, args.ifname))
    plugins = conflist["plugins"]
    where = dict(cid=args.container_id, netns=args.netns, ifname=args.ifname)
    op = args.operation.upper()
    if op == "ADD":
        caps = {}
        if args.port_mappings is not None:
            caps["portMappings"] = json.loads(args.port_mappings)
        if os.path.exists(cache):
            os.unlink(cache)  # a failed ADD leaves nothing cached: nor does an earlier one
        prev = None
        steps = []
        for plugin in plugins:
            prev = exec_plugin(plugin["type"], "ADD", plugin_config(plugin, conflist, prev=prev, capability_args=caps), **where)
            if prev is None:
                die("%s ADD printed no result" % plugin["type"], 1)
            steps.append({"type": plugin["type"], "result": prev})
        with open(cache, "w") as f:
            json.dump({"result": prev, "capabilityArgs": caps, "steps": steps}, f)
        print(json.dumps(prev))
        return
    cached = {}
    if os.path.exists(cache) and not args.no_cache:
        with open(cache) as f:
            cached = json.load(f)
    prev = None if args.no_prev_result else cached.get("result")
    caps = cached.get("capabilityArgs", {})
    if args.port_mappings is not None:
        caps = dict(caps, portMappings=json.loads(args.port_mappings))
    if op == "DEL":
        for plugin in reversed(plugins):
            exec_plugin(plugin["type"], "DEL", plugin_config(plugin, conflist, prev=prev, capability_args=caps), want_result=False, **where)
    elif op == "CHECK":
        if prev is None:
            die("CHECK needs a cached ADD result (%s)" % cache)
        for plugin in plugins:
            exec_plugin(plugin["type"], "CHECK", plugin_config(plugin, conflist, prev=prev, capability_args=caps), want_result=False, **where)
    else:
        die("unknown operation %r (ADD, DEL, CHECK)" % args.operation)


def call(args):
    if args.conflist:
        with open(args.conflist) as f:
            conflist = json.load(f)
        matching = [p for p in conflist["plugins"] if p["type"] == args.type]
        if not matching:
            die("no plugin of type %r in %s" % (args.type, args.conflist))
        config = plugin_config(matching[0], conflist, version=args.cni_version)
    else:
        config = json.loads(args.config) if args.config is not None else json.load(sys.stdin)
        if args.cni_version:
            config["cniVersion"] = args.cni_version
    if args.valid_attachments is not None:
        attachments = []
        for a in filter(None, args.valid_attachments.split(",")):
            cid, _, ifname = a.partition("/")
            attachments.append({"containerID": cid, "ifname": ifname})
        config["cni.dev/valid-attachments"] = attachments
    where = args.where + [None] * (3 - len(args.where))
    out = exec_plugin(args.type, args.command, config, cid=where[0], netns=where[1], ifname=where[2], want_result=False)
    sys.stdout.write(out)


def main():
    parser = argparse.ArgumentParser(description="a minimal CNI runtime for tests")
    sub = parser.add_subparsers(dest="mode", required=True)
    c = sub.add_parser("chain")
    c.add_argument("operation")
    c.add_argument("conflist")
    c.add_argument("container_id")
    c.add_argument("netns")
    c.add_argument("ifname")
    c.add_argument("--port-mappings")
    c.add_argument("--cache")
    c.add_argument("--no-prev-result", action="store_true")
    c.add_argument("--no-cache", action="store_true")
    p = sub.add_parser("call")
    p.add_argument("type")
    p.add_argument("command")
    p.add_argument("where", nargs="*", help="CONTAINER_ID NETNS IFNAME")
    p.add_argument("--conflist")
    p.add_argument("--config", metavar="JSON", help="the configuration itself, instead of stdin")
    p.add_argument("--cni-version")
    p.add_argument("--valid-attachments", metavar="CONTAINER_ID/IFNAME,...")
    args = parser.parse_args()
    if args.mode == "chain":
        chain(args)
    else:
        if len(args.where) > 3:
            die("call: at most CONTAINER_ID NETNS IFNAME")
        call(args)


if __name__ == "__main__":
    main()
