"""The sans-I/O QMP protocol core.

Nothing in this package performs I/O or imports trio: it is fed bytes and
returns parsed requests and the bytes to send.  ``tests/test_sansio.py``
checks that no module here imports trio.
"""
