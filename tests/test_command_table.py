"""The command tables are the one source of what each protocol offers: the
README's command list, COMMAND's reply and kvfast-client --help are held to them."""
import pathlib
import re
import socket

import redis
from test_fuzz import read_exactly

from kvfast._native import command_help
from kvfast._resp import command_names

README = pathlib.Path(__file__).resolve().parent.parent / "README.md"


def readme_resp_commands():
    """The command names in the first column of the README's RESP table."""
    text = README.read_text()
    table = text[text.index("| command | reply | notes |"):]
    table = table[:table.index("\n\n")]
    names = set()
    for line in table.splitlines()[2:]:
        first_cell = re.split(r"(?<!\\)\|", line)[1]
        names |= {match.split()[0].lower() for match in re.findall(r"`([^`]+)`", first_cell)}
    return names


def test_readme_lists_exactly_the_commands_of_the_table():
    assert readme_resp_commands() == set(command_names())


def test_command_reply_comes_from_the_table(server):
    names = set(command_names())
    client = redis.Redis(host=server.host, port=server.port, protocol=2)
    try:
        assert client.command_count() == len(names)
        commands = client.command()                # redis-py parses COMMAND into a dict by name
    finally:
        client.close()
    assert set(commands) == names
    delete = commands["del"]
    assert (delete["arity"], delete["first_key_pos"], delete["last_key_pos"]) == (-2, 1, -1)
    # Every flag of a row, in COMMAND's exact bytes:
    with socket.create_connection((server.host, server.port), timeout=10) as sock:
        sock.sendall(b"*3\r\n$7\r\nCOMMAND\r\n$4\r\nINFO\r\n$3\r\nget\r\n")
        expected = (b"*1\r\n*10\r\n$3\r\nget\r\n:2\r\n*2\r\n+readonly\r\n+fast\r\n:1\r\n:1\r\n:1\r\n"
                    b"*0\r\n*0\r\n*0\r\n*0\r\n")
        assert read_exactly(sock, len(expected)) == expected


def test_commands_are_found_in_any_case(server):
    client = redis.Redis(host=server.host, port=server.port, protocol=2)
    try:
        for spelling in ("set", "SET", "sEt"):
            assert client.execute_command(spelling, 1, 2) is True
        assert client.execute_command("GeT", 1) == b"2"
        for name in command_names():            # every row is reachable by its name, upper-cased
            try:
                # SHUTDOWN alone would stop the server: ABORT finds the row all the same
                client.execute_command(name.upper(), *(("ABORT",) if name == "shutdown" else ()))
            except redis.ResponseError as error:
                assert "unknown command" not in str(error), name
            except redis.ConnectionError:        # QUIT and BYE close the connection
                assert name in ("quit", "bye")
    finally:
        client.close()


def test_client_help_lists_every_native_command():
    from kvfast.client_cli import EPILOG
    for synopsis, summary, replies in command_help():
        assert f"{synopsis} " in EPILOG and summary in EPILOG and replies in EPILOG
