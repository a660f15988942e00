"""SIGKILL at random points: what a killed qmpd leaves behind.

Each round starts a qmpd process, first opens every image the earlier
rounds left (read-write, as a user restarting would) and checks that the
new daemon answers truthfully (every zero claim of ``x-query-zero-state``
and ``x-blockdev-map`` reads as zero, every byte that must have survived
reads back), closes them, and then runs one scenario until a timer kills
the daemon with SIGKILL at a random moment:

* ``writes``: a guest writes and flushes through a virtio-blk device on a
  qcow2 image (the same image across rounds, so each round starts from
  what the last kill left);
* ``create``: ``blockdev-create`` of a qcow2 image on a file node;
* ``mirror``: a mirror from a raw disk the guest writes into a fresh
  qcow2 image, completed (the disk pivots) and flushed when the kill comes
  late enough.

After each kill, ``qemu-img check`` must find no corruption (leaked
clusters are allowed: a killed process may leave them), and every write
acknowledged before the last completed flush must be in the image.  The
figures (kills, images checked, corruptions, leaks) are printed as one line
(``pytest -rA`` shows it) and, with ``QMPD_CRASH_SUMMARY=FILE``, written to
FILE.  ``QMPD_CRASH_KILLS`` sets the number of rounds, ``QMPD_CRASH_SEED``
the random seed (printed on failure).
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import signal
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from .harness import (
    Client,
    Content,
    KiB,
    MiB,
    Qmpd,
    content_errors,
    corrupted,
    env_int,
    false_zero_claims,
    image_bytes,
    img_check,
    img_create,
    img_dirty,
    needs_tools,
    outside_io,
    qemu_data,
)

pytestmark = [pytest.mark.qemu, pytest.mark.slow, needs_tools]

SIZE = 16 * MiB
#: Errors a client sees when the daemon dies under it.
GONE = (EOFError, ConnectionError, OSError)


@dataclass
class Tally:
    kills: int = 0
    images_checked: int = 0
    corruptions: int = 0
    leaky: int = 0
    unfinished_creates: int = 0
    bytes_verified: int = 0
    restarts_verified: int = 0
    zero_claims_checked: int = 0
    by_scenario: dict[str, int] = field(default_factory=dict)

    def line(self, seed: int) -> str:
        scenarios = ", ".join(f"{k} {v}" for k, v in sorted(self.by_scenario.items()))
        return (
            f"crash test (seed {seed}): {self.kills} kills ({scenarios}), "
            f"{self.images_checked} images checked by qemu-img check, "
            f"{self.corruptions} corruptions found, {self.leaky} with leaked clusters, "
            f"{self.unfinished_creates} unfinished creates not yet an image, "
            f"{self.bytes_verified} flushed bytes verified, "
            f"{self.restarts_verified} restarted opens answered "
            f"{self.zero_claims_checked} zero claims truthfully"
        )


@dataclass
class Survivor:
    """An image a killed daemon left: what it must hold (None: no byte is
    owed), and whether it must be a qcow2 image at all (a create that never
    finished may leave something else)."""

    path: Path
    content: Content | None
    must_open: bool = True
    #: The kill left the dirty bit set (qemu-img check said so).
    dirty: bool = False


class Killed(Exception):
    """The daemon is gone (the timer fired)."""


class Round:
    """One daemon's life: verify what earlier rounds left, run a scenario,
    be killed."""

    def __init__(self, rng: random.Random, tally: Tally, workdir: Path) -> None:
        self.rng = rng
        self.tally = tally
        self.dir = workdir
        self.qmpd = Qmpd.start()
        self.client: Client = self.qmpd.client
        self.timer: threading.Timer | None = None

    # ---------------------------------------------------------------- killing

    def arm(self, seconds: float) -> None:
        """SIGKILL the daemon ``seconds`` from now."""
        pid = self.qmpd.pid

        def kill() -> None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)

        self.timer = threading.Timer(seconds, kill)
        self.timer.start()

    def finish(self) -> None:
        """Make sure the daemon is dead (killed now if the timer has not
        fired yet), then release the client."""
        if self.timer is not None:
            self.timer.cancel()
        self.qmpd.kill()
        self.tally.kills += 1
        self.qmpd.close()

    def call(self, command: str, **arguments: Any) -> Any:
        """execute; :class:`Killed` when the daemon is gone."""
        try:
            return self.client.ok(command, **arguments)
        except GONE as err:
            raise Killed from err

    def io(self, target: str, command: str, *, device: bool = False) -> str:
        try:
            return self.client.io(target, command, device=device)
        except GONE as err:
            raise Killed from err

    # ---------------------------------------------------------------- verifying

    def verify(self, survivor: Survivor, index: int) -> None:
        """Open a survivor read-write in this (fresh) daemon: zero claims
        true, owed bytes present; then close it."""
        file, node = f"vf{index}", f"vn{index}"
        self.client.ok("blockdev-add", driver="file", node_name=file, filename=str(survivor.path))
        _, err = self.client.try_("blockdev-add", driver="qcow2", node_name=node, file=file)
        if err is not None:
            # Only an image whose create never finished may be refused.
            assert not survivor.must_open, (survivor.path, err)
            self.client.ok("blockdev-del", node_name=file)
            return
        claims = false_zero_claims(self.client, node, data=qemu_data(survivor.path))
        assert not claims, (survivor.path, claims)
        self.tally.zero_claims_checked += len(
            [e for e in self.client.ok("x-blockdev-map", node_name=node) if e["zero"]]
        ) + 1
        if survivor.content is not None:
            wrong = content_errors(self.client, node, survivor.content)
            assert not wrong, (survivor.path, wrong)
        self.client.ok("blockdev-del", node_name=node)
        self.client.ok("blockdev-del", node_name=file)
        self.tally.restarts_verified += 1
        # A read-write open of a dirty image repairs it, as QEMU's does:
        # once closed, it is clean (an image the kill left with the dirty
        # bit clear may keep leaked clusters, in QEMU too).
        report = img_check(survivor.path)
        assert not img_dirty(survivor.path), (survivor.path, "still dirty", report)
        if survivor.dirty:
            assert report.get("leaks", 0) == 0, (survivor.path, "not repaired", report)

    # ---------------------------------------------------------------- scenarios

    def guest_writes(self, image: Path, known: Content) -> Content:
        """Writes and flushes through a device until killed; what the
        image must hold afterwards (known bytes: flushed and not touched
        since)."""
        # cache.no-flush drops only the final sync to disk: a flush still
        # hands every acknowledged write and qcow2's tables to the OS, so
        # a killed process (not a power cut) loses nothing flushed.
        cache = {"no-flush": self.rng.random() < 0.3}
        self.call("blockdev-add", driver="qcow2", node_name="disk", cache=cache,
                  file={"driver": "file", "filename": str(image), "cache": cache})  # fmt: skip
        self.call("device_add", driver="virtio-blk-pci", id="vd", drive="disk")
        (qdev,) = [b["qdev"] for b in self.call("query-block")]
        durable = known.copy()
        acked: list[tuple[int, int, int]] = []  # since the last completed flush
        self.arm(self.rng.uniform(0.0, 0.6))
        try:
            for _ in range(400):
                if self.rng.random() < 0.2:
                    out = self.io(qdev, "flush", device=True)
                    assert out.strip() == "", out
                    for offset, length, byte in acked:
                        durable.write(offset, length, byte)
                    acked = []
                    continue
                offset, length, byte, command = self.random_write()
                durable.forget(offset, length)  # in flight: may land or not
                out = self.io(qdev, command, device=True)
                assert out.startswith("wrote "), out
                acked.append((offset, length, byte))
        except Killed:
            pass
        return durable

    def random_write(self) -> tuple[int, int, int, str]:
        rng = self.rng
        if rng.random() < 0.5:
            # Far apart: new L2 tables (and L1 entries with small clusters).
            offset = rng.randrange(0, SIZE // (64 * KiB)) * 64 * KiB
            length = rng.choice([4 * KiB, 64 * KiB, 256 * KiB])
        else:
            offset = rng.randrange(0, SIZE - 1)
            length = rng.randrange(1, 128 * KiB)
        length = min(length, SIZE - offset)
        if rng.random() < 0.2:
            return offset, length, 0, f"write -z {offset} {length}"
        byte = rng.choice([0x11, 0x5A, 0xA5, 0xFF])
        return offset, length, byte, f"write -P {byte:#x} {offset} {length}"

    def create(self, image: Path) -> bool:
        """blockdev-create a qcow2 on a file node until killed; whether the
        job concluded without error before the kill."""
        err = self.client.create("cf", {"driver": "file", "filename": str(image), "size": 0})
        assert err is None, err
        self.call("blockdev-add", driver="file", node_name="cfile", filename=str(image))
        rng = self.rng
        cluster = rng.choice([512, 4 * KiB, 64 * KiB, 2 * MiB])
        # Metadata preallocation writes about size / cluster * 8 bytes of L2.
        sizes = [16 * MiB, 1 << 30] + ([64 << 30] if cluster >= 64 * KiB else [])
        options = {
            "driver": "qcow2",
            "file": "cfile",
            "size": rng.choice(sizes),
            "cluster-size": cluster,
            "preallocation": rng.choice(["off", "metadata"]),
        }
        self.arm(rng.uniform(0.0, 0.25))
        try:
            err = self.client.create("cq", options)
        except GONE:
            return False
        return err is None

    def mirror(self, source: Path, target: Path, content: Content) -> Content | None:
        """A raw source the guest writes, mirrored into a fresh qcow2 (made
        by qmpd), completed when ready and flushed; until killed.  What the
        target must hold (None: nothing yet)."""
        rng = self.rng
        err = self.client.create("tf", {"driver": "file", "filename": str(target), "size": 0})
        assert err is None, err
        self.call("blockdev-add", driver="file", node_name="tfile", filename=str(target))
        cluster = rng.choice([4 * KiB, 64 * KiB])
        options = {"driver": "qcow2", "file": "tfile", "size": SIZE, "cluster-size": cluster}
        err = self.client.create("tq", options)
        assert err is None, err
        self.call("blockdev-add", driver="qcow2", node_name="tgt", file="tfile")
        self.call("blockdev-add", driver="raw", node_name="src",
                  file={"driver": "file", "filename": str(source)})  # fmt: skip
        self.call("device_add", driver="virtio-blk-pci", id="vd", drive="src")
        (qdev,) = [b["qdev"] for b in self.call("query-block")]
        mode = rng.choice(["background", "write-blocking"])
        args: dict[str, Any] = {
            "job_id": "m", "device": "src", "target": "tgt", "sync": "full", "copy_mode": mode
        }
        if rng.random() < 0.5:
            args["target_is_zero"] = True
        self.call("blockdev-mirror", **args)
        current = content.copy()
        owed: Content | None = None
        self.arm(rng.uniform(0.0, 0.8))
        try:
            for _ in range(rng.randrange(0, 20)):
                offset, length, byte, command = self.random_write()
                out = self.io(qdev, command, device=True)
                assert out.startswith("wrote "), out
                current.write(offset, length, byte)
            try:
                self.client.job_event("m", "BLOCK_JOB_READY")
                self.call("job-complete", id="m")
                end = self.client.job_event("m", "BLOCK_JOB_COMPLETED")
            except GONE as err:
                raise Killed from err
            assert "error" not in end["data"], end
            # The disk is the target now: flush it, and it owes the copy.
            snapshot = current.copy()
            assert self.io(qdev, "flush", device=True).strip() == ""
            owed = snapshot
            for _ in range(400):
                offset, length, byte, command = self.random_write()
                owed.forget(offset, length)
                out = self.io(qdev, command, device=True)
                assert out.startswith("wrote "), out
        except Killed:
            pass
        return owed


def judge(tally: Tally, survivor: Survivor, scratch: Path) -> None:
    """qemu-img's verdict on an image a kill left."""
    report = img_check(survivor.path)
    if "unreadable" in report:
        # Only a create that never finished may leave no image at all.
        assert not survivor.must_open, (survivor.path, report)
        tally.unfinished_creates += 1
        return
    tally.images_checked += 1
    survivor.dirty = img_dirty(survivor.path)
    if corrupted(report):
        tally.corruptions += 1
    assert not corrupted(report), (survivor.path, report)
    if report.get("leaks", 0):
        tally.leaky += 1
    if survivor.content is not None:
        actual = image_bytes(survivor.path, "qcow2", scratch)
        bad = survivor.content.mismatches(actual)
        assert not bad, (survivor.path, "flushed data missing (offset, want, got)", bad)
        tally.bytes_verified += sum(survivor.content.known)


