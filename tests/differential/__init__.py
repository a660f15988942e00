"""Differential tests: qmpd and a real qemu-storage-daemon fed the same bytes."""

import pytest

# The comparison helpers assert; let pytest explain their failures in detail.
pytest.register_assert_rewrite("tests.differential.harness")
