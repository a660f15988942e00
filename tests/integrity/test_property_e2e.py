"""A stateful property test of one qmpd process, end to end.

Hypothesis drives a real daemon over its Unix socket as a careful user
would: images made by ``qemu-img`` or by ``blockdev-create``, opened and
closed, attached to guest devices; guest writes (HMP ``qemu-io -d`` on the
device, or ``qemu-io`` on the node) and flushes; writes by an outside
``qemu-io`` process, which the image locks refuse while the daemon holds
the image and allow once it has let go; faults injected under raw images
by ``blkdebug`` rules; mirrors into fresh raw or qcow2 images (with
``target-is-zero`` where that is true) or over an old image, completed
(the guest's disk pivots), cancelled when ready (a consistent copy stays)
or cancelled while copying.

The model is each image's content (:class:`~.harness.Content`).  After
every step the invariants hold:

* every zero claim is true: where ``x-query-zero-state`` says ``open``
  or ``x-blockdev-map`` says ``zero``, a read returns zeroes;
* every acknowledged write is there: each open image reads back as the
  model says.

After every completed mirror (and every soft cancel) ``qemu-img compare``
finds source and target identical; an image closed by the daemon is
judged by ``qemu-img`` (content, and ``check`` for qcow2: no corruption,
no leak); at the end the daemon stops and every image is judged so.

``scripts/test`` runs a few examples; ``scripts/soak`` many
(``QMPD_SOAK=1``, or ``QMPD_PROPERTY_EXAMPLES=N``).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
)

from .harness import (
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
    img_compare,
    img_create,
    lock_refused,
    needs_tools,
    outside_io,
)

SIZE = 4 * MiB
#: Images the guest writes, and all images (mirror targets included).
MAX_DATA_IMAGES = 3
MAX_IMAGES = 6

pytestmark = [pytest.mark.qemu, pytest.mark.slow, needs_tools]


@dataclass(repr=False)
class Image:
    """One image file and what the daemon has open on it."""

    index: int
    path: Path
    fmt: str  # raw, qcow2
    content: Content
    #: The blkdebug rules under the raw node while it is open (None: no blkdebug).
    rules: list[dict[str, Any]] | None = None
    is_open: bool = False
    #: The device's qdev path while the image is a guest's disk.
    qdev: str | None = None
    device: str | None = None
    #: The mirror job using the image, and as what ("source", "target").
    job: str | None = None
    role: str | None = None

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
    #: Ranges an outside process wrote on the source behind the job's back
    #: (QEMU's locks allow that while no user of the source writes): the
    #: copy may or may not have them.
    bypassed: list[tuple[int, int]] = field(default_factory=list)

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
blkdebug_rule = st.fixed_dictionaries(
    {
        "event": st.sampled_from(["read_aio", "write_aio"]),
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
        """Open images a guest may write: not a mirror's target."""
        return [i for i in self.images if i.is_open and not i.busy_target]

    def new_image(self, fmt: str, how: str, cluster: int) -> Image:
        image = Image(len(self.images), self.dir / f"i{len(self.images)}.{fmt}", fmt, Content(SIZE))
        self.images.append(image)
        if how == "outside":
            options = [f"cluster_size={cluster}"] if fmt == "qcow2" else []
            img_create(image.path, fmt, SIZE, *options)
            return image
        size = SIZE if fmt == "raw" else 0
        err = self.client.create(
            self.name("c"), {"driver": "file", "filename": str(image.path), "size": size}
        )
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

    def open(self, image: Image, rules: list[dict[str, Any]] | None) -> None:
        self.client.ok("blockdev-add", driver="file", node_name=image.file,
                       filename=str(image.path))  # fmt: skip
        child = image.file
        image.rules = rules if image.fmt == "raw" else None
        if image.rules is not None:
            self.client.ok("blockdev-add", driver="blkdebug", node_name=image.debug,
                           image=image.file, inject_error=image.rules)  # fmt: skip
            child = image.debug
        self.client.ok("blockdev-add", driver=image.fmt, node_name=image.node, file=child)
        image.is_open = True

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
        """What QEMU's tools find in a closed image: a clean qcow2 and the
        acknowledged writes."""
        if image.fmt == "qcow2":
            report = img_check(image.path)
            assert not corrupted(report), (image.path, report)
            assert report.get("leaks", 0) == 0, (image.path, report)
        actual = image_bytes(image.path, image.fmt, self.dir)
        bad = image.content.mismatches(actual)
        assert not bad, f"{image.path}: acknowledged data missing (offset, want, got): {bad}"

    def guest_io(self, image: Image, command: str) -> str:
        if image.qdev is not None:
            return self.client.io(image.qdev, command, device=True)
        return self.client.io(image.node, command)

    def write(self, image: Image, offset: int, length: int, byte: int, how: str) -> str:
        out = self.guest_io(image, write_command(offset, length, byte, how))
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
        return out

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

    def wait_end(self, mirror: Mirror) -> dict[str, Any]:
        """Wait for BLOCK_JOB_COMPLETED/CANCELLED, then for the job to be gone."""
        end = self.client.job_event(mirror.job, "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED")
        while self.client.job_event(mirror.job, "JOB_STATUS_CHANGE")["data"]["status"] != "null":
            pass
        del self.mirrors[mirror.job]
        for image in (mirror.source, mirror.target):
            image.job = image.role = None
        return end

    def cancel(self, mirror: Mirror, command: str, **args: Any) -> dict[str, Any]:
        """Cancel (or complete) ``mirror``; its end event.  A job that a
        fault has ended already is gone: it must have said so by an error."""
        _, err = self.client.try_(command, **args)
        end = self.wait_end(mirror)
        if err is not None:
            assert "error" in end["data"], (command, err, end)
        return end

    def pivot(self, mirror: Mirror) -> None:
        source, target = mirror.source, mirror.target
        if source.qdev is not None:
            target.qdev, target.device = source.qdev, source.device
            source.qdev = source.device = None

    # -------------------------------------------------------------- rules

    @precondition(lambda self: len(self.data_images()) < MAX_DATA_IMAGES
                  and len(self.images) < MAX_IMAGES)  # fmt: skip
    @rule(
        fmt=st.sampled_from(["raw", "qcow2"]),
        how=st.sampled_from(["outside", "blockdev-create"]),
        cluster=st.sampled_from([4 * KiB, 64 * KiB]),
        prefill=st.lists(st.tuples(ranges, st.sampled_from([0x22, 0x33])), max_size=2),
        rules=blkdebug_rules,
    )
    def add_image(self, fmt: str, how: str, cluster: int,
                  prefill: list[tuple[tuple[int, int], int]],
                  rules: list[dict[str, Any]] | None) -> None:  # fmt: skip
        image = self.new_image(fmt, how, cluster)
        for (offset, length), byte in prefill:
            result = outside_io(image.path, fmt, f"write -P {byte:#x} {offset} {length}")
            assert result.returncode == 0, result
            image.content.write(offset, length, byte)
        self.open(image, rules)

    @precondition(lambda self: any(not i.is_open for i in self.images))
    @rule(data=st.data(), rules=blkdebug_rules)
    def reopen_image(self, data: st.DataObject, rules: list[dict[str, Any]] | None) -> None:
        image = data.draw(st.sampled_from([i for i in self.images if not i.is_open]))
        self.open(image, rules)

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

    @precondition(lambda self: self.images)
    @rule(data=st.data(), where=ranges, byte=st.sampled_from([0x44, 0x66]))
    def outside_write(self, data: st.DataObject, where: tuple[int, int], byte: int) -> None:
        """Another process writes the image: refused by the lock while the
        daemon has it open (with QEMU's default sharing), done otherwise."""
        image = data.draw(st.sampled_from(self.images))
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

    @precondition(lambda self: len(self.images) < MAX_IMAGES
                  and any(i.job is None for i in self.writable()))  # fmt: skip
    @rule(
        data=st.data(),
        fmt=st.sampled_from(["raw", "qcow2"]),
        how=st.sampled_from(["outside", "blockdev-create", "old"]),
        copy_mode=st.sampled_from(["background", "write-blocking"]),
        target_is_zero=st.booleans(),
        granularity=st.sampled_from([None, 64 * KiB, 512 * KiB]),
    )
    def start_mirror(self, data: st.DataObject, fmt: str, how: str, copy_mode: str,
                     target_is_zero: bool, granularity: int | None) -> None:  # fmt: skip
        source = data.draw(st.sampled_from([i for i in self.writable() if i.job is None]))
        old = [i for i in self.images if not i.is_open]
        if how == "old" and old:
            target = data.draw(st.sampled_from(old))
            target_is_zero = False  # it holds whatever it held
        else:
            target = self.new_image(fmt, "outside" if how == "old" else how, 64 * KiB)
        self.open(target, None)
        job = self.name("m")
        args: dict[str, Any] = {"job_id": job, "device": source.node, "target": target.node,
                                "sync": "full", "copy_mode": copy_mode}  # fmt: skip
        if target_is_zero:
            args["target_is_zero"] = True
        if granularity is not None:
            args["granularity"] = granularity
        self.client.ok("blockdev-mirror", **args)
        self.mirrors[job] = Mirror(job, source, target)
        source.job, source.role = job, "source"
        target.job, target.role = job, "target"
        target.content.forget()  # the copy is under way

    @precondition(lambda self: any(not m.ready for m in self.mirrors.values()))
    @rule(data=st.data())
    def wait_ready(self, data: st.DataObject) -> None:
        mirror = data.draw(st.sampled_from([m for m in self.mirrors.values() if not m.ready]))
        event = self.client.job_event(
            mirror.job, "BLOCK_JOB_READY", "BLOCK_JOB_COMPLETED", "BLOCK_JOB_CANCELLED"
        )
        if event["event"] == "BLOCK_JOB_READY":
            mirror.ready = True
            return
        # A fault ended it (an injected read error on the source).
        assert "error" in event["data"], event
        assert mirror.source.rules is not None, event
        while self.client.job_event(mirror.job, "JOB_STATUS_CHANGE")["data"]["status"] != "null":
            pass
        del self.mirrors[mirror.job]
        for image in (mirror.source, mirror.target):
            image.job = image.role = None

    @precondition(lambda self: any(m.ready for m in self.mirrors.values()))
    @rule(data=st.data(), finish=st.sampled_from(["complete", "cancel"]))
    def finish_ready_mirror(self, data: st.DataObject, finish: str) -> None:
        mirror = data.draw(st.sampled_from([m for m in self.mirrors.values() if m.ready]))
        if finish == "complete":
            end = self.cancel(mirror, "job-complete", id=mirror.job)
        else:
            end = self.cancel(mirror, "block-job-cancel", device=mirror.job)
        if "error" in end["data"]:
            # Only a fault injected under the source or target may fail it.
            assert mirror.source.rules is not None, end
            return
        if finish == "complete":
            self.pivot(mirror)
        self.compare_copy(mirror)

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
        self.client.ok("x-query-zero-state", node_name=mirror.target.node)
        self.client.ok("x-blockdev-map", node_name=mirror.target.node)
        self.client.ok("query-block-jobs")

    # -------------------------------------------------------------- invariants

    @invariant()
    def zero_claims_are_true(self) -> None:
        wrong: list[str] = []
        for image in self.open_images():
            if image.busy_target:
                continue  # the job writes it while we read
            wrong += false_zero_claims(self.client, image.node, image.read_node)
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
    max_examples=env_int("QMPD_PROPERTY_EXAMPLES", 6, 300),
    stateful_step_count=env_int("QMPD_PROPERTY_STEPS", 20, 40),
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestDaemonMachine = DaemonMachine.TestCase
