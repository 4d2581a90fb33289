#!/usr/bin/env python3
"""Generate src/command_table.rs from the Redis command specifications.

Usage: scripts/gen-commands.py [SPEC_DIR]   (default: ../shared/command-specs)

The specs (one JSON file per command and subcommand) are the source of truth for arity, flags and
key positions; respite's routing policy (command.rs) is written on top of these flags. Each
command also gets the argument rule twemproxy 0.5 parses it with, from
scripts/dialects/twemproxy-0.5.0.txt (extracted from nutcracker's nc_redis.c; commands it does not
list make twemproxy close the connection). The output is committed so that a build never needs
the spec folder.
"""
import glob
import json
import os
import sys

FLAGS = ["READONLY", "WRITE", "BLOCKING", "PUBSUB", "NO_MULTI", "ADMIN", "NOSCRIPT", "FAST",
         "LOADING", "STALE", "DENYOOM", "NO_AUTH", "MAY_REPLICATE"]

root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
spec_dir = sys.argv[1] if len(sys.argv) > 1 else os.path.join(root, "..", "shared", "command-specs")


def branches(schema):
    """The non-null alternatives of a schema."""
    alts = schema.get("oneOf") or schema.get("anyOf") or [schema]
    return [a for a in alts if a.get("type") != "null"]


def reply_shape(spec):
    """The RESP3 shape of a command's reply where it differs from RESP2 in a way that does not
    depend on the arguments (argument-dependent shapes are handled in resp3.rs)."""
    schema = spec.get("reply_schema")
    if not schema:
        return "Plain"
    kinds = {branch_shape(b, spec) for b in branches(schema)}
    return kinds.pop() if len(kinds) == 1 else "Plain"


def branch_shape(b, spec):
    t = b.get("type")
    if t == "object":
        return "Map"
    if t == "number":
        return "Double"
    if t == "array":
        items = b.get("items", {})
        if isinstance(items, list):
            return "Plain"
        inner = branches(items)
        if b.get("uniqueItems") and spec.get("group") == "set" and items.get("type") == "string":
            return "Set"
        if inner and all(i.get("type") == "number" for i in inner):
            return "ArrayOfDoubles"
        if inner and all(i.get("type") == "object" for i in inner):
            return "ArrayOfMaps"
        if inner and all(i.get("type") == "array" and isinstance(i.get("items"), list)
                         and all(x.get("type") == "number" for x in i["items"]) for i in inner):
            return "ArrayOfDoubleTuples"
    return "Plain"


def key_specs(spec):
    """The command's key specs as Rust `KeySpec` literals (keys.rs walks them like Redis)."""
    out = []
    for ks in spec.get("key_specs", []):
        bs, fk = ks.get("begin_search", {}), ks.get("find_keys", {})
        if "index" in bs:
            begin = f"Begin::Index({bs['index']['pos']})"
        elif "keyword" in bs:
            kw = bs["keyword"]
            begin = f'Begin::Keyword("{kw["keyword"]}", {kw["startfrom"]})'
        else:
            begin = "Begin::Unknown"
        if "range" in fk:
            r = fk["range"]
            find = f"Find::Range {{ last: {r['lastkey']}, step: {r['step']}, limit: {r['limit']} }}"
        elif "keynum" in fk:
            k = fk["keynum"]
            find = f"Find::Keynum {{ index: {k['keynumidx']}, first: {k['firstkey']}, step: {k['step']} }}"
        else:
            find = "Find::Unknown"
        out.append(f"KeySpec {{ begin: {begin}, find: {find} }}")
    return "&[" + ", ".join(out) + "]"


# Command -> twemproxy 0.5 argument rule (nc_redis.c helper name), from the dialect file.
TWEMPROXY_RULES = {"argz": "Argz", "nokey": "NoKey", "arg0": "Arg0", "arg1": "Arg1", "arg2": "Arg2",
                   "arg3": "Arg3", "argn": "Argn", "argx": "Argx", "argkvx": "Argkvx",
                   "argeval": "Argeval"}
twemproxy = {}
with open(os.path.join(root, "scripts", "dialects", "twemproxy-0.5.0.txt")) as f:
    for line in f:
        if line.startswith("#") or not line.strip():
            continue
        name, rule = line.split("\t")[:2]
        twemproxy[name.upper()] = TWEMPROXY_RULES[rule]

