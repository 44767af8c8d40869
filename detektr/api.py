"""`detektr api`: the control API (FastAPI) and the cluster-wide `/metrics`, one scrape target for the cluster.

Reads are open unless `DETEKTR_API__PROTECT_READS`; every mutation needs
`Authorization: Bearer $DETEKTR_API_TOKEN`, and with no token configured every mutation is
refused. A request the API cannot take gets a 4xx with a JSON `detail`; a server that does not
answer, a 503. OpenAPI at `/docs` and `/openapi.json`.
"""

from __future__ import annotations

import hmac
import logging
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis
from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from . import __version__
from .cluster_metrics import ClusterCollector, RateSampler, read_cluster
from .config import Settings
from .external import NAME_PATTERN, WORKER_PREFIX, RegisteredProcessor, register, unregister
from .producer import FrameProducer
from .registry import LiveProcessor, live_processors, queue_depths, read_heartbeats
from .status import collect_status
from .uploads import UploadOptions, UploadRefused, body_limit, image_from_form, read_capped, upload_frame

log = logging.getLogger(__name__)

_bearer = HTTPBearer(auto_error=False, description="DETEKTR_API_TOKEN")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
_CAPABILITY = r"^[A-Za-z0-9_.\-]{1,64}$"


def token_matches(supplied: str, expected: str) -> bool:
    """Whether the supplied token is the configured one, compared in constant time."""
    return hmac.compare_digest(supplied.encode("utf-8", "surrogateescape"), expected.encode("utf-8"))


def check_token(settings: Settings, credentials: HTTPAuthorizationCredentials | None, what: str) -> None:
    """Let the request through with the right bearer token; 403 when none is configured, 401 when it is wrong."""
    if settings.api_token is None:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"{what} refused: no DETEKTR_API_TOKEN is configured")
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, f"{what} needs Authorization: Bearer <token>",
                            headers={"WWW-Authenticate": "Bearer"})
    if not token_matches(credentials.credentials, settings.api_token.get_secret_value()):
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, "wrong token", headers={"WWW-Authenticate": "Bearer"})


def processor_view(proc: LiveProcessor, depth: int | None = None) -> dict[str, Any]:
    """A live processor as the API shows it."""
    registered = any(worker.startswith(WORKER_PREFIX) for worker in proc.workers)
    return {"name": proc.name, "capabilities": list(proc.capabilities), "capacity": proc.capacity,
            "queue": proc.queue, "queue_depth": depth, "result_stream": proc.result_stream, "routing": proc.routing,
            "overload": proc.overload, "gated_by": proc.gated_by, "batch_size": proc.batch_size,
            "workers": [w for w in proc.workers if not w.startswith(WORKER_PREFIX)], "registered": registered}


def frigate_stats(cameras: dict[str, dict[str, float]], speeds: dict[str, float], snapshot: Any,
                  uptime_s: float) -> dict[str, Any]:
    """The cluster's figures in the shape of Frigate's stats: cameras, detectors, service, and the totals."""
    names = sorted(set(snapshot.cameras) | set(cameras))
    zero = {"camera_fps": 0.0, "process_fps": 0.0, "skipped_fps": 0.0, "detection_fps": 0.0}
    per_camera = {name: {**zero, **cameras.get(name, {})} for name in names}
    detectors = {name: {"inference_speed": speeds.get(name, 0.0), "workers": proc["workers"],
                        "capacity": proc["capacity"], "queue_depth": proc["queue_depth"],
                        "processed": proc["counters"]["processed"]}
                 for name, proc in snapshot.processors.items()}
    totals = {figure: round(sum((c[figure] for c in per_camera.values()), 0.0), 2) for figure in zero}
    return {"cameras": per_camera, "detectors": detectors, **totals,
            "service": {"uptime": int(uptime_s), "version": __version__, "last_updated": int(time.time())}}


