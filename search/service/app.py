"""The HTTP API and the web page: FastAPI, served by uvicorn (see :mod:`search.service.server`).

Every ``/api`` call needs ``Authorization: Bearer TOKEN``. The page at ``/`` and its files under
``/ui/`` hold no data and need none; the page asks for the token once and keeps it in the
browser's localStorage. OpenAPI docs: ``/docs`` and ``/openapi.json``.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import subprocess
import sys
import threading
import zipfile
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any

import swagger_ui_bundle
import yaml
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from search.errors import EdgetuneError, SpecError, StudyError
from search.service.config import ServiceConfig, check_study_name, network_spec
from search.service.runs import Runs
from search.service.studies import Studies, redact
from search.spec import spec_to_json

WEB = Path(__file__).resolve().parents[1] / "web"
EXPORT_TIMEOUT_S = 900


def _bearer(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    scheme, _, token = header.partition(" ")
    return token.strip() if scheme.lower() == "bearer" and token else None


async def _study_name(name: str) -> str:
    try:
        return check_study_name(name)
    except SpecError as exc:
        raise HTTPException(400, str(exc)) from None


Name = Annotated[str, Depends(_study_name)]


def create_app(cfg: ServiceConfig) -> FastAPI:
    runs = Runs(cfg)
    index = Studies(cfg.storage, runs)
    export_locks: dict[str, threading.Lock] = {}
    submit_lock = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def reap() -> None:
            while True:
                await asyncio.sleep(2.0)
                runs.poll_all()

        task = asyncio.create_task(reap())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(runs.shutdown)

    app = FastAPI(
        title="edgetune",
        summary="Submit constraint specs; watch, stop, resume and export compression studies.",
        lifespan=lifespan,
        docs_url=None,  # served below from the swagger-ui-bundle package: no network assets
        redoc_url=None,
    )
    app.state.cfg, app.state.runs, app.state.studies = cfg, runs, index

    async def require_token(request: Request) -> None:
        given = _bearer(request)
        if given is None:
            raise HTTPException(
                401,
                "missing token: send the header 'Authorization: Bearer TOKEN' (the operator "
                "has it: EDGETUNE_TOKEN, --token-file, or $EDGETUNE_HOME/service/token)",
                headers={"WWW-Authenticate": "Bearer"},
            )
        if not cfg.token_ok(given):
            raise HTTPException(403, "wrong token; ask the operator for the service's token")

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    @app.exception_handler(EdgetuneError)
    async def edgetune_error(request: Request, exc: EdgetuneError) -> JSONResponse:
        code = 422 if isinstance(exc, SpecError) else 404 if "no study" in str(exc) else 409
        return JSONResponse({"detail": str(exc)}, status_code=code)

    @api.get("/info")
    def info() -> dict[str, Any]:
        return {
            "storage": redact(cfg.storage),
            "dashboard_port": cfg.dashboard_port,
            "allow_modules": list(cfg.allow_modules),
            "data_root": bool(cfg.data_root),
            "max_body_bytes": cfg.max_body_bytes,
        }

    @api.get("/targets")
    def list_targets() -> dict[str, Any]:
        from targets import describe_targets

        return {"targets": index.cache.get("targets", describe_targets)}

    def cached_json(key: str) -> Response | None:
        """Cached, already serialized: 200 clients polling cost one serialization a second."""
        body = index.cache.fresh(key)
        return None if body is None else Response(body, media_type="application/json")

    @api.get("/studies")
    async def list_studies() -> Response:
        """Every study with its state, progress and best candidate."""
        hit = cached_json("json:list")
        if hit is not None:
            return hit
        body = await run_in_threadpool(
            index.cache.get, "json:list", lambda: json.dumps({"studies": index.listing()}).encode()
        )
        return Response(body, media_type="application/json")

    @api.get("/studies/{name}")
    async def show_study(name: Name) -> Response:
        """The study's summary (teacher, budgets, best or Pareto candidates), trials and run."""
        key = f"json:detail:{name}"
        hit = cached_json(key)
        if hit is not None:
            return hit
        body = await run_in_threadpool(
            index.cache.get, key, lambda: json.dumps(index.overview(name), default=str).encode()
        )
        return Response(body, media_type="application/json")

    @api.post("/studies", status_code=201)
    async def submit(
        request: Request,
        study: Annotated[str | None, Query(description="study name (default: the spec's)")] = None,
        trials: Annotated[int | None, Query(ge=1, le=100_000)] = None,
    ) -> JSONResponse:
        """Submit a spec as YAML or JSON (by Content-Type); starts `edgetune search` on it."""
        body = (await request.body()).decode("utf-8", errors="replace")
        if "json" in request.headers.get("content-type", ""):
            try:
                raw = json.loads(body)
            except json.JSONDecodeError as exc:
                raise SpecError(f"spec: not valid JSON ({exc.msg} at line {exc.lineno})") from None
        else:
            try:
                raw = yaml.safe_load(body)
            except yaml.YAMLError as exc:
                mark = getattr(exc, "problem_mark", None)
                where = f" at line {mark.line + 1}" if mark else ""
                raise SpecError(f"spec: not valid YAML{where}; fix the syntax") from None
        spec = network_spec(raw, cfg, study=study, trials=trials)
        name = spec.study_name
        async with submit_lock:
            if runs.active(name) or await run_in_threadpool(index.exists, name):
                raise StudyError(
                    f"study {name!r} already exists; resume it with POST /api/studies/{name}/resume, "
                    "or submit with ?study=NEW_NAME"
                )
            path = runs.specs / f"{name}.json"
            path.write_text(json.dumps(spec_to_json(spec), indent=1))
            run = runs.start(name, "search", [str(path), "--study", name])
        index.cache.clear()
        url = f"/api/studies/{name}"
        return JSONResponse(
            {"study": name, "url": url, "state": "running", "pid": run.pid},
            status_code=201,
            headers={"Location": url},
        )

    @api.post("/studies/{name}/resume", status_code=202)
    async def resume(
        name: Name, trials: Annotated[int | None, Query(ge=1, le=100_000)] = None
    ) -> dict[str, Any]:
        """Continue the study, as `edgetune resume NAME [--trials N]`."""
        async with submit_lock:
            if runs.active(name):
                raise StudyError(f"study {name!r} is running already; stop it first")
            spec_file = runs.specs / f"{name}.json"
            if not await run_in_threadpool(index.exists, name) and spec_file.exists():
                # stopped before the study was created (while the teacher was prepared): start over
                extra = ["--trials", str(trials)] if trials else []
                run = runs.start(name, "search", [str(spec_file), "--study", name, *extra])
            else:
                study, spec = await run_in_threadpool(index.open, name)
                if trials is None:
                    from search.driver import trained_count
                    from search.lifecycle import ensure_trials_left

                    ensure_trials_left(trained_count(study), spec.search.trials, name)
                args = [name] + (["--trials", str(trials)] if trials else [])
                run = runs.start(name, "resume", args)
        index.cache.clear()
        return {"study": name, "url": f"/api/studies/{name}", "state": "running", "pid": run.pid}

    @api.post("/studies/{name}/stop", status_code=202)
    def stop(name: Name) -> dict[str, Any]:
        """SIGTERM the run: trials running go back to the queue; everything told is kept."""
        if runs.stop(name) is None:
            raise StudyError(
                f"study {name!r} is not running; resume it with POST /api/studies/{name}/resume"
            )
        index.cache.clear()
        return {"study": name, "state": "stopping"}

    @api.get(
        "/studies/{name}/export",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}},
    )
    def export(name: Name, trial: int | None = None) -> Response:
        """The best feasible trial (or `trial`) as a zip: model.onnx, report.md, summary.json."""
        if trial is None:
            best = index.overview(name).get("best")
            if not best:
                raise StudyError(
                    f"study {name!r} has no feasible trial yet; wait, or pass ?trial=N"
                )
            trial = int(best["trial"])
        index.open(name)  # a clear error for a study edgetune did not make
        # per storage (runs.dir) and per study id, so a study made again under its name or in
        # another storage never gets an old export
        out = runs.dir / "exports" / f"{name}-{index.study_id(name)}" / f"trial-{trial}"
        with export_locks.setdefault(name, threading.Lock()):
            if not (out / "summary.json").exists():
                proc = subprocess.run(
                    [
                        sys.executable,
                        "-m",
                        "search.cli",
                        "export",
                        name,
                        "--out",
                        str(out),
                        "--storage",
                        cfg.storage,
                        "--trial",
                        str(trial),
                        "--json",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=EXPORT_TIMEOUT_S,
                    check=False,
                )
                if proc.returncode:
                    lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("edgetune:")]
                    raise StudyError(lines[-1] if lines else f"export failed: {proc.stderr[-300:]}")
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
            for f in ("model.onnx", "report.md", "summary.json"):
                zf.write(out / f, f"{name}-trial{trial}/{f}")
        return Response(
            buf.getvalue(),
            media_type="application/zip",
            headers={"Content-Disposition": f'attachment; filename="{name}-trial{trial}.zip"'},
        )

    app.include_router(api)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(WEB / "index.html")

    app.mount("/ui", StaticFiles(directory=WEB), name="ui")
    app.mount(
        "/docs-assets", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-assets"
    )

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="edgetune API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )

    return app
