"""The dashboard's web application: JSON API, live server-sent events, and the single page.

What it is for: :func:`create_app` wraps a running
:class:`~privmeter.web.engine.DemoEngine` in a FastAPI application:

* ``GET /`` -- the single-page dashboard (``static/index.html``, vanilla JS);
* ``GET /static/plotly.min.js`` -- plotly.js from the installed ``plotly``
  wheel (no CDN; the page works offline);
* ``GET /api/overview`` and ``GET /api/stream`` (server-sent events: one
  ``overview`` event per published snapshot, i.e. per interval or control);
* ``GET /api/groups/{id}/totals?since=``, ``/api/events``, ``/api/bills``,
  ``/api/households/{id}``, ``/api/households/{id}/utility-view``,
  ``/api/privacy/{id}`` (see :mod:`privmeter.web.views`);
* ``POST /api/control/{pause,resume,step,speed,event,offline,cheat,underreport,probe}``.

Security: the demo binds to loopback by default and has no authentication
(it is a local demonstration, not an operator console); the ``Host`` header
is checked against loopback names so a web page elsewhere cannot drive it by
DNS rebinding.  Guarantee: every detail request runs on the engine thread,
so views are consistent; bad ids give 404, bad values 400.
"""

from __future__ import annotations

import asyncio
import functools
import json
from collections.abc import AsyncIterator, Callable
from importlib import resources
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.middleware.trustedhost import TrustedHostMiddleware
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field

from privmeter.errors import ConfigError, PrivmeterError
from privmeter.web import views
from privmeter.web.engine import DemoEngine

__all__ = ["DemoState", "create_app"]

DemoState = DemoEngine  # the state the app serves (the engine owns it)
PERIOD_ENDED = (
    "the simulated period has ended: the dashboard keeps its final state; restart privmeter demo "
    "(--days N for a longer run)"
)
CALL_TIMEOUT_S = 30.0
HEARTBEAT_S = 15.0


class SpeedBody(BaseModel):
    speed: float = Field(ge=1, le=100_000)


class GroupBody(BaseModel):
    group: str = Field(min_length=1, max_length=64)


class MeterBody(BaseModel):
    meter: str = Field(min_length=1, max_length=64)


class OfflineBody(MeterBody):
    offline: bool = True


@functools.cache
def _plotly_js() -> bytes:
    from plotly.offline import get_plotlyjs

    js: str = get_plotlyjs()
    return js.encode()


def _static_dir() -> str:
    return str(resources.files("privmeter.web") / "static")


