"""Command-line parsing: qemu-storage-daemon's options and the short form."""

from __future__ import annotations

import pytest

from qmpd.cli import DEFAULT_SOCKET, Monitor, UsageError, parse_args, split_keyvals


def test_default_socket() -> None:
    assert parse_args([]).sockets == ((DEFAULT_SOCKET, Monitor(DEFAULT_SOCKET)),)
    assert parse_args(["--socket", "/tmp/a"]).sockets == (("/tmp/a", Monitor("/tmp/a")),)
    assert parse_args(["--socket=/tmp/a"]).sockets[0][0] == "/tmp/a"


def test_qsd_style_monitors() -> None:
    config = parse_args(
        [
            "--chardev", "socket,id=m0,path=/tmp/m0.sock,server=on,wait=off",
            "--monitor", "chardev=m0",
            "--chardev=socket,id=m1,path=/tmp/m1.sock,server=on,wait=off",
            "--monitor", "m1,mode=control,pretty=on",
            "--pidfile", "/tmp/p", "--daemonize",
        ]
    )  # fmt: skip
    assert config.sockets == (
        ("/tmp/m0.sock", Monitor("m0", False)),
        ("/tmp/m1.sock", Monitor("m1", True)),
    )
    assert config.pidfile == "/tmp/p"
    assert config.daemonize


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--foo"], "unrecognized option '--foo'"),
        (["stray"], "unexpected argument 'stray'"),
        (["--monitor"], "option '--monitor' requires an argument"),
        (["--chardev", "bogus"], "--chardev bogus: chardev: no id specified"),
        (["--chardev", "socket,id=a,path=/x,server=on,wait=off", "--monitor", "chardev=b"],
         '--monitor chardev=b: chardev "b" not found'),
        (["--chardev", "socket,id=a,path=/x,server=on,wait=off", "--monitor", "a,mode=readline"],
         "mode must be 'control'"),
        (["--chardev", "socket,id=a,path=/x,server=on,wait=off", "--monitor", "a,pretty=maybe"],
         "Parameter 'pretty' expects 'on' or 'off'"),
        (["--chardev", "socket,id=a,path=/x,server=on"], "use 'wait=off'"),
        (["--chardev", "socket,id=a,path=/x,wait=off"], "'server=on' is required"),
        (["--chardev", "socket,id=a,path=/x,server=on,wait=off,bogus=1"],
         "Invalid parameter 'bogus'"),
        (["--chardev", "pty,id=a"], "backend 'pty' is not supported"),
        (["--socket", "/a", "--socket", "/a"], "given twice"),
        (["--daemonize=yes"], "doesn't allow an argument"),
    ],
)  # fmt: skip
def test_errors_name_the_option(argv: list[str], message: str) -> None:
    with pytest.raises(UsageError) as info:
        parse_args(argv)
    assert message in str(info.value)


def test_help_and_version() -> None:
    assert "--chardev" in (parse_args(["-h"]).print_and_exit or "")
    assert "qmpd version" in (parse_args(["--version"]).print_and_exit or "")


def test_keyval_splitting() -> None:
    assert split_keyvals("a=b,,c,d") == [("a", "b,c"), ("d", None)]


def test_blockdev_texts_are_kept_for_the_schema() -> None:
    # Types come from the schema at start-up (qmpd.daemon.add_blockdevs).
    config = parse_args(["--blockdev", "null-co,node-name=n,size=1M", "--blockdev={}"])
    assert config.blockdevs == ("null-co,node-name=n,size=1M", "{}")
