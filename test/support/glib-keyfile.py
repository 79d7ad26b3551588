# GLib's own key-file reader and writer (GKeyFile through python3-gi), for the unit tests
# that check provision's port of GKeyFile against the real thing.
# stdin: {"load": [text...], "set_string": [value...], "set_list": [[item...]...]}
# stdout: {"load": [{group: {key: {"string": s|null, "list": [..]|null, "boolean": b|null}}} | {"error": msg}],
#          "set_string": [line...], "set_list": [line...]}
import json
import sys

import gi

gi.require_version("GLib", "2.0")
from gi.repository import GLib  # noqa: E402


def attempt(fn):
    try:
        return fn()
    except GLib.Error:
        return None


def load(text):
    kf = GLib.KeyFile()
    data = text.encode()
    try:
        kf.load_from_data(text, len(data), GLib.KeyFileFlags.NONE)
    except GLib.Error as error:
        return {"error": error.message}
    groups = {}
    for group in kf.get_groups()[0]:
        groups[group] = {
            key: {
                "string": attempt(lambda: kf.get_string(group, key)),
                "list": attempt(lambda: kf.get_string_list(group, key)),
                "boolean": attempt(lambda: kf.get_boolean(group, key)),
            }
            for key in kf.get_keys(group)[0]
        }
    return groups


def written(setter, value):
    kf = GLib.KeyFile()
    setter(kf, value)
    text = kf.to_data()[0]
    return text.split("\n", 1)[1].rstrip("\n")[len("k="):]


request = json.load(sys.stdin)
json.dump({
    "load": [load(t) for t in request.get("load", [])],
    "set_string": [written(lambda kf, v: kf.set_string("g", "k", v), v) for v in request.get("set_string", [])],
    "set_list": [written(lambda kf, v: kf.set_string_list("g", "k", v), v) for v in request.get("set_list", [])],
}, sys.stdout)
