"""``kvfast-aof check|repair|dump FILE``: inspect and mend an append-only file.

check   exit 0 and ``FILE: ok, N records, B bytes`` when every record is good;
        exit 1 with one line naming the first damaged record's offset otherwise.
repair  copy FILE to a backup (``FILE.bak``, or ``FILE.bak.1``, ``.2``... if taken),
        then truncate FILE where the good records end (everything from the first
        damaged record on is dropped, as redis-check-aof --fix does); exit 0.
dump    one line per record: ``OFFSET set KEY VALUE``, ``OFFSET set KEY VALUE pxat
        DEADLINE`` (Unix ms), ``OFFSET pexpireat KEY DEADLINE``, ``OFFSET persist KEY``,
        ``OFFSET del KEY``, ``OFFSET flushall``; a transaction (MULTI/EXEC, one unit on replay) as
        ``OFFSET multi COUNT`` before its records and ``OFFSET exec`` after them
        (the offset where its records end: a boundary, not a record); exit 1 at
        the first damaged record (a transaction the file ends inside is reported
        whole, at its ``multi``, as replay drops it whole).
Exit status 2: bad arguments, or a file that cannot be read or is not a kvfast log.
Never run repair on the log of a running server.
"""
import fcntl
import os
import shutil
import sys

from kvfast._replay import LogError, inspect, records
from kvfast.cli import OneLineErrorParser

PROG = "kvfast-aof"


class UsageErrorParser(OneLineErrorParser):
    """Usage errors exit 2 here (1 means a damaged file), as in fsck-like tools."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser():
    parser = UsageErrorParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                epilog="See the README's Persistence section for the file format.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, help_text in (("check", "check every record's checksum"),
                            ("repair", "truncate at the last good record, keeping a backup"),
                            ("dump", "print every record as text")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("file", metavar="FILE")
    return parser


def check(path) -> int:
    report = inspect(path)
    if report["status"] in ("ok", "empty"):
        print(f"{path}: ok, {report['records']} records, {report['size']} bytes")
        return 0
    print(f"{path}: {report['problem']}; {report['records']} good records end at offset {report['good_end']} "
          f"of {report['size']} bytes; `{PROG} repair {path}` truncates there", file=sys.stderr)
    return 1


def backup_path(path) -> str:
    candidate = f"{path}.bak"
    number = 0
    while os.path.exists(candidate):
        number += 1
        candidate = f"{path}.bak.{number}"
    return candidate


def repair(path) -> int:
    report = inspect(path)
    if report["status"] in ("ok", "empty"):
        print(f"{path}: ok, nothing to repair")
        return 0
    with open(path, "r+b") as file:
        try:        # a running kvfast-server holds this lock on its log
            fcntl.flock(file.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise LogError(path, "in use by a running kvfast-server; stop it first") from None
        backup = backup_path(path)
        shutil.copy2(path, backup)
        file.truncate(report["good_end"])
        file.flush()
        os.fsync(file.fileno())
    print(f"{path}: {report['problem']}: truncated at offset {report['good_end']} "
          f"(dropped {report['size'] - report['good_end']} bytes, kept {report['records']} records); "
          f"backup in {backup}")
    return 0


def dump(path) -> int:
    out = sys.stdout
    try:
        for offset, kind, key, value in records(path):
            if kind == "set" and isinstance(value, tuple):
                out.write(f"{offset} set {key} {value[0]} pxat {value[1]}\n")
            elif kind == "set":
                out.write(f"{offset} set {key} {value}\n")
            elif kind == "pexpireat":
                out.write(f"{offset} pexpireat {key} {value}\n")
            elif kind == "persist":
                out.write(f"{offset} persist {key}\n")
            elif kind == "del":
                out.write(f"{offset} del {key}\n")
            elif kind == "multi":
                out.write(f"{offset} multi {key}\n")
            elif kind == "exec":
                out.write(f"{offset} exec\n")
            else:
                out.write(f"{offset} flushall\n")
    except LogError as error:
        out.flush()
        if error.offset == 0:
            raise
        print(f"{PROG}: {error}", file=sys.stderr)
        return 1
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return {"check": check, "repair": repair, "dump": dump}[args.command](args.file)
    except LogError as error:
        print(f"{PROG}: {error}", file=sys.stderr)
        return 2
    except BrokenPipeError:         # dump piped into head
        return 0
    except OSError as error:
        print(f"{PROG}: {args.file}: {error.strerror or error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
