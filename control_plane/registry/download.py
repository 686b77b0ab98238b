"""Artifact downloads whose Range errors carry the shared JSON error body."""

from __future__ import annotations

import os

from starlette.datastructures import Headers
from starlette.responses import FileResponse, JSONResponse, MalformedRangeHeader, RangeNotSatisfiable
from starlette.types import Receive, Scope, Send

from control_plane.errors import error_body


class ArtifactFileResponse(FileResponse):
    """A FileResponse that answers a malformed Range (400) or one past the end (416) with the JSON error body."""

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        headers = Headers(scope=scope)
        http_range, if_range = headers.get("range"), headers.get("if-range")
        # Starlette honours Range only on GET/HEAD and only while If-Range still matches; validate the same cases.
        if http_range is not None and scope["method"].upper() in ("GET", "HEAD"):
            if self.stat_result is None:
                self.stat_result = os.stat(self.path)
                self.set_stat_headers(self.stat_result)
            if if_range is None or self._should_use_range(if_range):
                try:
                    self._parse_range_header(http_range, self.stat_result.st_size)
                except MalformedRangeHeader as exc:
                    response = JSONResponse(error_body("bad_range", exc.content), 400)
                    await response(scope, receive, send)
                    return
                except RangeNotSatisfiable as exc:
                    response = JSONResponse(
                        error_body("range_not_satisfiable", f"the range lies outside the {exc.max_size}-byte artifact",
                                   {"size": exc.max_size}),
                        416, headers={"Content-Range": f"bytes */{exc.max_size}"})
                    await response(scope, receive, send)
                    return
        await super().__call__(scope, receive, send)