# Command -> whether Codis 3.2.2 serves it (commands it does not list it forwards: served).
codis = {}
with open(os.path.join(root, "scripts", "dialects", "codis-3.2.2.txt")) as f:
    for line in f:
        if line.startswith("#") or not line.strip():
            continue
        name, verdict = line.split()[:2]
        codis[name.upper()] = verdict == "allow"



def codis_rule(name, spec, flags):
    """How Codis 3.2 takes a command: No (refused, or blocking: it would block Codis's shared
    connection), Yes (served and placed by its key), Check (served; placed right only when the
    keys beyond the one Codis hashes share its slot)."""
    if "container" in spec:
        return "Yes"
    if not codis.get(name, True):
        return "No"
    if "BLOCKING" in flags and name not in ("XREAD", "XREADGROUP"):
        return "No"
    specs = spec.get("key_specs", [])
    hashed = 3 if name in ("ZINTERSTORE", "ZUNIONSTORE", "EVAL", "EVALSHA") else 1
    if not specs or name in ("MGET", "MSET", "DEL", "EXISTS"):
        return "Yes"
    if len(specs) == 1:
        bs, fk = specs[0].get("begin_search", {}), specs[0].get("find_keys", {})
        if bs.get("index", {}).get("pos") == hashed and fk.get("range", {}).get("lastkey") == 0:
            return "Yes"
    return "Check"


commands, subcommands = [], []
for path in sorted(glob.glob(os.path.join(spec_dir, "*.json"))):
    with open(path) as f:
        for name, spec in json.load(f).items():
            flags = spec.get("command_flags", [])
            if "ONLY_SENTINEL" in flags:
                continue
            bits = " | ".join(f"flag::{fl}" for fl in FLAGS if fl in flags) or "0"
            keys = key_specs(spec)
            twem = twemproxy.get(name.upper(), "No") if "container" not in spec else "No"
            served = codis_rule(name.upper(), spec, flags)
            entry = (name.upper(), spec["arity"], bits, keys, reply_shape(spec), twem, served)
            if "container" in spec:
                subcommands.append((spec["container"].upper(),) + entry)
            else:
                commands.append(entry)

commands.sort()
subcommands.sort()
out = [
    "//! Generated by `scripts/gen-commands.py` from the Redis command specifications. Do not edit.",
    "//!",
    "//! Arity, flags, the key specs, the RESP3 reply shape (from each reply schema)",
    "//! and the argument rule twemproxy 0.5 parses it with (`scripts/dialects/`) of every command",
    "//! and subcommand, sorted by name so that lookups are a binary search over static data.",
    "",
    "use crate::command::{flag, Codis, Spec, Twem};",
    "use crate::keys::{Begin, Find, KeySpec};",
    "use crate::resp3::Shape;",
    "",
    f"/// Every top-level command ({len(commands)}), sorted by name.",
    "#[rustfmt::skip]",
    "pub static COMMANDS: &[Spec] = &[",
]
for name, arity, bits, keys, shape, twem, served in commands:
    out.append(f'    Spec {{ name: "{name}", arity: {arity}, flags: {bits}, keys: {keys}, resp3: Shape::{shape}, twemproxy: Twem::{twem}, codis: Codis::{served} }},')
out += ["];", "", f"/// Every subcommand ({len(subcommands)}) as (container, spec), sorted by container then name.",
        "#[rustfmt::skip]", "pub static SUBCOMMANDS: &[(&str, Spec)] = &["]
for container, name, arity, bits, keys, shape, twem, served in subcommands:
    out.append(f'    ("{container}", Spec {{ name: "{name}", arity: {arity}, flags: {bits}, keys: {keys}, resp3: Shape::{shape}, twemproxy: Twem::{twem}, codis: Codis::{served} }}),')
out.append("];")
with open(os.path.join(root, "src", "command_table.rs"), "w") as f:
    f.write("\n".join(out) + "\n")
missing = sorted(set(twemproxy) - {c[0] for c in commands})
print(f"wrote {len(commands)} commands and {len(subcommands)} subcommands; "
      f"{sum(c[5] != 'No' for c in commands)} served by twemproxy, "
      f"{sum(c[6] != 'No' for c in commands)} by Codis")
if missing:
    print(f"twemproxy commands not in the specs: {missing}", file=sys.stderr)
