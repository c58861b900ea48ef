"""Run a command and record its peak resident set size.

Usage: python rss_wrap.py REPORT_FILE COMMAND [ARGS...]

The command runs as a child process that inherits stdin, stdout and stderr
(so it can sit between git and a long-running filter process).  When it
exits, its ru_maxrss (KiB on Linux) is appended as one line to REPORT_FILE
and this wrapper exits with the child's exit code.  Used by
scripts/bench_foundation.py; stdlib only, safe to run with ``python -S``.
"""

import os
import signal
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3:
        sys.stderr.write("usage: rss_wrap.py REPORT_FILE COMMAND [ARGS...]\n")
        return 2
    report, command = argv[1], argv[2:]

    pid = os.fork()
    if pid == 0:
        try:
            os.execvp(command[0], command)
        except OSError as exc:
            sys.stderr.write(f"rss_wrap: cannot run {command[0]}: {exc}\n")
        os._exit(127)

    # Pass termination requests on to the child instead of dying first.
    def forward(signum, _frame):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            pass

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, forward)

    _, status, usage = os.wait4(pid, 0)  # retried on EINTR (PEP 475)

    with open(report, "a", encoding="ascii") as fh:
        fh.write(f"{usage.ru_maxrss}\n")

    code = os.waitstatus_to_exitcode(status)
    return code if code >= 0 else 128 - code


if __name__ == "__main__":
    sys.exit(main(sys.argv))
