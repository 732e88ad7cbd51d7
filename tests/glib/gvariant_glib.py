# -*- coding: utf-8 -*-
"""Serialize GVariant values with GLib itself (python3-gi), for the tests of our stdlib reader.

Run with the system Python that has python3-gi (/usr/bin/python3; requirements/apt.txt lists it).
stdin: a JSON list of [type_string, gvariant_text]; stdout: a JSON list of
{"hex": serialized bytes, "value": GLib's own unpack() made JSON-friendly}.
With --ostree-booted PATH, writes /run/ostree-booted as ostree-prepare-root builds it
(a GVariantBuilder of a{sv}) from the JSON object on stdin instead.
"""
import json
import sys

from gi.repository import GLib  # noqa: E402  (python3-gi)


def friendly(value):
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, dict):
        return {"dict": [[friendly(k), friendly(v)] for k, v in value.items()]}
    if isinstance(value, (list, tuple)):
        return {"list" if isinstance(value, list) else "tuple": [friendly(v) for v in value]}
    return value


def booted(path, spec):
    builder = GLib.VariantBuilder.new(GLib.VariantType.new("a{sv}"))
    for key, (type_string, text) in spec.items():
        inner = GLib.Variant.parse(GLib.VariantType.new(type_string), text, None, None)
        builder.add_value(GLib.Variant.new_dict_entry(GLib.Variant.new_string(key), GLib.Variant.new_variant(inner)))
    data = builder.end().get_data_as_bytes().get_data()
    with open(path, "wb") as handle:
        handle.write(data)


def main():
    if len(sys.argv) == 3 and sys.argv[1] == "--ostree-booted":
        booted(sys.argv[2], json.load(sys.stdin))
        return
    out = []
    for type_string, text in json.load(sys.stdin):
        value = GLib.Variant.parse(GLib.VariantType.new(type_string), text, None, None)
        out.append({"hex": value.get_data_as_bytes().get_data().hex(), "value": friendly(value.unpack())})
    json.dump(out, sys.stdout)


if __name__ == "__main__":
    main()
