# glibc's own fnmatch(3) (flags 0, as systemd-networkd calls it), for the unit tests of the
# port in modules/network/networkd-files.ts. stdin: [[pattern, string]...]; stdout: [bool...]
import ctypes
import json
import sys

libc = ctypes.CDLL(None)
libc.fnmatch.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_int]
pairs = json.load(sys.stdin)
json.dump([libc.fnmatch(p.encode(), s.encode(), 0) == 0 for p, s in pairs], sys.stdout)
