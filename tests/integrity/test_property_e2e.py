"""A stateful property test of one qmpd process, end to end.

Hypothesis drives a real daemon over its Unix socket as a careful user
would: images made by ``qemu-img`` or by ``blockdev-create`` (raw files
with any preallocation, qcow2 overlays over a closed image, which then
serves as their frozen base), opened read-write or read-only (an overlay
also without its backing file, to peek at its own zero claims) and closed,
attached to guest devices; guest writes (HMP ``qemu-io -d`` on the
device, or ``qemu-io`` on the node) and flushes, some by a client that
hangs up while its write runs; writes by an outside ``qemu-io`` process,
which the image locks refuse where QEMU's would and allow otherwise;
faults injected under raw and qcow2 images by ``blkdebug`` rules; mirrors
into fresh raw or qcow2 images (with ``target-is-zero`` where that is
true) or over an old image, rate-limited or not, started by a client that
hangs up, paused and resumed in one breath, completed (the guest's disk
pivots, with a guest write sent in the same burst), finalized by hand,
cancelled when ready (a consistent copy stays) or cancelled while copying;
changes a running job cannot survive (writing its target, resizing its
source, formatting a live image), which must be refused; and the daemon
stopped by ``quit`` or SIGTERM with all of that open, and started again.

The model is each image's content (:class:`~.harness.Content`).  After
every step the invariants hold:

* every zero claim is true: where ``x-query-zero-state`` says ``open``
  or ``x-blockdev-map`` says ``zero``, a read returns zeroes;
* every acknowledged write is there: each open image reads back as the
  model says.

After every completed mirror (and every soft cancel) ``qemu-img compare``
finds source and target identical, and the job's ``offset`` is its
``len``; an image the daemon closes is judged by ``qemu-img`` (content,
and ``check`` for qcow2: no corruption, and no leak unless a fault was
injected); at the end the daemon stops and every image is judged so.

``scripts/test`` runs a few examples; ``scripts/soak`` many
(``QMPD_SOAK=1``, or ``QMPD_PROPERTY_EXAMPLES=N``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from .harness import (
    Client,
    Content,
    KiB,
    MiB,
    Qmpd,
    content_errors,
    corrupted,
    count_ones,
    env_int,
    false_zero_claims,
    hang_up_after,
    image_bytes,
    img_check,
    img_compare,
    img_create,
    lock_refused,
    needs_tools,
    outside_io,
    read_matches,
    request,
)

SIZE = 4 * MiB
#: Images the guest writes, and all images (mirror targets included).
MAX_DATA_IMAGES = 3
MAX_IMAGES = 6
#: Seconds a write whose client hung up may take to land (a guard against
#: waiting for ever, not a measure of speed).
HANG_GUARD = 20.0

pytestmark = [pytest.mark.qemu, pytest.mark.slow, needs_tools]



@dataclass(repr=False)
class Image:
    """One image file and what the daemon has open on it."""

    index: int
    path: Path
    fmt: str  # raw, qcow2
    content: Content
    #: The blkdebug rules under the format node while it is open (None: no blkdebug).
    rules: list[dict[str, Any]] | None = None
    read_only: bool = False
    is_open: bool = False
    #: A fault was injected under it at some time: qcow2 may leak clusters.
    faulted: bool = False
    #: The device's qdev path while the image is a guest's disk.
    qdev: str | None = None
    device: str | None = None
    #: The mirror job using the image, and as what ("source", "target").
    job: str | None = None
    role: str | None = None
    #: The backing image of an overlay; a backing image is frozen (never
    #: written, opened or mirrored over again: its overlays read it).
    backing: Image | None = None
    frozen: bool = False

    def __repr__(self) -> str:
        return f"<{self.fmt} image {self.index}>"

    @property
    def node(self) -> str:
        return f"n{self.index}"

    @property
    def file(self) -> str:
        return f"f{self.index}"

    @property
    def debug(self) -> str:
        return f"d{self.index}"

    @property
    def read_node(self) -> str:
        """Where to read the guest's bytes without tripping blkdebug's
        rules: the file node under a raw image, else the format node."""
        return self.file if self.fmt == "raw" else self.node

    @property
    def busy_target(self) -> bool:
        return self.role == "target"


@dataclass
class Mirror:
    job: str
    source: Image
    target: Image
    ready: bool = False
    #: Started with a speed limit that still holds (it cannot get ready).
    limited: bool = False
    auto_finalize: bool = True
    #: Ranges written on the source behind the job's back (below its
    #: filter): the copy may or may not have them.
    bypassed: list[tuple[int, int]] = field(default_factory=list)
    #: Bytes the job may skip (where both images may read as zero), while
    #: nothing has written the source since the start (else None).
    may_skip: int | None = None

    def __repr__(self) -> str:
        return f"<mirror {self.job} {self.source} -> {self.target}>"


# ------------------------------------------------------------------ strategies

_aligned = st.tuples(
    st.integers(0, SIZE // 512 - 1).map(lambda s: s * 512),
    st.sampled_from([512, 4 * KiB, 60 * KiB, 64 * KiB, 192 * KiB, 1 * MiB]),
)
_unaligned = st.tuples(st.integers(0, SIZE - 1), st.integers(1, 200 * KiB))
ranges = st.one_of(_aligned, _unaligned).map(lambda r: (r[0], min(r[1], SIZE - r[0])))
#: (byte, how): "P" a pattern write, "z" a zero write, "zu" one that may unmap.
fills = st.one_of(
    st.tuples(st.sampled_from([0x00, 0x11, 0x5A, 0xFF]), st.just("P")),
    st.tuples(st.just(0), st.sampled_from(["z", "zu"])),
)
#: raw's data events and qcow2's metadata and flush events (QEMU's names).
EVENTS = [
    "read_aio", "write_aio", "l1_update", "l2_load", "l2_update", "l2_alloc_write",
    "refblock_update_part", "refblock_alloc", "cluster_alloc", "cow_read", "flush_to_os",
    "flush_to_disk", "pwritev", "pwritev_zero",
]  # fmt: skip
blkdebug_rule = st.fixed_dictionaries(
    {
        "event": st.sampled_from(EVENTS),
        "iotype": st.sampled_from(["read", "write", "write-zeroes", "flush"]),
        "errno": st.sampled_from([5, 28]),
        "once": st.booleans(),
        "immediately": st.booleans(),
    },
    optional={"sector": st.integers(0, SIZE // 512 - 1)},
)
blkdebug_rules = st.one_of(st.none(), st.lists(blkdebug_rule, min_size=1, max_size=2))


def write_command(offset: int, length: int, byte: int, how: str) -> str:
    if how == "P":
        return f"write -P {byte:#x} {offset} {length}"
    return f"write -z{' -u' if how == 'zu' else ''} {offset} {length}"


def refused(out: str) -> bool:
    """Whether qemu-io's text says the request was not done."""
    return not out.startswith("wrote ") and out.strip() != ""


