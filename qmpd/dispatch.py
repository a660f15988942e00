"""Running one request: lookup, argument check, handler, reply bytes.

The edge where errors are translated (STYLE principle 4): a CommandError
from anywhere below becomes its QMP error reply; any other exception is our
bug, logged with its traceback and answered as a GenericError that says so,
never blamed on the client.  The session stays usable either way.

A command's fate is not its client's (issue 10): once its handler has
started, it runs to its end even if the session is cancelled meanwhile (the
client hung up, or stopped reading) or the daemon is shutting down.  A
handler cut at an await would leave its work half done: a guest write on
the source but not on the mirror target, a job created but never started.
Only waiting for its turn may be cancelled, which drops a command that never
began, as QEMU drops the requests still queued from a client that left.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from .app import CommandContext
from .errors import CommandError, CommandNotFound, GenericError
from .protocol.session import Request

log = logging.getLogger("qmpd.dispatch")


async def _unless_stopping(ctx: CommandContext) -> None:
    """Once the daemon stops (App.stop) no command runs: QEMU's main loop
    has ended, so a command sent after ``quit`` is never answered.  This
    one waits for the process to end.  No checkpoint otherwise."""
    if ctx.app.stopping:
        await trio.sleep_forever()


async def execute(ctx: CommandContext, request: Request) -> bytes:
    """Run ``request`` and return the bytes of its reply.

    Raises trio.Cancelled only while the command waits for its turn, before
    its handler has started.
    """
    app = ctx.app
    session = ctx.session
    name = request.command
    try:
        definition = app.schema.commands.get(name)
        entry = app.handlers.get(name)
        if definition is None or entry is None:
            raise CommandNotFound(f"The command {name} has not been found")
        if request.oob and not definition.allow_oob:
            raise GenericError(f"The command {name} does not support OOB")
        args = request.arguments
        app.schema.check_arguments(name, args)
        kwargs = {key.replace("-", "_"): value for key, value in args.items()} if args else {}
        if entry.is_async:
            async with app.lock:
                await _unless_stopping(ctx)
                # Shielded: see the module docstring.  A session that ends
                # meanwhile sees its cancellation at its next checkpoint,
                # when it would deliver the reply.
                with trio.CancelScope(shield=True):
                    result: Any = await entry.func(ctx, **kwargs)
        elif app.lock.locked():
            # A coroutine command is suspended mid-way: wait for it, as
            # QEMU's dispatcher never starts a command while one runs.
            async with app.lock:
                await _unless_stopping(ctx)
                result = entry.func(ctx, **kwargs)
        else:
            await _unless_stopping(ctx)
            result = entry.func(ctx, **kwargs)
    except CommandError as err:
        return session.error(request.id, err)
    except Exception as exc:
        log.exception("command %s failed unexpectedly", name)
        return session.error(
            request.id, GenericError(f"internal error in qmpd while running {name}: {exc}")
        )
    if result is None:
        result = {}
    if app.strict:
        app.schema.check_return(name, result)
    return session.reply(request.id, result)


__all__ = ["execute"]