def create_app(engine: DemoState, *, allowed_hosts: list[str] | None = None) -> FastAPI:
    """The dashboard application for a started ``engine``."""
    app = FastAPI(title="privmeter demo", version="1", docs_url="/api/docs", redoc_url=None)
    hosts = allowed_hosts or ["127.0.0.1", "localhost", "[::1]", "testserver"]
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=hosts)

    async def on_engine(fn: Callable[[], Any]) -> Any:
        try:
            return await asyncio.wait_for(asyncio.wrap_future(engine.call(fn)), CALL_TIMEOUT_S)
        except KeyError as exc:  # NotFound, or a dict's
            what = exc.args[0] if exc.args else ""
            raise HTTPException(404, f"unknown id {what!r}") from None
        except (ConfigError, ValueError) as exc:
            raise HTTPException(400, str(exc)) from None
        except PrivmeterError as exc:
            raise HTTPException(409, f"{type(exc).__name__}: {exc}") from None

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly_js() -> Response:
        return Response(
            _plotly_js(),
            media_type="application/javascript",
            headers={"Cache-Control": "public, max-age=86400"},
        )

    app.mount("/static", StaticFiles(directory=_static_dir()), name="static")

    @app.get("/", include_in_schema=False)
    def index() -> HTMLResponse:
        html = (resources.files("privmeter.web") / "static" / "index.html").read_text(
            encoding="utf-8"
        )
        return HTMLResponse(html, headers={"Cache-Control": "no-store"})

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> Response:
        return Response(status_code=204)

    @app.get("/api/overview")
    def overview() -> dict[str, Any]:
        return engine.overview

    @app.get("/api/groups/{group}/totals")
    async def totals(group: str, since: int = -1) -> dict[str, Any]:
        result: dict[str, Any] = await on_engine(
            lambda: views.group_totals(engine.operator_snapshot(), group, since)
        )
        return result

    @app.get("/api/events")
    async def events() -> dict[str, Any]:
        result: dict[str, Any] = await on_engine(lambda: views.events(engine.operator_snapshot()))
        return result

    @app.get("/api/bills")
    async def bills() -> dict[str, Any]:
        result: dict[str, Any] = await on_engine(lambda: views.bills(engine.operator_snapshot()))
        return result

    @app.get("/api/households/{meter}")
    async def household(meter: str) -> dict[str, Any]:
        result: dict[str, Any] = await on_engine(
            lambda: views.household(engine.household_snapshot(meter))
        )
        return result

    @app.get("/api/households/{meter}/utility-view")
    async def utility_view(meter: str) -> dict[str, Any]:
        result: dict[str, Any] = await on_engine(
            lambda: views.utility_view(engine.operator_snapshot([meter]), meter)
        )
        return result

    @app.get("/api/privacy/{meter}")
    async def privacy(meter: str) -> dict[str, Any]:
        result: dict[str, Any] = await on_engine(
            lambda: views.privacy(engine.household_snapshot(meter))
        )
        return result

    # -- controls --------------------------------------------------------------------------
    async def on_control(fn: Callable[[], Any]) -> Any:
        if engine.finished:  # no interval runs any more: a control would wait forever, pending
            raise HTTPException(409, PERIOD_ENDED)
        return await on_engine(fn)

    @app.post("/api/control/pause")
    async def pause() -> Any:
        return await on_control(lambda: engine.set_paused(True))

    @app.post("/api/control/resume")
    async def resume() -> Any:
        return await on_control(lambda: engine.set_paused(False))

    @app.post("/api/control/step")
    async def step() -> Any:
        return await on_control(engine.step_once)

    @app.post("/api/control/speed")
    async def speed(body: SpeedBody) -> Any:
        return await on_control(lambda: engine.set_speed(body.speed))

    @app.post("/api/control/event")
    async def event(body: GroupBody) -> Any:
        return await on_control(lambda: engine.faults.force_event(body.group))

    @app.post("/api/control/offline")
    async def offline(body: OfflineBody) -> Any:
        return await on_control(lambda: engine.faults.set_offline(body.meter, body.offline))

    @app.post("/api/control/cheat")
    async def cheat(body: MeterBody) -> Any:
        return await on_control(lambda: engine.faults.cheat_bill(body.meter))

    @app.post("/api/control/underreport")
    async def underreport(body: MeterBody) -> Any:
        return await on_control(lambda: engine.faults.underreport(body.meter))

    @app.post("/api/control/probe")
    async def probe(body: MeterBody) -> Any:
        return await on_control(lambda: engine.faults.probe(body.meter))

    # -- live updates ------------------------------------------------------------------------
    @app.get("/api/stream")
    async def stream(request: Request, limit: int = 0) -> StreamingResponse:
        """Server-sent events: ``overview`` on every new snapshot (``limit`` > 0: stop after that many)."""

        async def gen() -> AsyncIterator[bytes]:
            seen = -1
            sent = 0
            idle = 0.0
            yield b"retry: 2000\n\n"
            while True:
                if engine.version != seen:
                    seen = engine.version
                    data = json.dumps(engine.overview, separators=(",", ":"))
                    yield f"event: overview\nid: {seen}\ndata: {data}\n\n".encode()
                    sent += 1
                    idle = 0.0
                    if 0 < limit <= sent:
                        return
                    continue
                if engine.stopping or await request.is_disconnected():
                    return
                await asyncio.to_thread(engine.wait_version, seen, 0.5)
                idle += 0.5
                if idle >= HEARTBEAT_S:
                    idle = 0.0
                    yield b": keep-alive\n\n"

        return StreamingResponse(
            gen(),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"},
        )

    return app
