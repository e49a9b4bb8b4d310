#!/usr/bin/env python3
"""Writes the seed inputs of every fuzz target into fuzz/seeds/<target>/ from the project's own
data: the SDK-captured requests of tests/fixtures/signatures.json and the shipped rules/*.toml.
run.sh merges them into the corpus before fuzzing; they are not committed themselves (the
minimised corpus under fuzz/corpus/ is)."""

import base64
import json
import pathlib

FUZZ = pathlib.Path(__file__).resolve().parent
ROOT = FUZZ.parent
OUT = FUZZ / "seeds"


def http_text(v):
    target = v["path"] + ("?" + v["query"] if v["query"] else "")
    head = f"{v['method']} {target} HTTP/1.1\n"
    head += "".join(f"{n}: {val}\n" for n, val in v["headers"])
    return head.encode() + b"\n" + base64.b64decode(v["body"])


def service_of(v):
    if v.get("aws_service"):
        return v["aws_service"]
    if "-ram-" in v["id"]:
        return "ram"
    if v["scheme"] == "ACS-ROA-HMAC-SHA1" or "-roa-" in v["id"]:
        return "cs"
    return "ecs"


def write(target, name, data):
    d = OUT / target
    d.mkdir(parents=True, exist_ok=True)
    (d / name).write_bytes(data)


def main():
    vectors = json.loads((ROOT / "tests/fixtures/signatures.json").read_text())
    for v in vectors:
        req = http_text(v)
        write("auth_parse", v["id"], req)
        write("canonicalize", v["id"], req)
        peer = "127.0.0.1" if "-sts" not in v["id"] else "192.0.2.7"
        write("decide", v["id"], f"{peer} {service_of(v)}\n".encode() + req)
    rules = sorted((ROOT / "rules").glob("*.toml"))
    texts = {p.name: p.read_bytes() for p in rules}
    for name, text in texts.items():
        write("rules_load", name, text)
    write("rules_load", "all-in-one", b"\n".join(texts.values()))
    keys = texts.get("keys.toml", b"")
    rest = b"\n".join(t for n, t in texts.items() if n != "keys.toml")
    write("rules_load", "two-files", keys + b"\0" + rest)


if __name__ == "__main__":
    main()
