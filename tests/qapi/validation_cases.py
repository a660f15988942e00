"""Argument errors observed on QEMU 7.2 (qemu-storage-daemon 7.2.22, Debian).

Each case is (command, arguments, the ``desc`` QEMU answered; None: accepted
by the argument visitor).  They were sent to a live QSD 7.2 and the replies
copied here; ``test_validate.py`` replays them against qmpd's checker with
``schemas/block-mini.json`` and, when QSD is installed, against QSD again.
Some show the order of QEMU's walk: base members before branch members,
nested objects finished before the outer one reports unknown members.
"""

from __future__ import annotations

from typing import Any

CASES: list[tuple[str, dict[str, Any], str | None]] = [
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "/tmp/x", "bogus": 1},
        },
        "Parameter 'file.bogus' is unexpected",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "file", "bogus": 1}},
        "Parameter 'file.filename' is missing",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "nope", "bogus": 1}},
        "Parameter 'driver' does not accept value 'nope'",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"bogus": 1}},
        "Parameter 'file.driver' is missing",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": 5},
        "Invalid parameter type for 'file', expected: BlockdevRef",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "raw", "file": 5}},
        "Invalid parameter type for 'file', expected: BlockdevRef",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "file", "filename": 5}},
        "Invalid parameter type for 'file.filename', expected: string",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "x", "aio": "bad"},
        },
        "Parameter 'aio' does not accept value 'bad'",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "file", "filename": "x", "aio": 5}},
        "Invalid parameter type for 'file.aio', expected: string",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "x", "cache": {"direct": 1}},
        },
        "Invalid parameter type for 'file.cache.direct', expected: boolean",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "x", "cache": {"bogus": 1}},
        },
        "Parameter 'file.cache.bogus' is unexpected",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "x", "cache": 5},
        },
        "Invalid parameter type for 'file.cache', expected: object",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "bogus": 2,
            "file": {"driver": "file", "filename": "x", "cache": 5},
        },
        "Invalid parameter type for 'file.cache', expected: object",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "bogus": 2,
            "file": {"driver": "file", "filename": "x", "bogus": 5},
        },
        "Parameter 'file.bogus' is unexpected",
    ),
    (
        "blockdev-add",
        {"driver": "null-co", "node-name": "n", "latency-ns": "x"},
        "Parameter 'latency-ns' expects uint64",
    ),
    (
        "blockdev-add",
        {"driver": "null-co", "node-name": "n", "latency-ns": 1.0},
        "Parameter 'latency-ns' expects uint64",
    ),
    (
        "blockdev-add",
        {"driver": "null-co", "node-name": "n", "latency-ns": 18446744073709551616},
        "Parameter 'latency-ns' expects uint64",
    ),
    (
        "blockdev-add",
        {"driver": "null-co", "node-name": "n", "size": 1.0},
        "Invalid parameter type for 'size', expected: integer",
    ),
    (
        "blockdev-add",
        {"driver": "null-co", "node-name": "n", "size": 18446744073709551615},
        "Invalid parameter type for 'size', expected: integer",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "null-co", "latency-ns": "x"}},
        "Parameter 'file.latency-ns' expects uint64",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "null-co", "size": "x"}},
        "Invalid parameter type for 'file.size', expected: integer",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "null-co", "size": None}},
        "Invalid parameter type for 'file.size', expected: integer",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "null-co"}, "offset": "x"},
        "Invalid parameter type for 'offset', expected: integer",
    ),
    ("qmp_capabilities", {"enable": ["bogus"]}, "Parameter 'null' does not accept value 'bogus'"),
    (
        "qmp_capabilities",
        {"enable": [5]},
        "Invalid parameter type for 'enable[0]', expected: string",
    ),
    ("qmp_capabilities", {"enable": "oob"}, "Invalid parameter type for 'enable', expected: array"),
    (
        "blockdev-mirror",
        {"device": "a", "target": "b", "sync": "full", "granularity": -1},
        "Parameter 'granularity' expects uint32_t",
    ),
    (
        "blockdev-mirror",
        {"device": "a", "target": "b", "sync": "full", "granularity": 4294967296},
        "Parameter 'granularity' expects uint32_t",
    ),
    (
        "blockdev-mirror",
        {"device": "a", "target": "b", "sync": "full", "granularity": "x"},
        "Parameter 'granularity' expects uint64",
    ),
    (
        "blockdev-mirror",
        {"device": "a", "target": "b", "sync": "full", "granularity": 1.0},
        "Parameter 'granularity' expects uint64",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "blkdebug", "image": "x", "max-transfer": 2147483648},
        },
        "Parameter 'max-transfer' expects int32_t",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "blkdebug", "image": "x", "max-transfer": -2147483649},
        },
        "Parameter 'max-transfer' expects int32_t",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "blkdebug", "image": "x", "max-transfer": "x"},
        },
        "Invalid parameter type for 'file.max-transfer', expected: integer",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {
                "driver": "nbd",
                "server": {"type": "unix", "path": "/x"},
                "reconnect-delay": -5,
            },
        },
        "Parameter 'reconnect-delay' expects uint32_t",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {
                "driver": "nbd",
                "server": {"type": "unix", "path": "/x"},
                "reconnect-delay": "x",
            },
        },
        "Parameter 'file.reconnect-delay' expects uint64",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "nbd", "server": {"type": "unix", "path": 5}},
        },
        "Invalid parameter type for 'file.server.path', expected: string",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "nbd", "server": {"type": "bogus", "path": 5}},
        },
        "Parameter 'type' does not accept value 'bogus'",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "nbd", "server": {"path": 5}}},
        "Parameter 'file.server.type' is missing",
    ),
    (
        "blockdev-create",
        {"job-id": "j", "options": {"driver": "qcow2", "file": "x", "size": 1.5}},
        "Parameter 'options.size' expects uint64",
    ),
    (
        "blockdev-create",
        {"job-id": "j", "options": {"driver": "qcow2", "file": "x", "size": -1}},
        None,
    ),
    (
        "blockdev-create",
        {"job-id": "j", "options": {"driver": "qcow2", "file": "x", "size": "x"}},
        "Parameter 'options.size' expects uint64",
    ),
    (
        "blockdev-create",
        {"job-id": "j", "options": {"driver": "qcow2", "file": "x", "size": 18446744073709551616}},
        "Parameter 'options.size' expects uint64",
    ),
    (
        "blockdev-create",
        {"job-id": "j", "options": {"driver": "qcow2", "file": "x"}},
        "Parameter 'options.size' is missing",
    ),
    (
        "blockdev-create",
        {"job-id": "j", "options": {"driver": "qcow2", "file": 5, "size": 1}},
        "Invalid parameter type for 'file', expected: BlockdevRef",
    ),
    (
        "object-add",
        {"qom-type": "memory-backend-ram", "id": "m", "size": 1048576, "host-nodes": [1, 70000]},
        "Parameter 'null' expects uint16_t",
    ),
    (
        "object-add",
        {"qom-type": "memory-backend-ram", "id": "m", "size": 1048576, "host-nodes": [1, "x"]},
        "Parameter 'host-nodes[1]' expects uint64",
    ),
    (
        "object-add",
        {"qom-type": "memory-backend-ram", "id": "m", "size": 1048576, "host-nodes": [1, -1]},
        "Parameter 'null' expects uint16_t",
    ),
    (
        "object-add",
        {"qom-type": "iothread", "id": "m", "poll-max-ns": 1.5},
        "Invalid parameter type for 'poll-max-ns', expected: integer",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "file": {"driver": "qcow2", "file": "x", "backing": 5}},
        "Invalid parameter type for 'backing', expected: BlockdevRefOrNull",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "qcow2", "file": "x", "overlap-check": "bogus"},
        },
        "Parameter 'overlap-check' does not accept value 'bogus'",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "qcow2", "file": "x", "overlap-check": 5},
        },
        "Invalid parameter type for 'overlap-check', expected: Qcow2OverlapChecks",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "qcow2", "file": "x", "overlap-check": {"bogus": 1}},
        },
        "Parameter 'file.overlap-check.bogus' is unexpected",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "qcow2", "file": "x", "overlap-check": {"template": "bogus"}},
        },
        "Parameter 'template' does not accept value 'bogus'",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "qcow2", "file": "x", "overlap-check": None},
        },
        "Invalid parameter type for 'overlap-check', expected: Qcow2OverlapChecks",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "qcow2", "file": "x", "backing": None, "bogus": 2},
        },
        "Parameter 'file.bogus' is unexpected",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "qcow2", "file": {"driver": "file"}, "bogus": 2},
        },
        "Parameter 'file.file.filename' is missing",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {
                "driver": "qcow2",
                "file": {"driver": "file", "filename": "x", "nope": 3},
                "bogus": 2,
            },
        },
        "Parameter 'file.file.nope' is unexpected",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {
                "driver": "qcow2",
                "file": {"driver": "file", "filename": "x"},
                "bogus": 2,
                "encrypt": {"format": "luks", "key-secret": 5},
            },
        },
        "Invalid parameter type for 'file.encrypt.key-secret', expected: string",
    ),
    (
        "blockdev-add",
        {
            "driver": "quorum",
            "node-name": "n",
            "children": [{"driver": "file", "filename": "x", "zz": 1}],
        },
        "Parameter 'children[0].zz' is unexpected",
    ),
    (
        "blockdev-add",
        {"driver": "quorum", "node-name": "n", "children": ["a", {"driver": "file"}]},
        "Parameter 'children[1].filename' is missing",
    ),
    (
        "blockdev-add",
        {"driver": "quorum", "node-name": "n", "children": ["a", 5]},
        "Invalid parameter type for 'null', expected: BlockdevRef",
    ),
    (
        "blockdev-add",
        {
            "driver": "quorum",
            "node-name": "n",
            "children": ["a", {"driver": "file", "filename": "x", "aio": "zz"}],
        },
        "Parameter 'aio' does not accept value 'zz'",
    ),
    (
        "blockdev-add",
        {
            "driver": "quorum",
            "node-name": "n",
            "children": ["a", {"driver": "file", "filename": "x", "aio": 1}],
        },
        "Invalid parameter type for 'children[1].aio', expected: string",
    ),
    (
        "blockdev-add",
        {
            "driver": "quorum",
            "node-name": "n",
            "children": ["a", {"driver": "raw", "file": {"driver": "null-co", "latency-ns": "x"}}],
        },
        "Parameter 'children[1].file.latency-ns' expects uint64",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "read-only": 5, "file": 5},
        "Invalid parameter type for 'read-only', expected: boolean",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "file": {"driver": "file"}, "node-name": 5},
        "Invalid parameter type for 'node-name', expected: string",
    ),
    ("blockdev-add", {"node-name": "n", "file": 5}, "Parameter 'driver' is missing"),
    (
        "blockdev-add",
        {"driver": "file", "node-name": "n", "filename": "x", "bogus": 1, "cache": {"bogus": 2}},
        "Parameter 'cache.bogus' is unexpected",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "x"},
            "offset": "x",
            "size": "y",
        },
        "Invalid parameter type for 'offset', expected: integer",
    ),
    (
        "blockdev-add",
        {"driver": "raw", "node-name": "n", "size": "y", "file": {"driver": "file"}},
        "Parameter 'file.filename' is missing",
    ),
    ("blockdev-mirror", {"target": "b", "sync": "bogus"}, "Parameter 'device' is missing"),
    ("blockdev-mirror", {"device": 5}, "Invalid parameter type for 'device', expected: string"),
    (
        "blockdev-mirror",
        {"device": "a", "target": "b", "sync": "full", "bogus": 1, "granularity": "x"},
        "Parameter 'granularity' expects uint64",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "x"},
            "discard": "bogus",
        },
        "Parameter 'discard' does not accept value 'bogus'",
    ),
    (
        "blockdev-add",
        {
            "driver": "raw",
            "node-name": "n",
            "file": {"driver": "file", "filename": "x"},
            "discard": None,
        },
        "Invalid parameter type for 'discard', expected: string",
    ),
    (
        "blockdev-add",
        {"driver": "null-co", "node-name": "n", "size": True},
        "Invalid parameter type for 'size', expected: integer",
    ),
    (
        "blockdev-add",
        {"driver": "null-co", "node-name": "n", "read-zeroes": "yes"},
        "Invalid parameter type for 'read-zeroes', expected: boolean",
    ),
    (
        "query-named-block-nodes",
        {"flat": 1},
        "Invalid parameter type for 'flat', expected: boolean",
    ),
    (
        "blockdev-add",
        {"driver": "quorum", "node-name": "n", "children": [{"driver": "nope"}]},
        "Parameter 'driver' does not accept value 'nope'",
    ),
    (
        "blockdev-add",
        {"driver": "quorum", "node-name": "n", "children": {"a": 1}},
        "Invalid parameter type for 'children', expected: array",
    ),
    (
        "blockdev-add",
        {"driver": "quorum", "node-name": "n", "children": ["a"], "vote-threshold": 1.5},
        "Invalid parameter type for 'vote-threshold', expected: integer",
    ),
    ("blockdev-add", {"driver": 5}, "Invalid parameter type for 'driver', expected: string"),
    ("blockdev-add", {"driver": None}, "Invalid parameter type for 'driver', expected: string"),
    ("query-version", {"a": 1}, "Parameter 'a' is unexpected"),
]

__all__ = ["CASES"]