def scenarios(rng: random.Random, rounds: int) -> Iterator[str]:
    for _ in range(rounds):
        yield rng.choice(["writes", "writes", "create", "mirror"])


def test_sigkill_at_random_points() -> None:
    seed = int(os.environ.get("QMPD_CRASH_SEED") or random.randrange(1 << 32))
    rounds = env_int("QMPD_CRASH_KILLS", 10, 300)
    rng = random.Random(seed)
    tally = Tally()
    workdir = Path(tempfile.mkdtemp(prefix="qmpd-crash-", dir="/tmp"))
    # The writes scenario's image lives across rounds; others are judged,
    # verified by the next daemon once, and dropped.
    disk = workdir / "disk.qcow2"
    img_create(disk, "qcow2", SIZE, f"cluster_size={rng.choice([4 * KiB, 64 * KiB])}")
    disk_content = Content(SIZE)
    pending: list[Survivor] = []
    try:
        for n, kind in enumerate(scenarios(rng, rounds)):
            r = Round(rng, tally, workdir)
            try:
                for i, survivor in enumerate(pending):
                    r.verify(survivor, i)
                pending = []
                if kind == "writes":
                    owed = r.guest_writes(disk, disk_content)
                elif kind == "create":
                    path = workdir / f"create{n}.qcow2"
                    owed = Content(0) if r.create(path) else None
                else:
                    source = workdir / f"src{n}.raw"
                    content = Content(SIZE)
                    img_create(source, "raw", SIZE)
                    for _ in range(rng.randrange(1, 4)):
                        offset, length = rng.randrange(0, SIZE - MiB), rng.randrange(1, MiB)
                        outside_io(source, "raw", f"write -P 0x77 {offset} {length}")
                        content.write(offset, length, 0x77)
                    path = workdir / f"tgt{n}.qcow2"
                    owed = r.mirror(source, path, content)
            finally:
                r.finish()
            tally.by_scenario[kind] = tally.by_scenario.get(kind, 0) + 1
            if kind == "writes":
                survivor = Survivor(disk, owed)
            elif kind == "create":
                # A finished create owes a valid image, an unfinished one nothing.
                survivor = Survivor(path, None, must_open=owed is not None)
            else:
                survivor = Survivor(path, owed)
            judge(tally, survivor, workdir)
            if kind == "writes":
                # Whatever the kill left is what the next round starts from,
                # and what the next daemon must read.
                disk_content = Content(SIZE)
                disk_content.data[:] = image_bytes(disk, "qcow2", workdir)
                survivor = Survivor(disk, disk_content, dirty=survivor.dirty)
            pending.append(survivor)
        # The last kill's images, opened once more.
        r = Round(rng, tally, workdir)
        try:
            for i, survivor in enumerate(pending):
                r.verify(survivor, i)
        finally:
            r.finish()
            tally.kills -= 1  # that one was a clean stop, not a crash scenario
    except BaseException:
        print(tally.line(seed))
        print(f"reproduce with QMPD_CRASH_SEED={seed} QMPD_CRASH_KILLS={rounds}")
        raise
    finally:
        summary = os.environ.get("QMPD_CRASH_SUMMARY")
        if summary:
            with open(summary, "a") as f:
                f.write(tally.line(seed) + "\n")
        shutil.rmtree(workdir, ignore_errors=True)
    print(tally.line(seed))
    assert tally.corruptions == 0