def create_app(settings: Settings, client: redis.Redis | None = None, sample: bool = True) -> FastAPI:
    """The API for the cluster that `settings` names (`sample`: keep frames/s figures on a thread)."""
    from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

    client = client or redis.Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=10)
    sampler = RateSampler(client)
    scrape_registry = CollectorRegistry(auto_describe=False)
    scrape_registry.register(ClusterCollector(client, settings, sampler))
    started = time.monotonic()

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> Any:
        if sample:
            sampler.start()
        yield
        sampler.stop()

    app = FastAPI(title="detektr", version=__version__, lifespan=lifespan,
                  description="Control API of a detektr cluster: processors, status, Frigate-style stats, frame "
                  "uploads, and the cluster-wide Prometheus /metrics.")

    def readable(credentials: Credentials) -> None:
        if settings.api.protect_reads:
            check_token(settings, credentials, "reading")

    def mutable(credentials: Credentials) -> None:
        check_token(settings, credentials, "this change")

    reads = [Depends(readable)]
    writes = [Depends(mutable)]

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_: Request, exc: StarletteHTTPException) -> JSONResponse:
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [{"loc": [str(part) for part in e.get("loc", ())], "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in exc.errors()]  # never echo the input: it may be binary
        return JSONResponse({"detail": errors}, 422)

    @app.exception_handler(UploadRefused)
    async def refused(_: Request, exc: UploadRefused) -> JSONResponse:
        return JSONResponse({"detail": exc.reason}, exc.status)

    @app.exception_handler(redis.RedisError)
    async def server_away(_: Request, exc: redis.RedisError) -> JSONResponse:
        log.warning("request failed on the server: %s", exc)
        return JSONResponse({"detail": f"the Redis server did not answer ({type(exc).__name__})"}, 503)

    @app.get("/health", summary="Whether the API runs and reaches the server")
    def health() -> JSONResponse:
        try:
            client.ping()
        except redis.RedisError as exc:
            return JSONResponse({"status": "unavailable", "server": str(exc)}, 503)
        return JSONResponse({"status": "ok", "version": __version__})

    @app.get("/metrics", dependencies=reads, summary="Cluster-wide Prometheus figures (docs/metrics.md)",
             response_class=Response)
    def metrics() -> Response:
        return Response(generate_latest(scrape_registry), media_type=CONTENT_TYPE_LATEST)

    def live() -> dict[str, LiveProcessor]:
        return live_processors(client, settings.worker.heartbeat_ttl_s)

    def views(processors: dict[str, LiveProcessor]) -> list[dict[str, Any]]:
        depths = queue_depths(client, {p.queue for p in processors.values()})
        return [processor_view(p, depths.get(p.queue, 0)) for _, p in sorted(processors.items())]

    @app.get("/api/v1/processors", dependencies=reads, summary="Live processors (workers and registered ones)")
    def list_processors() -> dict[str, Any]:
        return {"processors": views(live())}

    @app.get("/api/v1/processors/search", dependencies=reads, summary="Live processors offering a capability")
    def search_processors(capability: Annotated[str, Query(pattern=_CAPABILITY)]) -> dict[str, Any]:
        found = {name: p for name, p in live().items() if capability in p.capabilities}
        return {"capability": capability, "processors": views(found)}

    @app.get("/api/v1/processors/{name}", dependencies=reads, summary="One live processor")
    def get_processor(name: Annotated[str, Path(pattern=NAME_PATTERN)]) -> dict[str, Any]:
        proc = live().get(name)
        if proc is None:
            raise HTTPException(404, f"no live processor {name!r}")
        return views({name: proc})[0]

    @app.post("/api/v1/processors/register", dependencies=writes, status_code=201,
              summary="Register a processor that runs outside this code base and consumes its queue")
    def register_processor(processor: RegisteredProcessor, response: Response) -> dict[str, Any]:
        served_by = sorted(beat["hostname"] for beat in read_heartbeats(client, settings.worker.heartbeat_ttl_s)
                           if any(p.get("name") == processor.name for p in beat.get("processors", ())))
        if served_by:
            raise HTTPException(409, f"processor {processor.name!r} is served by live workers ({', '.join(served_by)})")
        renewed = processor.name in live()
        record = register(client, processor)
        if renewed:
            response.status_code = 200
        log.info("processor %s registered (capacity %d)", processor.name, processor.capacity)
        return {"registered": record["processor"], "expires_at": record["expires_at"], "renewed": renewed}

    @app.delete("/api/v1/processors/{name}", dependencies=writes, summary="Withdraw a registered processor")
    def unregister_processor(name: Annotated[str, Path(pattern=NAME_PATTERN)]) -> dict[str, Any]:
        if not unregister(client, name):
            raise HTTPException(404, f"no registered processor {name!r} (workers' processors stop with their workers)")
        log.info("processor %s unregistered", name)
        return {"unregistered": name}

    @app.get("/api/v1/status", dependencies=reads, summary="What `detektr status --json` shows")
    def cluster_status() -> dict[str, Any]:
        return collect_status(client, settings)

    @app.get("/api/v1/stats", dependencies=reads, summary="Frigate-style stats: per camera fps, detectors, service")
    def stats() -> dict[str, Any]:
        return frigate_stats(sampler.camera_rates(), sampler.inference_speeds(), read_cluster(client, settings),
                             time.monotonic() - started)

    producer = FrameProducer(client, settings.input_stream, maxlen=settings.input_maxlen,
                             frame_ttl_s=settings.frames.ttl_s)

    @app.post("/api/v1/frames", dependencies=writes, status_code=202,
              summary="Upload an image as a frame (raw body, or a multipart form with one file)",
              openapi_extra={"requestBody": {"required": True, "content": {
                  "image/jpeg": {"schema": {"type": "string", "format": "binary"}},
                  "image/png": {"schema": {"type": "string", "format": "binary"}},
                  "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
                  "multipart/form-data": {"schema": {"type": "object", "properties": {
                      "file": {"type": "string", "format": "binary"}}}}}}})
    async def upload(request: Request, options: Annotated[UploadOptions, Depends(upload_options)]) -> dict[str, Any]:
        body = await read_capped(request.stream(), request.headers.get("content-length"), body_limit(settings))
        if request.headers.get("content-type", "").lower().startswith("multipart/"):
            body = await image_from_form(request.headers, body)
        return await run_in_threadpool(upload_frame, producer, settings, body, options)

    return app


def upload_options(
    camera: Annotated[str, Query(min_length=1, max_length=128, description="The frame's camera_id.")],
    capabilities: Annotated[str | None, Query(max_length=4096, description="Comma-separated.")] = None,
    priority: Annotated[int, Query(ge=0, le=9)] = 0,
    frame_id: Annotated[str | None, Query(max_length=200, description="Default: a fresh one.")] = None,
    timestamp: Annotated[str | None, Query(max_length=64, description="Capture time; default: now.")] = None,
    format: Annotated[str | None, Query(max_length=8, description="jpeg, png or raw; default: from the bytes.")] = None,
    width: Annotated[int | None, Query(ge=1, le=65_535, description="For raw.")] = None,
    height: Annotated[int | None, Query(ge=1, le=65_535, description="For raw.")] = None,
    metadata: Annotated[str | None, Query(max_length=65_536, description="A JSON object.")] = None,
) -> UploadOptions:
    """The query parameters of `POST /api/v1/frames`."""
    return UploadOptions(camera, capabilities, priority, frame_id, timestamp, format, width, height, metadata)


def serve(settings: Settings, host: str | None = None, port: int | None = None, log_level: str = "info") -> None:
    """Run the API with uvicorn until SIGTERM or Ctrl-C."""
    import uvicorn

    uvicorn.run(create_app(settings), host=host or settings.api.host, port=port or settings.api.port,
                log_level=log_level.lower(), server_header=False)
