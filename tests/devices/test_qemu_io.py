"""human-monitor-command's qemu-io, compared with the real qemu-io binary.

The same command script runs through qmpd (over QMP, on a raw node over
a file) and through ``qemu-io -f raw`` (one process per command, stdout
and stderr merged) on an identical file; the texts must agree once the
timing part of the statistics line is masked, as iotests mask it.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import trio

from qmpd.block.qemu_io import Failed, Usage, cvtnum, cvtstr, getopt, parse_pattern, timestr
from tests.support.loopback import QMPPair
from tests.support.qemu_tools import new_tool, system_tool, why_new_missing, why_system_missing


def qemu_io_binary() -> tuple[str, bool] | None:
    """(path, is 11.1) of the qemu-io to compare with; 11.1 preferred."""
    new = new_tool("qemu-io")
    if new is not None:
        return new, True
    found = system_tool("qemu-io")
    return (found, False) if found else None


QEMU_IO = qemu_io_binary()
needs_qemu_io = pytest.mark.skipif(
    QEMU_IO is None, reason=f"{why_new_missing('qemu-io')}; {why_system_missing('qemu-io')}"
)
QEMU_IMG = system_tool("qemu-img")

SCRIPT = [
    "write -P 0xab 0 64k",
    "w 64k 1k",
    "read -P 0xab 0 64k",
    "read -P 0xac 0 64k",
    "r -P 0xab 60k 8k",
    "read -v 0 40",
    "write -z 128k 64k",
    "write -z -u 192k 64k",
    "write -u 0 1",
    "write -z -P 1 0 1",
    "discard 256k 64k",
    "read -P 0 256k 64k",
    "map",
    "alloc 0",
    "alloc 0 1M",
    "alloc 1 1",
    "alloc 2M",
    "length",
    "flush",
    "write 1M 512",
    "read 0 3M",
    "write -P 300 0 1",
    "write -P abc 0 1",
    "write -P 0x 0 1",
    "write 0 1x",
    "write -1 1",
    "write 0 -1",
    "write -x 0 1",
    "write 0 0",
    "write 0 0x10",
    "write 0 1.5k",
    "write 0 9E",
    "write 0 5G",
    "nope",
    "write 0",
    "w 0",
    "length 1",
    "alloc",
    "discard 0",
    "read -P 1 0",
    "read -l 4 0 8",
    "read -P 0xcd -s 9 -l 4 0 8",
    "read -P 0xcd -s 1k -l 512 0 2k",
    "aio_write -P 3 0 1k 1k",
    "aio_flush",
    "aio_read -P 3 0 1k 1k",
    "truncate -m bogus 1M",
    "truncate",
    "discard 2M 1",
    "write -q -P 7 300k 10",
    "read -P 7 300k 10",
]

_TIMING = re.compile(r"ops; .*$", re.M)


def normalise(text: str, *, new: bool) -> str:
    text = _TIMING.sub("ops; XX (timing)", text)
    # error_report() prefixes the program name on a terminal, not in HMP.
    text = re.sub(r"^qemu-io: ", "", text, flags=re.M)
    if not new:
        # qemu-io 7.2's usage lines lack -r.
        text = text.replace("write [-bcCfnquz]", "write [-bcCfnqruz]")
        text = text.replace("read [-abCqv]", "read [-abCqrv]")
    return text


def make_file(path: Path) -> Path:
    with path.open("wb") as f:
        f.truncate(1 << 20)
    return path


async def hmp(qmp: QMPPair, line: str) -> str:
    result = await qmp.execute("human-monitor-command", {"command-line": line})
    assert isinstance(result, str), result
    return result


async def add_raw(qmp: QMPPair, path: Path, name: str = "disk") -> None:
    args = {
        "driver": "raw",
        "node-name": name,
        "discard": "unmap",
        "file": {"driver": "file", "filename": str(path), "discard": "unmap"},
    }
    assert await qmp.execute("blockdev-add", args) == {}


@needs_qemu_io
async def test_script_matches_real_qemu_io(qmp: QMPPair, tmp_path: Path) -> None:
    assert QEMU_IO is not None
    binary, new = QEMU_IO
    ours_file = make_file(tmp_path / "ours.img")
    theirs_file = make_file(tmp_path / "theirs.img")
    await add_raw(qmp, ours_file)
    for command in SCRIPT:
        ours = (await hmp(qmp, f'qemu-io disk "{command}"')).replace("\r\n", "\n")
        run = await trio.run_process(
            [binary, "-f", "raw", str(theirs_file), "-c", command],
            capture_stdout=True,
            stderr=subprocess.STDOUT,
            check=False,
        )
        theirs = run.stdout.decode()
        assert normalise(ours, new=new) == normalise(theirs, new=new), command
    if QEMU_IMG is not None:
        compare = await trio.run_process(
            [QEMU_IMG, "compare", "-f", "raw", "-F", "raw", str(ours_file), str(theirs_file)],
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
        assert compare.returncode == 0, compare.stdout + compare.stderr


@needs_qemu_io
async def test_written_data_reads_back_with_qemu_io(qmp: QMPPair, tmp_path: Path) -> None:
    assert QEMU_IO is not None
    path = make_file(tmp_path / "d.img")
    await add_raw(qmp, path, "n")
    assert await qmp.execute("device_add", {"driver": "ide-hd", "id": "hd0", "drive": "n"}) == {}
    out = await hmp(qmp, 'qemu-io -d hd0 "write -P 0x5a 4k 8k"')
    assert out.startswith("wrote 8192/8192 bytes at offset 4096\r\n8 KiB, 1 ops; ")
    await hmp(qmp, 'qemu-io -d hd0 "write -z 6k 1k"')
    await hmp(qmp, 'qemu-io -d hd0 "flush"')
    checks = ["read -P 0 0 4k", "read -P 0x5a 4k 2k", "read -P 0 6k 1k", "read -P 0x5a 7k 5k"]
    args = [QEMU_IO[0], "-f", "raw", "-r", str(path)]
    for check in checks:
        args += ["-c", check]
    run = await trio.run_process(args, capture_stdout=True, capture_stderr=True, check=False)
    out = run.stdout.decode()
    assert "verification failed" not in out, out
    assert out.count("read ") == 4, out + run.stderr.decode()


async def test_hmp_errors(qmp: QMPPair) -> None:
    await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "n0"})
    await qmp.execute("device_add", {"driver": "virtio-blk-pci", "id": "vd0", "drive": "n0"})
    await qmp.execute("blockdev-add", {"driver": "null-co", "node-name": "n1"})
    await qmp.execute("device_add", {"driver": "ide-hd", "id": "hd0", "drive": "n1"})
    cases = {
        'qemu-io nope "read 0 1"': "Error: Cannot find device='' nor node-name='nope'\r\n",
        'qemu-io -d nope "read 0 1"': "Error: Device 'nope' not found\r\n",
        'qemu-io -d vd0 "write 0 512"': "Error: Device does not have a block device backend\r\n",
        'qemu-io n0 "write 0 512"': (
            "Permission conflict on node 'n0': permissions 'write' are both required by an "
            "unnamed block device (uses node 'n0' as 'root' child) and unshared by block "
            "device '/machine/peripheral/vd0/virtio-backend' (uses node 'n0' as 'root' child)."
            "\r\n"
        ),
        "qemu-io n0": 'qemu-io: string expected\r\nTry "help qemu-io" for more information\r\n',
        "qemu-io": 'qemu-io: block device name expected\r\nTry "help qemu-io" for more '
        "information\r\n",
        "foo bar": "unknown command: 'foo'\r\n",
        'qemu-io n0 "bogus 0 1"': 'command "bogus" not found\r\n',
        "qemu-io n0 write": "bad argument count 0 to write, expected at least 2 arguments\r\n",
        'qemu-io -d /machine/peripheral/vd0/virtio-backend "read -q 0 512"': "",
        'qemu-io -d hd0 "read -q 0 512"': "",
        'qemu-io n0 "read -q 0 512"': "",
    }
    for line, expected in cases.items():
        assert await hmp(qmp, line) == expected, line
    reply = await qmp.execute(
        "human-monitor-command", {"command-line": 'qemu-io n0 "length"', "cpu-index": 5}
    )
    assert reply["error"]["desc"] == "Parameter 'cpu-index' expects a CPU number"
    # The temporary backend is gone: the node can be deleted once unplugged.
    await qmp.execute("device_del", {"id": "hd0"})
    assert await qmp.execute("blockdev-del", {"node-name": "n1"}) == {}


def test_numbers() -> None:
    assert cvtnum("64k") == 65536
    assert cvtnum("1.5k") == 1536
    assert cvtnum("0x10") == 16
    assert cvtnum("2M") == 2 << 20
    for bad in ("1x", "0x", "1.5", "0x1k", "1k1"):
        with pytest.raises(Failed, match="non-numeric"):
            cvtnum(bad)
    for big in ("9E", "-1"):
        with pytest.raises(Failed, match="too large"):
            cvtnum(big)
    assert parse_pattern("0xab") == 0xAB
    assert parse_pattern("010") == 8
    with pytest.raises(Failed, match="300 is not a valid pattern byte"):
        parse_pattern("300")
    assert cvtstr(65536) == "64 KiB"
    assert cvtstr(1536) == "1.500 KiB"
    assert cvtstr(2) == "2 bytes"
    assert timestr(0.004) == "00.00 sec"
    assert timestr(61.5) == "0:01:01.50"
    assert getopt("w", ["0", "-P", "1", "5"], "P:") == ([("P", "1")], ["0", "5"])
    with pytest.raises(Usage, match="w: option requires an argument -- 'P'"):
        getopt("w", ["-P"], "P:")