class DaemonMachine(RuleBasedStateMachine):
    """See the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="qmpd-integrity-", dir="/tmp"))
        self.qmpd = Qmpd.start()
        self.client = self.qmpd.client
        self.images: list[Image] = []
        self.mirrors: dict[str, Mirror] = {}
        self.counter = 0

    def name(self, prefix: str) -> str:
        self.counter += 1
        return f"{prefix}{self.counter}"

    # -------------------------------------------------------------- helpers

    def data_images(self) -> list[Image]:
        return [i for i in self.images if i.role != "target"]

    def open_images(self) -> list[Image]:
        return [i for i in self.images if i.is_open]

    def writable(self) -> list[Image]:
        """Open images a guest may write: not read-only, not a mirror's target."""
        return [i for i in self.images if i.is_open and not i.read_only and not i.busy_target]

    def new_image(self, fmt: str, how: str, cluster: int, prealloc: str = "off") -> Image:
        image = Image(len(self.images), self.dir / f"i{len(self.images)}.{fmt}", fmt, Content(SIZE))
        self.images.append(image)
        if how == "outside":
            options = [f"cluster_size={cluster}"] if fmt == "qcow2" else []
            img_create(image.path, fmt, SIZE, *options)
            return image
        file: dict[str, Any] = {"driver": "file", "filename": str(image.path)}
        if fmt == "raw":
            file.update(size=SIZE, preallocation=prealloc)
        else:
            file.update(size=0)
        err = self.client.create(self.name("c"), file)
        assert err is None, err
        if fmt == "qcow2":
            self.client.ok("blockdev-add", driver="file", node_name=image.file,
                           filename=str(image.path))  # fmt: skip
            options = {"driver": "qcow2", "file": image.file, "size": SIZE,
                       "cluster-size": cluster}  # fmt: skip
            err = self.client.create(self.name("c"), options)
            assert err is None, err
            self.client.ok("blockdev-del", node_name=image.file)
        return image

    def open(self, image: Image, rules: list[dict[str, Any]] | None, read_only: bool) -> None:
        self.client.ok("blockdev-add", driver="file", node_name=image.file,
                       filename=str(image.path))  # fmt: skip
        child = image.file
        image.rules = rules
        if rules is not None:
            self.client.ok("blockdev-add", driver="blkdebug", node_name=image.debug,
                           image=image.file, inject_error=rules)  # fmt: skip
            child = image.debug
            image.faulted = True
        self.client.ok("blockdev-add", driver=image.fmt, node_name=image.node, file=child,
                       read_only=read_only)  # fmt: skip
        image.is_open = True
        image.read_only = read_only

    def close(self, image: Image) -> None:
        """blockdev-del the image's nodes, then judge the file with qemu-img."""
        self.client.ok("blockdev-del", node_name=image.node)
        if image.rules is not None:
            self.client.ok("blockdev-del", node_name=image.debug)
        self.client.ok("blockdev-del", node_name=image.file)
        image.is_open = False
        image.rules = None
        self.judge_offline(image)

    def judge_offline(self, image: Image) -> None:
        """What QEMU's tools find in a closed image: a sound qcow2 (clean
        unless a fault was injected) and the acknowledged writes."""
        if image.fmt == "qcow2":
            report = img_check(image.path)
            assert not corrupted(report), (image.path, report)
            if not image.faulted:
                assert report.get("leaks", 0) == 0, (image.path, report)
        actual = image_bytes(image.path, image.fmt, self.dir)
        bad = image.content.mismatches(actual)
        assert not bad, f"{image.path}: acknowledged data missing (offset, want, got): {bad}"

    def guest_target(self, image: Image) -> tuple[str, bool]:
        """What qemu-io names to write as the guest: (device or node, is device)."""
        if image.qdev is not None:
            return image.qdev, True
        return image.node, False

    def guest_io(self, image: Image, command: str) -> str:
        target, device = self.guest_target(image)
        return self.client.io(target, command, device=device)

    def record_write(self, image: Image, offset: int, length: int, byte: int, out: str) -> None:
        """Model a write's outcome (qemu-io's text)."""
        if image.role == "source":
            assert image.job is not None
            self.mirrors[image.job].may_skip = None
        if image.role == "source" and image.qdev is None:
            # qemu-io on the node itself writes below the mirror's filter:
            # QEMU 11.1's mirror does not see such a write either.
            assert image.job is not None
            self.mirrors[image.job].bypassed.append((offset, length))
        if out.startswith("wrote "):
            image.content.write(offset, length, byte)
        elif out.startswith("write failed:") and image.rules is not None:
            image.content.forget(offset, length)  # an injected fault: maybe written
        else:
            raise AssertionError(f"write on {image.node}: {out!r}")

    def write(self, image: Image, offset: int, length: int, byte: int, how: str) -> None:
        out = self.guest_io(image, write_command(offset, length, byte, how))
        self.record_write(image, offset, length, byte, out)

    def compare_copy(self, mirror: Mirror) -> None:
        """After a completed mirror or soft cancel: the target is the source,
        byte for byte, on the medium (qemu-img compare)."""
        source, target = mirror.source, mirror.target
        target.content = source.content.copy()
        if mirror.bypassed:
            for offset, length in mirror.bypassed:
                target.content.forget(offset, length)
            return
        for image in (source, target):
            out = self.client.io(image.node, "flush")
            assert out.strip() == "" or image.rules is not None, out
        result = img_compare(source.path, source.fmt, target.path, target.fmt)
        assert result == "Images are identical.", (mirror.job, result)

    def wait_end(
        self, mirror: Mirror, when_pending: Callable[[], None] | None = None
    ) -> dict[str, Any]:
        """Follow the job to its end (finalizing it by hand when it waits
        in ``pending``, after ``when_pending``); its BLOCK_JOB_COMPLETED or
        BLOCK_JOB_CANCELLED event."""
        while True:
            status = self.client.job_event(mirror.job, "JOB_STATUS_CHANGE")["data"]["status"]
            if status == "pending" and not mirror.auto_finalize:
                if when_pending is not None:
                    when_pending()
                self.client.ok("job-finalize", id=mirror.job)
            if status == "concluded":
                break
        end = self.client.job_event(mirror.job, "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")
        while self.client.job_event(mirror.job, "JOB_STATUS_CHANGE")["data"]["status"] != "null":
            pass
        del self.mirrors[mirror.job]
        for image in (mirror.source, mirror.target):
            image.job = image.role = None
        if end["event"] == "BLOCK_JOB_COMPLETED" and "error" not in end["data"]:
            assert end["data"]["offset"] == end["data"]["len"], end
        return end

    def cancel(self, mirror: Mirror, command: str, **args: Any) -> dict[str, Any]:
        """Cancel (or complete) ``mirror``; its end event.  A job that a
        fault has ended already is gone: it must have said so by an error."""
        _, err = self.client.try_(command, **args)
        end = self.wait_end(mirror)
        if err is not None:
            assert "error" in end["data"], (command, err, end)
        return end

    def faults(self, mirror: Mirror) -> bool:
        return mirror.source.rules is not None or mirror.target.rules is not None

    def pivot(self, mirror: Mirror) -> None:
        source, target = mirror.source, mirror.target
        if source.qdev is not None:
            target.qdev, target.device = source.qdev, source.device
            source.qdev = source.device = None

    def ended(self, mirror: Mirror, end: dict[str, Any], pivots: bool) -> None:
        """After a job-complete or soft cancel: a fault may have failed it;
        else the disk pivots (complete) and the target is the source."""
        if "error" in end["data"] or end["event"] == "BLOCK_JOB_CANCELLED":
            assert self.faults(mirror), end
            return
        if pivots:
            self.pivot(mirror)
        self.compare_copy(mirror)

    # -------------------------------------------------------------- images

    @precondition(lambda self: len(self.data_images()) < MAX_DATA_IMAGES
                  and len(self.images) < MAX_IMAGES)  # fmt: skip
    @rule(
        fmt=st.sampled_from(["raw", "qcow2"]),
        how=st.sampled_from(["outside", "blockdev-create"]),
        cluster=st.sampled_from([4 * KiB, 64 * KiB]),
        prealloc=st.sampled_from(["off", "falloc", "full"]),
        prefill=st.lists(st.tuples(ranges, st.sampled_from([0x22, 0x33])), max_size=2),
        rules=blkdebug_rules,
        read_only=st.booleans(),
    )
    def add_image(self, fmt: str, how: str, cluster: int, prealloc: str,
                  prefill: list[tuple[tuple[int, int], int]],
                  rules: list[dict[str, Any]] | None, read_only: bool) -> None:  # fmt: skip
        image = self.new_image(fmt, how, cluster, prealloc)
        for (offset, length), byte in prefill:
            result = outside_io(image.path, fmt, f"write -P {byte:#x} {offset} {length}")
            assert result.returncode == 0, result
            image.content.write(offset, length, byte)
        self.open(image, rules, read_only)

    def closed(self) -> list[Image]:
        """Images the daemon does not have open (and that are no overlay's base)."""
        return [i for i in self.images if not i.is_open and not i.frozen]

    @precondition(lambda self: self.closed())
    @rule(data=st.data(), rules=blkdebug_rules, read_only=st.booleans())
    def reopen_image(self, data: st.DataObject, rules: list[dict[str, Any]] | None,
                     read_only: bool) -> None:  # fmt: skip
        image = data.draw(st.sampled_from(self.closed()))
        self.open(image, rules, read_only)

    @precondition(lambda self: self.closed() and len(self.data_images()) < MAX_DATA_IMAGES
                  and len(self.images) < MAX_IMAGES)  # fmt: skip
    @rule(data=st.data(), how=st.sampled_from(["outside", "blockdev-create"]),
          cluster=st.sampled_from([4 * KiB, 64 * KiB]), rules=blkdebug_rules)  # fmt: skip
    def add_overlay(self, data: st.DataObject, how: str, cluster: int,
                    rules: list[dict[str, Any]] | None) -> None:  # fmt: skip
        """A qcow2 overlay on a closed image, which becomes its frozen base:
        the overlay reads the base where it holds nothing itself, and a
        write of part of a cluster copies the rest up from the base."""
        base = data.draw(st.sampled_from(self.closed()))
        index = len(self.images)
        overlay = Image(index, self.dir / f"i{index}.qcow2", "qcow2", base.content.copy(),
                        backing=base)  # fmt: skip
        self.images.append(overlay)
        base.frozen = True
        if how == "outside":
            img_create(overlay.path, "qcow2", SIZE, f"cluster_size={cluster}",
                       f"backing_file={base.path}", f"backing_fmt={base.fmt}")  # fmt: skip
        else:
            err = self.client.create(self.name("c"), {"driver": "file",
                                     "filename": str(overlay.path), "size": 0})  # fmt: skip
            assert err is None, err
            self.client.ok("blockdev-add", driver="file", node_name=overlay.file,
                           filename=str(overlay.path))  # fmt: skip
            options = {"driver": "qcow2", "file": overlay.file, "size": SIZE,
                       "cluster-size": cluster, "backing-file": str(base.path),
                       "backing-fmt": base.fmt}  # fmt: skip
            err = self.client.create(self.name("c"), options)
            assert err is None, err
            self.client.ok("blockdev-del", node_name=overlay.file)
        self.open(overlay, rules, False)

    @precondition(lambda self: any(i.backing is not None for i in self.closed()))
    @rule(data=st.data())
    def peek_without_backing(self, data: st.DataObject) -> None:
        """An overlay opened read-only without its backing file: its zero
        claims speak of its own clusters only, and must still be true."""
        overlay = data.draw(st.sampled_from([i for i in self.closed() if i.backing is not None]))
        node = f"peek{overlay.index}"
        file = {"driver": "file", "filename": str(overlay.path)}
        self.client.ok("blockdev-add", driver="qcow2", node_name=node, read_only=True,
                       backing=None, file=file)  # fmt: skip
        wrong = false_zero_claims(self.client, node)
        self.client.ok("blockdev-del", node_name=node)
        assert not wrong, wrong

    @precondition(lambda self: any(i.is_open and i.job is None and i.qdev is None
                                   for i in self.images))  # fmt: skip
    @rule(data=st.data())
    def close_image(self, data: st.DataObject) -> None:
        candidates = [i for i in self.images if i.is_open and i.job is None and i.qdev is None]
        self.close(data.draw(st.sampled_from(candidates)))

    @precondition(lambda self: any(i.qdev is None for i in self.writable()))
    @rule(data=st.data())
    def attach_device(self, data: st.DataObject) -> None:
        image = data.draw(st.sampled_from([i for i in self.writable() if i.qdev is None]))
        device = self.name("disk")
        self.client.ok("device_add", driver="virtio-blk-pci", id=device, drive=image.node)
        (qdev,) = [b["qdev"] for b in self.client.ok("query-block")
                   if b.get("inserted", {}).get("node-name") == image.node]  # fmt: skip
        image.qdev, image.device = qdev, device

    @precondition(lambda self: any(i.qdev is not None for i in self.images))
    @rule(data=st.data())
    def detach_device(self, data: st.DataObject) -> None:
        image = data.draw(st.sampled_from([i for i in self.images if i.qdev is not None]))
        self.client.ok("device_del", id=image.device)
        image.qdev = image.device = None

    # -------------------------------------------------------------- guest I/O

    @precondition(lambda self: self.writable())
    @rule(data=st.data(), where=ranges, fill=fills)
    def guest_write(self, data: st.DataObject, where: tuple[int, int],
                    fill: tuple[int, str]) -> None:  # fmt: skip
        image = data.draw(st.sampled_from(self.writable()))
        self.write(image, *where, *fill)

    @precondition(lambda self: self.writable())
    @rule(data=st.data())
    def guest_flush(self, data: st.DataObject) -> None:
        image = data.draw(st.sampled_from(self.writable()))
        out = self.guest_io(image, "flush")
        assert out.strip() == "" or (image.rules is not None and "flush failed" in out), out

    @precondition(lambda self: any(i.rules is None for i in self.writable()))
    @rule(data=st.data(), offset=st.integers(0, SIZE // 2).map(lambda s: s & ~511))
    def write_and_hang_up(self, data: st.DataObject, offset: int) -> None:
        """A client sends a 2 MiB guest write and hangs up while it runs:
        the write must still land whole (and reach a mirror's target)."""
        image = data.draw(st.sampled_from([i for i in self.writable() if i.rules is None]))
        length, byte = 2 * MiB, 0xA7
        target, device = self.guest_target(image)
        flag = "-d " if device else ""
        line = f'qemu-io {flag}{target} "write -P {byte:#x} {offset} {length}"'
        hang_up_after(self.qmpd.daemon.sockets[0], "human-monitor-command", command_line=line)
        deadline = time.monotonic() + HANG_GUARD
        while read_matches(self.client, image.read_node, offset, length, byte) is not None:
            assert time.monotonic() < deadline, "the write of a client that hung up never landed"
            time.sleep(0.01)
        self.record_write(image, offset, length, byte, "wrote ")

    @precondition(lambda self: any(not i.frozen for i in self.images))
    @rule(data=st.data(), where=ranges, byte=st.sampled_from([0x44, 0x66]))
    def outside_write(self, data: st.DataObject, where: tuple[int, int], byte: int) -> None:
        """Another process writes the image: refused by the lock while the
        daemon uses it (with QEMU's default sharing), done otherwise."""
        image = data.draw(st.sampled_from([i for i in self.images if not i.frozen]))
        offset, length = where
        result = outside_io(image.path, image.fmt, f"write -P {byte:#x} {offset} {length}")
        if lock_refused(result):
            assert image.is_open, f"{image.path} is closed, yet locked: {result.stderr}"
            return
        assert result.returncode == 0, result
        assert "wrote" in result.stdout, result
        # The lock let it write (no user of the node writes, so it shares
        # write, as in QEMU): the daemon must see the bytes.
        image.content.write(offset, length, byte)
        if image.role == "source":
            assert image.job is not None
            self.mirrors[image.job].bypassed.append((offset, length))
            self.mirrors[image.job].may_skip = None

    # -------------------------------------------------------------- mirrors

    @precondition(lambda self: len(self.images) < MAX_IMAGES
                  and any(i.job is None for i in self.writable()))  # fmt: skip
    @rule(
        data=st.data(),
        fmt=st.sampled_from(["raw", "qcow2"]),
        how=st.sampled_from(["outside", "blockdev-create", "old"]),
        copy_mode=st.sampled_from(["background", "write-blocking"]),
        target_is_zero=st.booleans(),
        granularity=st.sampled_from([None, 64 * KiB, 512 * KiB]),
        limited=st.booleans(),
        auto_finalize=st.booleans(),
        target_rules=blkdebug_rules,
        hang_up=st.booleans(),
    )
    def start_mirror(self, data: st.DataObject, fmt: str, how: str, copy_mode: str,
                     target_is_zero: bool, granularity: int | None, limited: bool,
                     auto_finalize: bool, target_rules: list[dict[str, Any]] | None,
                     hang_up: bool) -> None:  # fmt: skip
        source = data.draw(st.sampled_from([i for i in self.writable() if i.job is None]))
        old = self.closed()
        if how == "old" and old:
            target = data.draw(st.sampled_from(old))
            target_is_zero = False  # it holds whatever it held
        else:
            target = self.new_image(fmt, "outside" if how == "old" else how, 64 * KiB)
        self.open(target, target_rules, False)
        job = self.name("m")
        args: dict[str, Any] = {"job_id": job, "device": source.node, "target": target.node,
                                "sync": "full", "copy_mode": copy_mode,
                                "auto_finalize": auto_finalize}  # fmt: skip
        if target_is_zero:
            args["target_is_zero"] = True
        if granularity is not None:
            args["granularity"] = granularity
        if limited:
            # One byte a second: it copies a first window and then waits.
            args["speed"] = 1
        if hang_up:
            # Its client leaves before reading the reply: the job runs anyway.
            hang_up_after(self.qmpd.daemon.sockets[0], "blockdev-mirror", **args)
            self.client.job_event(job, "JOB_STATUS_CHANGE")  # created
        else:
            self.client.ok("blockdev-mirror", **args)
        both_zero = source.content.maybe_zero() & target.content.maybe_zero()
        self.mirrors[job] = Mirror(job, source, target, limited=limited,
                                   auto_finalize=auto_finalize,
                                   may_skip=count_ones(both_zero, SIZE))  # fmt: skip
        source.job, source.role = job, "source"
        target.job, target.role = job, "target"
        target.content.forget()  # the copy is under way

    @precondition(lambda self: any(m.limited for m in self.mirrors.values()))
    @rule(data=st.data())
    def lift_speed_limit(self, data: st.DataObject) -> None:
        mirror = data.draw(st.sampled_from([m for m in self.mirrors.values() if m.limited]))
        _, err = self.client.try_("block-job-set-speed", device=mirror.job, speed=0)
        if err is None:
            mirror.limited = False

    @precondition(lambda self: any(not m.ready for m in self.mirrors.values()))
    @rule(data=st.data())
    def pause_and_resume_at_once(self, data: st.DataObject) -> None:
        """job-pause and job-resume in one write: the job runs on."""
        mirror = data.draw(st.sampled_from([m for m in self.mirrors.values() if not m.ready]))
        replies = self.client.burst(
            ("job-pause", {"id": mirror.job}), ("job-resume", {"id": mirror.job})
        )
        if replies != [{}, {}]:
            return  # it had ended already (a fault)
        (info,) = [j for j in self.client.ok("query-block-jobs") if j["device"] == mirror.job]
        assert info["status"] != "paused", info

    @precondition(lambda self: any(not m.ready for m in self.mirrors.values()))
    @rule(data=st.data())
    def wait_ready(self, data: st.DataObject) -> None:
        mirror = data.draw(st.sampled_from([m for m in self.mirrors.values() if not m.ready]))
        if mirror.limited:
            self.lift_speed_limit_of(mirror)
        event = self.client.job_event(
            mirror.job, "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"
        )
        if event["event"] == "BLOCK_JOB_READY":
            mirror.ready = True
            self.check_skipped(mirror)
            return
        # A fault ended it (an injected error on the source or the target).
        assert "error" in event["data"], event
        assert self.faults(mirror), event
        self.client.events.append(event)  # wait_end takes it again
        self.wait_end(mirror)

    def check_skipped(self, mirror: Mirror) -> None:
        """x-zero-stats' ``skipped`` claims that many bytes read as zero on
        both sides: no more than the model allows."""
        (info,) = [j for j in self.client.ok("query-block-jobs") if j["device"] == mirror.job]
        stats = info["x-zero-stats"]
        if mirror.may_skip is not None:
            assert stats["skipped"] <= mirror.may_skip, (mirror, stats, mirror.may_skip)

    def lift_speed_limit_of(self, mirror: Mirror) -> None:
        self.client.try_("block-job-set-speed", device=mirror.job, speed=0)
        mirror.limited = False

    @precondition(lambda self: any(m.ready for m in self.mirrors.values()))
    @rule(data=st.data(), finish=st.sampled_from(["complete", "cancel"]),
          pending_write=st.one_of(st.none(), st.tuples(ranges, st.just(0x3C))))  # fmt: skip
    def finish_ready_mirror(self, data: st.DataObject, finish: str,
                            pending_write: tuple[tuple[int, int], int] | None) -> None:  # fmt: skip
        mirror = data.draw(st.sampled_from([m for m in self.mirrors.values() if m.ready]))
        writer: list[tuple[Client, tuple[int, int], int]] = []
        via_device = mirror.source.qdev is not None

        def write_while_pending() -> None:
            # The job waits for job-finalize: a guest write sent now (by a
            # second client: QEMU holds it until the job ends) lands on the
            # disk the guest has after the job, or fails.
            if pending_write is None:
                return
            (offset, length), byte = pending_write
            other = Client(self.qmpd.daemon.sockets[0], timeout=20.0)
            target, device = self.guest_target(mirror.source)
            flag = "-d " if device else ""
            line = f'qemu-io {flag}{target} "write -P {byte:#x} {offset} {length}"'
            other.raw.send(request("human-monitor-command", command_line=line))
            writer.append((other, (offset, length), byte))
            mirror.bypassed.append((offset, length))  # not compared: see below

        if finish == "complete":
            _, err = self.client.try_("job-complete", id=mirror.job)
        else:
            _, err = self.client.try_("block-job-cancel", device=mirror.job)
        end = self.wait_end(mirror, write_while_pending)
        assert err is None or "error" in end["data"], (err, end)
        outs = []
        for other, _, _ in writer:
            reply = other.reply()
            other.close()
            outs.append(str(reply).replace("\r\n", "\n"))
        self.ended(mirror, end, pivots=finish == "complete")
        # With a device, the guest's disk is the target after a pivot; a
        # write on the node (below the job's filter) stays on the source.
        pivoted = finish == "complete" and "error" not in end["data"] and via_device
        for out, (_, (offset, length), byte) in zip(outs, writer, strict=True):
            # The disk the guest has now must hold an acknowledged write;
            # the other image may or may not.
            disk, spare = mirror.source, mirror.target
            if pivoted:
                disk, spare = spare, disk
            spare.content.forget(offset, length)
            if out.startswith("wrote "):
                disk.content.write(offset, length, byte)
            else:
                assert out.startswith("write failed:"), out
                disk.content.forget(offset, length)

    @precondition(lambda self: any(m.ready and m.source.qdev is not None
                                   for m in self.mirrors.values()))  # fmt: skip
    @rule(data=st.data(), where=ranges)
    def complete_with_a_write_in_the_same_breath(self, data: st.DataObject,
                                                 where: tuple[int, int]) -> None:  # fmt: skip
        """job-complete and a guest write sent together: the write is
        acknowledged, so it is on the disk after the pivot."""
        mirror = data.draw(st.sampled_from(
            [m for m in self.mirrors.values() if m.ready and m.source.qdev is not None]
        ))  # fmt: skip
        offset, length = where
        byte = 0xC3
        qdev = mirror.source.qdev
        line = f'qemu-io -d {qdev} "write -P {byte:#x} {offset} {length}"'
        _, out = self.client.burst(
            ("job-complete", {"id": mirror.job}),
            ("human-monitor-command", {"command-line": line}),
        )
        out = str(out).replace("\r\n", "\n")
        end = self.wait_end(mirror)
        source, target = mirror.source, mirror.target
        if "error" in end["data"]:
            assert self.faults(mirror), end
            if not out.startswith("wrote "):
                source.content.forget(offset, length)
            else:
                source.content.write(offset, length, byte)
            return
        # The write went to the source before the switch (and was copied)
        # or to the target after it: the guest's disk, the target now, must
        # hold it; the old source may or may not.
        self.pivot(mirror)
        mirror.bypassed.append((offset, length))
        self.compare_copy(mirror)
        source.content.forget(offset, length)
        if out.startswith("wrote "):
            target.content.write(offset, length, byte)
        else:
            target.content.forget(offset, length)

    @precondition(lambda self: self.mirrors)
    @rule(data=st.data())
    def cancel_mirror(self, data: st.DataObject) -> None:
        """job-cancel: a forced cancel, whatever the state; the target holds
        part of a copy."""
        mirror = data.draw(st.sampled_from(list(self.mirrors.values())))
        self.cancel(mirror, "job-cancel", id=mirror.job)

    @precondition(lambda self: self.mirrors)
    @rule(data=st.data())
    def query_while_copying(self, data: st.DataObject) -> None:
        """Zero queries on a target being written (a query must not cache a
        stale answer); the answers are judged once the job is over."""
        mirror = data.draw(st.sampled_from(list(self.mirrors.values())))
        for query in ("x-query-zero-state", "x-blockdev-map"):
            _, err = self.client.try_(query, node_name=mirror.target.node)
            assert err is None or mirror.target.rules is not None, (query, err)
        self.client.ok("query-block-jobs")

    # -------------------------------------------------------------- refusals

    @precondition(lambda self: self.mirrors)
    @rule(data=st.data(), change=st.sampled_from(["write target", "resize source"]))
    def change_a_job_cannot_survive(self, data: st.DataObject, change: str) -> None:
        """What QEMU 11.1 refuses with a permission conflict while a mirror
        runs: writing its target, resizing its source."""
        mirror = data.draw(st.sampled_from(list(self.mirrors.values())))
        if not any(j["id"] == mirror.job and j["status"] in ("running", "ready")
                   for j in self.client.ok("query-jobs")):  # fmt: skip
            return  # a fault has ended it: nothing to protect
        if change == "write target":
            out = self.client.io(mirror.target.node, "write -P 0x99 0 64k")
        else:
            out = self.client.io(mirror.source.node, f"truncate {2 * SIZE}")
        assert refused(out), (change, out)

    def in_use(self) -> list[Image]:
        """Open images whose users keep others from writing their file: a
        qcow2 node (its metadata), or a guest's disk.  (A raw node nobody
        uses shares everything, in QEMU as in qmpd.)"""
        return [i for i in self.open_images() if i.fmt == "qcow2" or i.qdev is not None]

    @precondition(lambda self: self.in_use())
    @rule(data=st.data())
    def format_a_live_image(self, data: st.DataObject) -> None:
        """blockdev-create on the file node of an image in use is refused
        (QEMU 11.1: a permission conflict); the image stays as it was."""
        image = data.draw(st.sampled_from(self.in_use()))
        options = {"driver": "qcow2", "file": image.file, "size": SIZE}
        err = self.client.create(self.name("c"), options)
        assert err is not None, f"blockdev-create formatted the live {image}"

    # -------------------------------------------------------------- restart

    @rule(how=st.sampled_from(["quit", "SIGTERM"]))
    def restart(self, how: str) -> None:
        """Stop the daemon with everything open (devices, jobs): jobs are
        cancelled, every image is flushed and closed; then start again."""
        status = self.qmpd.quit() if how == "quit" else self.qmpd.terminate()
        assert status == 0, (how, status, self.qmpd.daemon.stderr()[-2000:])
        self.qmpd.close()
        for mirror in self.mirrors.values():
            mirror.target.content.forget()
        self.mirrors.clear()
        for image in self.images:
            image.is_open = False
            image.rules = None
            image.qdev = image.device = image.job = image.role = None
        for image in self.images:
            self.judge_offline(image)
        self.qmpd = Qmpd.start()
        self.client = self.qmpd.client

    # -------------------------------------------------------------- invariants

    @invariant()
    def zero_claims_are_true(self) -> None:
        wrong: list[str] = []
        for image in self.open_images():
            if image.busy_target:
                continue  # the job writes it while we read
            faults = image.rules is not None
            wrong += false_zero_claims(self.client, image.node, image.read_node, faults=faults)
            wrong += false_zero_claims(self.client, image.file)
        assert not wrong, wrong

    @invariant()
    def acknowledged_writes_read_back(self) -> None:
        wrong: list[str] = []
        for image in self.open_images():
            if not image.busy_target:
                wrong += content_errors(self.client, image.read_node, image.content)
        assert not wrong, wrong

    def teardown(self) -> None:
        try:
            for mirror in list(self.mirrors.values()):
                self.cancel(mirror, "job-cancel", id=mirror.job)
            for image in self.images:
                if image.device is not None:
                    self.client.ok("device_del", id=image.device)
                    image.qdev = image.device = None
            for image in self.images:
                if image.is_open:
                    self.close(image)
            assert self.qmpd.quit() == 0
            for image in self.images:
                self.judge_offline(image)
        finally:
            self.qmpd.close()
            shutil.rmtree(self.dir, ignore_errors=True)


#: QMPD_PROPERTY_SHRINK=0 reports the first failure as found (faster when
#: a step hangs until the client's timeout).
_PHASES = (
    (Phase.explicit, Phase.reuse, Phase.generate)
    if os.environ.get("QMPD_PROPERTY_SHRINK") == "0"
    else tuple(Phase)
)
DaemonMachine.TestCase.settings = settings(
    phases=_PHASES,
    max_examples=env_int("QMPD_PROPERTY_EXAMPLES", 5, 300),
    stateful_step_count=env_int("QMPD_PROPERTY_STEPS", 20, 40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDaemonMachine = DaemonMachine.TestCase
