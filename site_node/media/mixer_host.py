"""The live mixing bridge's process (site_node/media/bridge.py): a GStreamer pipeline made from its
description (argv, the same tokens gst-launch-1.0 takes) whose mix changes while it runs: each line
on stdin sets one element's property, `<element> <property> <value>` (a `volume` element's volume,
a `valve`'s drop), answered `ok <line>` on stdout. So a change of who hears whom costs no restart.

Run by the system's Python with Debian's PyGObject (python3-gi, gir1.2-gstreamer-1.0), not by the
project's virtualenv, and standalone (no project imports). It exits when stdin closes, on SIGTERM,
or when the pipeline fails (status 1, the error on stderr).
"""

from __future__ import annotations

import sys
import threading

import gi  # type: ignore[import-not-found, unused-ignore]

gi.require_version("Gst", "1.0")
from gi.repository import GLib, Gst  # type: ignore[import-not-found, unused-ignore]  # noqa: E402


def main(argv: list[str]) -> int:
    Gst.init(None)
    pipeline = Gst.parse_launchv(argv)
    loop = GLib.MainLoop()
    status = [0]

    def on_message(bus: object, msg: object) -> None:
        if msg.type == Gst.MessageType.ERROR:  # type: ignore[attr-defined]
            err, debug = msg.parse_error()  # type: ignore[attr-defined]
            print(f"error: {err.message} ({debug})", file=sys.stderr, flush=True)
            status[0] = 1
            loop.quit()
        elif msg.type == Gst.MessageType.EOS:  # type: ignore[attr-defined]
            loop.quit()

    bus = pipeline.get_bus()
    bus.add_signal_watch()
    bus.connect("message", on_message)

    def apply(line: str) -> bool:
        name, prop, value = line.split()
        element = pipeline.get_by_name(name)
        if element is None:
            print(f"error: no element {name}", file=sys.stderr, flush=True)
            return False
        element.set_property(prop, float(value) if prop == "volume" else value == "true")
        print(f"ok {line.strip()}", flush=True)
        return False  # once (a GLib idle callback)

    def read() -> None:
        for line in sys.stdin:
            if line.strip():
                GLib.idle_add(apply, line)
        GLib.idle_add(loop.quit)

    threading.Thread(target=read, daemon=True).start()
    if pipeline.set_state(Gst.State.PLAYING) == Gst.StateChangeReturn.FAILURE:
        print("error: the pipeline did not start", file=sys.stderr, flush=True)
        return 1
    loop.run()
    pipeline.set_state(Gst.State.NULL)
    return status[0]


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
