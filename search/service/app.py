"""The HTTP API and the web page: FastAPI, served by uvicorn (see :mod:`search.service.server`).

Every ``/api`` call needs ``Authorization: Bearer TOKEN``. The page at ``/`` and its files under
``/ui/`` hold no data and need none; the page asks for the token once and keeps it in the
browser's localStorage. OpenAPI docs: ``/docs`` and ``/openapi.json``.

Status calls are answered from the status cache (:class:`search.service.studies.StatusCache`),
never from the storage on the request path. Studies beyond the concurrent-run limit wait in a
queue (:mod:`search.service.runs`); exports are background jobs (:mod:`search.service.exports`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Annotated, Any, Literal

import swagger_ui_bundle
from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles

from search.errors import EdgetuneError, SpecError, StudyError
from search.service.config import (
    ServiceConfig,
    check_spec_allowed,
    check_study_name,
    network_spec_text,
)
from search.service.exports import ExportJob, Exports
from search.service.files import redact, redact_text, write_atomic
from search.service.gate import token_matches
from search.service.runs import LimitError, Limits, Runs
from search.service.studies import StatusCache, Studies
from search.spec import parse_spec, spec_to_json

WEB = Path(__file__).resolve().parents[1] / "web"
Trial = Annotated[int | None, Query(ge=0, le=10**9, description="trial number (default: best)")]
Trials = Annotated[int | None, Query(ge=1, le=100_000)]


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


def create_app(cfg: ServiceConfig, limits: Limits | None = None) -> FastAPI:
    runs = Runs(cfg, limits)
    index = Studies(cfg.storage, runs)
    status = StatusCache(index)
    exports = Exports(runs)
    submit_lock = asyncio.Lock()
    memo: dict[str, Any] = {}

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async def reap() -> None:
            while True:
                await asyncio.sleep(0.5)
                try:
                    runs.poll_all()
                    if runs.schedule():  # here, in the event-loop thread: a queued run forks
                        status.kick()
                    exports.poll()
                except Exception as exc:  # keep reaping; a bad record must not stop the queue
                    message = redact_text(f"{type(exc).__name__}: {exc}"[:300], (cfg.storage,))
                    print(f"edgetune service: reaping runs failed: {message}", file=sys.stderr)

        status.start()
        task = asyncio.create_task(reap())
        try:
            yield
        finally:
            task.cancel()
            await run_in_threadpool(status.stop)
            await run_in_threadpool(exports.shutdown)
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
        if not token_matches(cfg, given):
            raise HTTPException(403, "wrong token; ask the operator for the service's token")

    api = APIRouter(prefix="/api", dependencies=[Depends(require_token)])

    @app.exception_handler(EdgetuneError)
    async def edgetune_error(request: Request, exc: EdgetuneError) -> JSONResponse:
        message = redact_text(str(exc), (cfg.storage,))
        if isinstance(exc, LimitError):
            return JSONResponse({"detail": message}, 429, headers={"Retry-After": "10"})
        code = 422 if isinstance(exc, SpecError) else 404 if "no study" in message else 409
        return JSONResponse({"detail": message}, status_code=code)

    @api.get("/info")
    def info() -> dict[str, Any]:
        lim = runs.limits
        return {
            "storage": redact(cfg.storage),
            "dashboard_port": cfg.dashboard_port,
            "allow_modules": list(cfg.allow_modules),
            "data_root": bool(cfg.data_root),
            "max_body_bytes": cfg.max_body_bytes,
            "limits": {"max_runs": lim.max_runs, "max_queued": lim.max_queued,
                       "max_exports": lim.max_exports, "export_timeout_s": lim.export_timeout_s},
        }  # fmt: skip

    @api.get("/targets")
    def list_targets() -> dict[str, Any]:
        from targets import describe_targets

        if "targets" not in memo:
            memo["targets"] = describe_targets()
        return {"targets": memo["targets"]}

    @api.get("/studies")
    async def list_studies() -> Response:
        """Every study with its state (queued, running, ...), progress and best candidate."""
        body = status.peek_listing() or await run_in_threadpool(status.listing)
        return Response(body, media_type="application/json")

    @api.get("/studies/{name}")
    async def show_study(name: Name) -> Response:
        """The study's summary (teacher, budgets, best or Pareto candidates), trials and run."""
        body = status.peek_detail(name) or await run_in_threadpool(status.detail, name)
        return Response(body, media_type="application/json")

    @api.post("/studies", status_code=201)
    async def submit(
        request: Request,
        study: Annotated[str | None, Query(description="study name (default: the spec's)")] = None,
        trials: Trials = None,
    ) -> JSONResponse:
        """Submit a spec as YAML or JSON (by Content-Type); runs `edgetune search` on it, at
        once or when a slot frees (state `queued`)."""
        as_json = "json" in request.headers.get("content-type", "")
        # ALLOWLIST HOOK (submit): network_spec_text ends with config.check_spec_allowed
        spec = network_spec_text(
            await request.body(), cfg, as_json=as_json, study=study, trials=trials
        )
        name = spec.study_name
        async with submit_lock:
            if runs.active(name) or await run_in_threadpool(index.exists, name):
                raise StudyError(
                    f"study {name!r} already exists; resume it with POST /api/studies/{name}/resume, "
                    "or submit with ?study=NEW_NAME"
                )
            runs.check_room()
            stored = spec_to_json(spec)
            stored["search"]["storage"] = None  # the service's, from the environment
            path = runs.specs / f"{name}.json"
            write_atomic(path, json.dumps(stored, indent=1))
            run = runs.request(name, "search", [str(path), "--study", name])
        status.kick()
        url = f"/api/studies/{name}"
        return JSONResponse(
            {"study": name, "url": url, "state": runs.state(run), "pid": run.pid or None},
            status_code=201,
            headers={"Location": url},
        )

    @api.post("/studies/{name}/resume", status_code=202)
    async def resume(name: Name, trials: Trials = None) -> dict[str, Any]:
        """Continue the study, as `edgetune resume NAME [--trials N]` (queued if no slot)."""
        async with submit_lock:
            if runs.active(name):
                raise StudyError(f"study {name!r} is queued or running already; stop it first")
            spec_file = runs.specs / f"{name}.json"
            if not await run_in_threadpool(index.exists, name) and spec_file.exists():
                # stopped before the study was created (queued, or while the teacher was
                # prepared): start over
                # ALLOWLIST HOOK (resume): the spec about to run is checked again, as at submit
                check_spec_allowed(
                    parse_spec(json.loads(spec_file.read_text())), cfg, trials=trials
                )
                extra = ["--trials", str(trials)] if trials else []
                op, args = "search", [str(spec_file), "--study", name, *extra]
            else:
                study, spec = await run_in_threadpool(index.open, name)
                # ALLOWLIST HOOK (resume): the spec stored in the study, which may not have
                # come through the network (a study made with `edgetune search`)
                check_spec_allowed(spec, cfg, trials=trials)
                if trials is None:
                    from search.driver import trained_count
                    from search.lifecycle import ensure_trials_left

                    ensure_trials_left(trained_count(study), spec.search.trials, name)
                op, args = "resume", [name] + (["--trials", str(trials)] if trials else [])
            run = runs.request(name, op, args)
        status.kick()
        return {
            "study": name,
            "url": f"/api/studies/{name}",
            "state": runs.state(run),
            "pid": run.pid or None,
        }

    @api.post("/studies/{name}/stop", status_code=202)
    def stop(name: Name) -> dict[str, Any]:
        """SIGTERM the run (trials running go back to Optuna's queue; everything told is kept),
        or take a queued study out of the run queue."""
        run = runs.stop(name)
        if run is None:
            raise StudyError(
                f"study {name!r} is not running; resume it with POST /api/studies/{name}/resume"
            )
        status.kick()
        return {"study": name, "state": "stopped" if run.pid == 0 else "stopping"}

    def study_id(name: str) -> int:
        try:
            return index.study_id(name)
        except KeyError:
            raise StudyError(f"no study {name!r}; GET /api/studies lists them") from None

    async def export_job(name: str, trial: int | None) -> ExportJob:
        if trial is None:
            cached = status.peek_detail(name)
            body = cached if cached is not None else await run_in_threadpool(status.detail, name)
            best = json.loads(body).get("best")
            if not best:
                raise StudyError(
                    f"study {name!r} has no feasible trial yet; wait, or pass ?trial=N"
                )
            trial = int(best["trial"])
        sid = await run_in_threadpool(study_id, name)
        return exports.request(name, sid, trial)  # here, in the event-loop thread: it forks

    async def zipped(job: ExportJob) -> Response:
        return Response(
            await run_in_threadpool(exports.zip_bytes, job),
            media_type="application/zip",
            headers={
                "Content-Disposition": f'attachment; filename="{job.study}-trial{job.trial}.zip"'
            },
        )

    @api.post("/studies/{name}/export", status_code=202)
    async def start_export(name: Name, trial: Trial = None) -> JSONResponse:
        """Start exporting the best feasible trial (or `trial`): `edgetune export` in the
        background. 202 with the job's URL (200 if that export is done already); 409 while
        another trial of the study exports; 429 when the service's exports are all busy."""
        job = await export_job(name, trial)
        code = 200 if job.state == "done" else 202
        return JSONResponse(job.as_dict(), status_code=code, headers={"Location": job.url})

    @api.get(
        "/studies/{name}/export/{trial}",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}, 202: {}, 409: {}},
    )
    async def get_export(name: Name, trial: int) -> Response:
        """An export job: 202 while it runs, the zip (model.onnx, report.md, summary.json and
        the figures front.png and policy.png) when it is done, 409 with the one-line error when
        it failed."""
        job = await finished(name, trial)
        return job if isinstance(job, Response) else await zipped(job)

    @api.get(
        "/studies/{name}/export/{trial}/{figure}.png",
        response_class=Response,
        responses={200: {"content": {"image/png": {}}}, 202: {}, 409: {}},
    )
    async def get_figure(
        name: Name, trial: int, figure: Literal["front", "policy"]
    ) -> Response:
        """A figure of a finished export: `front` (validation accuracy against latency of every
        trained trial) or `policy` (bits and kept channels per layer); 202 and 409 as the
        export's own URL."""
        job = await finished(name, trial)
        if isinstance(job, Response):
            return job
        return FileResponse(job.out / f"{figure}.png", media_type="image/png")

    async def finished(name: str, trial: int) -> ExportJob | Response:
        """The done export job of a trial, or the response that says why there is none."""
        job = exports.find(name, await run_in_threadpool(study_id, name), trial)
        if job is None:
            raise HTTPException(
                404,
                f"no export of trial {trial} of study {name!r}; start one with "
                f"POST /api/studies/{name}/export?trial={trial}",
            )
        if job.state == "running":
            return JSONResponse(job.as_dict(), status_code=202)
        if job.state == "failed":
            detail = f"export of trial {trial} failed: {job.error}"
            return JSONResponse({**job.as_dict(), "detail": detail}, status_code=409)
        return job

    @api.get(
        "/studies/{name}/export",
        response_class=Response,
        responses={200: {"content": {"application/zip": {}}}, 202: {}},
        deprecated=True,
    )
    async def export_compat(name: Name, trial: Trial = None) -> Response:
        """Compatibility: the zip if that export is done, else starts it (as POST) and
        answers 202 with the job's URL."""
        job = await export_job(name, trial)
        if job.state == "done":
            return await zipped(job)
        return JSONResponse(job.as_dict(), status_code=202, headers={"Location": job.url})

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
