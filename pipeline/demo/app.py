"""The demo page over HTTP (FastAPI, which MLflow's own servers already install): the page and
its script and styles from ``static/`` (nothing is fetched from elsewhere), and a JSON API the
page calls. Every error is answered as ``{"error": "one line"}``; the server keeps running."""
from __future__ import annotations

import threading
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel

from . import Demo, DemoError

STATIC = Path(__file__).with_name("static")


class Drawing(BaseModel):
    png: str  # base64 PNG or a data: URL of one, as a canvas gives


def build_app(demo: Demo) -> FastAPI:
    app = FastAPI(title="InfoGAN demo", docs_url=None, redoc_url=None, openapi_url=None)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    lock = threading.Lock()  # one model call at a time: the cores go to it, not to a queue of threads

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/info")
    def info():
        return demo.info()

    @app.get("/api/styles")
    def styles(digit: int, n: int = 16, seed: int = 0, codes: str = ""):
        try:
            values = [float(v) for v in codes.split(",")] if codes else []
        except ValueError:
            raise DemoError(f"codes must be numbers separated by commas, not {codes!r}") from None
        with lock:
            return {"digit": digit, "seed": seed, "images": demo.styles(digit, n, seed, values)}

    @app.get("/api/lab-demo")
    def lab_demo(seed: int = 0):
        with lock:
            return {"seed": seed, **demo.lab_demo(seed)}

    @app.post("/api/read")
    def read(drawing: Drawing):
        with lock:
            return demo.read(drawing.png)

    @app.exception_handler(DemoError)
    def refused(request: Request, error: DemoError):
        return JSONResponse({"error": str(error)}, status_code=400)

    @app.exception_handler(RequestValidationError)
    def malformed(request: Request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()) if part not in ("query", "body"))
        return JSONResponse({"error": f"{where or 'the request'}: {first.get('msg', 'not understood')}"},
                            status_code=400)

    @app.exception_handler(Exception)
    def failed(request: Request, error: Exception):
        line = (str(error).splitlines() or [type(error).__name__])[0]
        return JSONResponse({"error": f"the demo could not answer: {line}"}, status_code=500)

    return app
