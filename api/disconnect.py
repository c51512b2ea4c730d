"""Cancel the work of a request whose client has gone away.

A client that closes its connection (a browser tab closed, a map click superseded, a proxy timing out) no
longer wants its answer. Without this, its handler runs on: it keeps its place in the encoder queue, fetches
tiles and runs an encoder pass nobody reads. `CancelOnDisconnect` runs the app in a task of its own and
listens to the ASGI `receive` channel beside it; when the server reports `http.disconnect` before the answer
has been sent, the task is cancelled. Cancellation reaches whatever the handler awaits: a wait in the encoder
queue gives its place up, tile requests stop, a shared embedding computation stops once its last caller is
gone (`samgis.engine.cache`). Work already running on a thread (an encoder pass, a decode) finishes there.

It is the only reader of `receive`: it hands the body to the app as it arrives, then the disconnect.
"""

from __future__ import annotations

import asyncio
import logging

from api.request_id import request_id_of

log = logging.getLogger("samgis.api")


class CancelOnDisconnect:
    def __init__(self, app):
        self.app = app
        self.cancelled = 0  # requests cancelled because their client went away (tests, /v1/models)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        inbox: asyncio.Queue = asyncio.Queue()
        done = False  # the answer has been sent in full

        async def app_receive():
            return await inbox.get()

        async def tracking_send(message):
            nonlocal done
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                done = True

        handler = asyncio.ensure_future(self.app(scope, app_receive, tracking_send))

        async def listen():
            while True:
                message = await receive()
                await inbox.put(message)
                if message["type"] == "http.disconnect":
                    if not done and not handler.done():
                        self.cancelled += 1
                        log.info("[%s] client went away: cancelling %s %s", request_id_of(scope),
                                 scope.get("method"), scope.get("path"))
                        handler.cancel()
                    return

        listener = asyncio.ensure_future(listen())
        try:
            await handler
        except asyncio.CancelledError:
            if handler.cancelled() and not listener.cancelled() and listener.done():
                return  # cancelled here because the client left: nobody to answer
            raise
        finally:
            listener.cancel()
            if not handler.done():  # this task itself was cancelled (server shutting down)
                handler.cancel()
