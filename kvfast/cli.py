"""Pieces shared by the command-line programs (kvfast-server, kvfast-bench)."""
import argparse
import resource


class OneLineErrorParser(argparse.ArgumentParser):
    """argparse whose errors are one line on stderr and exit status 1."""

    def error(self, message):
        self.exit(1, f"{self.prog}: error: {message}\n")


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to its hard limit, as Redis
    does, so that thousands of connections fit. Returns the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft
