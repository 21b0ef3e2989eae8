"""``hlop`` in this process, paused inside one atomic write (for tests that kill a run there).

    python tests/paused_run.py before|after NAME N ARGS...

runs ``hlop ARGS...`` and, at the N-th time a file called NAME is put in place by
:func:`hlop.run.files.write_atomic`, writes ``.paused`` next to it and sleeps for an hour: just
before the temporary file replaces NAME ("before"; a kill must leave the previous file
intact), or just after ("after").  The pause is a patch of this process's ``os.replace``:
nothing in hlop knows about it.
"""

import os
import sys
import time
from pathlib import Path


def pause_in_write(when: str, name: str, count: int) -> None:
    real, seen = os.replace, [0]

    def replace(src, dst, **kwargs):
        dst = Path(dst)
        hit = False
        if dst.name == name:
            seen[0] += 1
            hit = seen[0] == count
        if hit and when == "before":
            pause(dst)
        real(src, dst, **kwargs)
        if hit and when == "after":
            pause(dst)

    def pause(path: Path) -> None:
        (path.parent / ".paused").write_text(f"{when} {name}:{count}\n")
        time.sleep(3600)

    os.replace = replace


if __name__ == "__main__":
    when, name, count, *argv = sys.argv[1:]
    pause_in_write(when, name, int(count))
    from hlop.tools.cli import main

    sys.exit(main(argv))
