"""The web console under /console: operators sign in and manage their projects' credentials, jobs, runs and
segments in a browser. Pages are rendered on the server (Jinja2) from the same services the API's routes call."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from dataexport.api.context import AppContext, failure_throttle

STATIC = Path(__file__).parent / "static"


def install_console(app: FastAPI, ctx: AppContext) -> None:
    from dataexport.console import jobs, projects, segments, signin

    # Its own table of failures (keyed by e-mail), with the token endpoint's rules.
    app.state.console_sign_in_throttle = failure_throttle(ctx.settings)
    for module in (signin, projects, jobs, segments):
        app.include_router(module.router)
    app.mount("/console/static", StaticFiles(directory=STATIC), name="console-static")
