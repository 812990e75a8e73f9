"""The HTTP server behind ``fusionjax serve RUN_DIR``: a trained run answering over HTTP.

Built on Starlette and uvicorn, a maintained ASGI toolkit and server, with python-multipart
parsing file uploads.  Nothing beyond what serving one model needs: no web framework, no
validation library, no templates.

::

    GET  /          the page fusionjax/web/index.html (404 where the package has none)
    GET  /health    {"status": "ok"}
    GET  /info      the run's path, its modalities and their input kind ("file" or "text"),
                    label names, answer kind, batching, compilations so far, component
                    types (config key -> qualified name) and versions (run.json)
    POST /predict   multipart/form-data: a file part per file modality, a form field per
                    text modality, optionally ``top``; or application/json with text
                    modalities only: {"text": "what is the sum", "top": 3}.  Any subset of
                    the modalities; the answer is Answer.to_json(), as `predict --json`.

Each request's inputs are read (decoded, checked) on their own, exactly as the CLI reads
them (an upload goes to a temporary file that keeps its suffix, and is deleted after), so
a bad input fails alone: a 4xx ``{"error": {"type", "message"}}`` whose message is the
CLI's.  Read examples wait up to ``batch_window_ms`` (or until ``max_batch`` of them are
waiting) and are answered together by one :meth:`Predictor.answer_many` call, on a single
worker thread off the event loop.  The predictor is compiled for every batch size it pads
to, forward pass and answer step, before the first request (:meth:`Predictor.warm_up`):
nothing compiles while serving.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import os
import re
import signal
import socket
import tempfile
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Route

from fusionjax.errors import ConfigError, FusionJaxError, capped, shown

if TYPE_CHECKING:
    from fusionjax.answers import Answer
    from fusionjax.prediction import Example, Predictor
    from fusionjax.rundir import Run

MAX_UPLOAD_BYTES = 10 * 2 ** 20  # the most bytes of one request body (all its files together)
PAGE = Path(__file__).parent / "web" / "index.html"
TOP = "top"  # the request field that is not a modality: how many classes to list
ENDPOINTS = "GET /, GET /health, GET /info, POST /predict"
_SUFFIX = re.compile(r"\.[A-Za-z0-9]{1,10}")
# an oversized body is still read (and dropped) up to this many times the limit, so that a
# client that sends its whole body before reading the answer reads the 413; past it, the
# connection is closed
_DRAIN = 4
log = logging.getLogger("uvicorn.error")


class Refused(Exception):
    """A request answered with an error: ``status``, and the ``type`` and ``message`` of
    the JSON body ``{"error": {"type": ..., "message": ...}}``."""

    def __init__(self, status: int, type_: str, message: str, headers: Mapping[str, str] | None = None):
        super().__init__(message)
        self.status, self.type, self.message, self.headers = status, type_, message, dict(headers or {})

    @classmethod
    def of(cls, error: FusionJaxError) -> Refused:
        """A fusionjax error, as the CLI would print it (its message, its class)."""
        return cls(400, type(error).__name__, str(error))

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"type": self.type, "message": self.message}},
                            status_code=self.status, headers=self.headers)


@dataclass
class _Waiting:
    example: Example
    top: int
    future: asyncio.Future
    since: float  # loop time it joined the queue


@dataclass
class Batcher:
    """Collects read examples and answers them in batches of up to ``max_batch``, each
    batch when ``window_s`` has passed since its oldest example joined or when it is
    full, by one :meth:`Predictor.answer_many` call (per distinct ``top``) on one thread."""

    predictor: Predictor
    max_batch: int
    window_s: float
    requests: int = 0  # answered so far
    batches: int = 0  # answer_many calls so far
    _queue: asyncio.Queue | None = None
    _task: asyncio.Task | None = None
    _inflight: list[_Waiting] = field(default_factory=list)
    _executor: ThreadPoolExecutor | None = None

    async def start(self) -> None:
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="fusionjax-answer")
        self._queue = asyncio.Queue()
        self._task = asyncio.create_task(self._collect(), name="fusionjax-batcher")

    async def stop(self) -> None:
        """Stop collecting, refuse what still waits (503), and end the worker thread."""
        task, self._task = self._task, None
        left = list(self._inflight)  # a batch being answered (the cancel below clears the list)
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        while self._queue is not None and not self._queue.empty():
            left.append(self._queue.get_nowait())
        for w in left:
            if not w.future.done():
                w.future.set_exception(Refused(503, "Unavailable", "the server is shutting down"))
        if self._executor is not None:
            await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def answer(self, example: Example, top: int) -> Answer:
        if self._task is None or self._queue is None:
            raise Refused(503, "Unavailable", "the server is not answering (starting or shutting down)")
        loop = asyncio.get_running_loop()
        waiting = _Waiting(example, top, loop.create_future(), loop.time())
        self._queue.put_nowait(waiting)
        return await waiting.future

    async def _collect(self) -> None:
        loop, queue = asyncio.get_running_loop(), self._queue
        assert queue is not None
        while True:
            batch = [await queue.get()]
            deadline = batch[0].since + self.window_s
            while len(batch) < self.max_batch:
                if not queue.empty():
                    batch.append(queue.get_nowait())
                    continue
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    batch.append(await asyncio.wait_for(queue.get(), remaining))
                except TimeoutError:
                    break
            await self._answer([w for w in batch if not w.future.done()])  # done: the client left

    async def _answer(self, batch: list[_Waiting]) -> None:
        loop = asyncio.get_running_loop()
        by_top: dict[int, list[_Waiting]] = {}
        for w in batch:
            by_top.setdefault(w.top, []).append(w)
        for top, group in by_top.items():
            self._inflight = group
            examples = [w.example for w in group]
            try:
                answers = await loop.run_in_executor(
                    self._executor, lambda ex=examples, k=top: self.predictor.answer_many(ex, top=k))
            except Exception as e:  # noqa: BLE001 - given to each waiting request
                for w in group:
                    if not w.future.done():
                        w.future.set_exception(e)
            else:
                self.batches += 1
                self.requests += len(group)
                for w, a in zip(group, answers):
                    if not w.future.done():
                        w.future.set_result(a)
            finally:
                self._inflight = []


def create_app(run_dir: str | Path | Run, *, max_batch: int = 32, batch_window_ms: float = 5,
               max_upload_bytes: int = MAX_UPLOAD_BYTES) -> Starlette:
    """The server's app for the finished run in ``run_dir`` (or an already loaded
    :class:`~fusionjax.rundir.Run`): loaded and compiled for every batch size now, so a
    bad run directory raises here (:class:`~fusionjax.errors.RunError`) and nothing
    compiles while serving."""
    from fusionjax.rundir import Run, load_run

    if isinstance(batch_window_ms, bool) or not isinstance(batch_window_ms, int | float) \
            or not 0 <= batch_window_ms <= 10_000:
        raise ConfigError(f"must be a number of milliseconds in [0, 10000], got {shown(batch_window_ms)}",
                          key="batch_window_ms")
    if isinstance(max_upload_bytes, bool) or not isinstance(max_upload_bytes, int) or max_upload_bytes < 1:
        raise ConfigError(f"must be an int >= 1, got {shown(max_upload_bytes)}", key="max_upload_bytes")
    run = run_dir if isinstance(run_dir, Run) else load_run(run_dir)
    predictor = run.predictor(max_batch=max_batch)
    started = time.perf_counter()
    predictor.warm_up()
    service = _Service(run, predictor, Batcher(predictor, max_batch, batch_window_ms / 1000),
                       max_upload_bytes, time.perf_counter() - started,
                       run.dir.read_facts().get("versions", {}))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        await service.batcher.start()
        try:
            yield
        finally:
            await service.batcher.stop()

    app = Starlette(
        routes=[Route("/", service.page, methods=["GET"]),
                Route("/health", service.health, methods=["GET"]),
                Route("/info", service.info, methods=["GET"]),
                Route("/predict", service.predict, methods=["POST"])],
        exception_handlers={Refused: _refused, HTTPException: _http_error, Exception: _internal_error},
        lifespan=lifespan)
    app.state.service = service
    return app


@dataclass
class _Service:
    run: Run
    predictor: Predictor
    batcher: Batcher
    max_upload_bytes: int
    warm_up_s: float
    versions: dict  # run.json's: the versions the run was trained with

    async def page(self, request: Request):
        if not PAGE.is_file():
            raise Refused(404, "NotFound", f"this installation has no page ({PAGE.name}); "
                                           f"the endpoints are: {ENDPOINTS}")
        return FileResponse(PAGE, media_type="text/html")

    async def health(self, request: Request) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    async def info(self, request: Request) -> JSONResponse:
        p, assembly = self.predictor, self.run.assembly
        return JSONResponse({
            "run": str(Path(self.run.path).absolute()),
            "modalities": list(p.modalities),
            "input_kinds": dict(p.input_kinds),  # modality -> "file" or "text"
            "label_names": list(p.label_names) if p.label_names is not None else None,
            "answer_kind": p.answer_kind,
            "max_batch": p.buckets[-1],
            "buckets": list(p.buckets),
            "batch_window_ms": self.batcher.window_s * 1000,
            "max_upload_bytes": self.max_upload_bytes,
            "compilations": p.compilations(),
            "served": {"requests": self.batcher.requests, "batches": self.batcher.batches},
            "warm_up_s": round(self.warm_up_s, 3),
            "components": {part.key: part.spec.qualified_name
                           for part in [assembly.data_part, *assembly.parts]},
            "versions": self.versions,
        })

    async def predict(self, request: Request) -> JSONResponse:
        try:
            kind = (request.headers.get("content-type") or "").partition(";")[0].strip().lower()
            if kind == "application/json":
                texts, files, top = self._from_json(await self._body(request))
            elif kind == "multipart/form-data":
                texts, files, top = await self._from_form(request, await self._body(request))
            else:
                raise Refused(415, "UnsupportedMediaType",
                              f"unsupported content type {shown(kind or '(none)')}: send "
                              "multipart/form-data (files and text) or application/json (text only)")
            # files are decoded on a thread (an image may take a while); text is read here
            example = await run_in_threadpool(self._read, texts, files) if files else self._read(texts, {})
            answer = await self.batcher.answer(example, top)
            return JSONResponse(answer.to_json())
        except Refused as e:
            return e.response()
        except FusionJaxError as e:
            return Refused.of(e).response()
        except Exception as e:  # noqa: BLE001 - answered (500) and logged; the server goes on
            return await _internal_error(request, e)

    # -- reading a request -----------------------------------------------------------------

    async def _body(self, request: Request) -> bytes:
        """The request body, at most ``max_upload_bytes`` of it (a 413 past that)."""
        limit = self.max_upload_bytes
        declared = request.headers.get("content-length")
        if declared is not None and not declared.strip().isdigit():
            raise Refused(400, "RequestError", f"bad Content-Length {shown(declared)}")
        declared = int(declared) if declared is not None else None
        chunks, size = [], 0
        if declared is None or declared <= _DRAIN * limit:
            async for chunk in request.stream():
                size += len(chunk)
                if size <= limit:
                    chunks.append(chunk)
                elif size > _DRAIN * limit:
                    break
        if max(size, declared or 0) > limit:
            raise Refused(413, "PayloadTooLarge",
                          f"request body too large: {max(size, declared or 0):,} bytes"
                          f"{' or more' if size > _DRAIN * limit else ''}; the most is {limit:,} bytes",
                          headers={"Connection": "close"})
        return b"".join(chunks)

    def _from_json(self, body: bytes) -> tuple[dict[str, str], dict, int]:
        import json

        try:
            data = json.loads(body)
        except (ValueError, UnicodeDecodeError) as e:
            raise Refused(400, "RequestError", f"the body is not valid JSON: {capped(str(e), 200)}") from None
        if not isinstance(data, dict):
            raise Refused(400, "RequestError", f"the JSON body must be an object "
                                               f"({{modality: text, ...}}), got {type(data).__name__}")
        top = self._top(data.pop(TOP, 3))
        self._check_names(data)
        texts = {}
        for name, value in data.items():
            if self.predictor.input_kinds[name] == "file":
                raise ConfigError(f"input {shown(name)}: a file cannot be sent as JSON",
                                  hint=f"send multipart/form-data with a file part named {name!r}")
            if not isinstance(value, str):
                raise ConfigError(f"input {shown(name)}: must be a string (the text), got {shown(value)}")
            texts[name] = value
        return texts, {}, top

    async def _from_form(self, request: Request, body: bytes) -> tuple[dict[str, str], dict, int]:
        sent = False

        async def replay():  # the body already read (and bounded), for the form parser
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await request.receive()

        most = len(self.predictor.modalities) + 8
        try:
            form = await Request(request.scope, replay).form(max_files=most, max_fields=most,
                                                             max_part_size=self.max_upload_bytes)
        except HTTPException as e:  # what the form parser refuses (no boundary, too many parts)
            raise Refused(400, "RequestError", f"the multipart/form-data body cannot be read: "
                                               f"{capped(str(e.detail), 300)}") from None
        try:
            items = form.multi_items()
            names = [n for n, _ in items]
            for name in names:
                if names.count(name) > 1:
                    raise ConfigError(f"input {shown(name)} is given {names.count(name)} times",
                                      hint="give each modality once")
            given = dict(items)
            top = self._top(given.pop(TOP, "3"))
            self._check_names(given)
            texts, files = {}, {}
            for name, value in given.items():
                is_file = isinstance(value, UploadFile)
                if self.predictor.input_kinds[name] == "file" and not is_file:
                    raise ConfigError(f"input {shown(name)}: a file: send it as a file part, "
                                      "not as a form field",
                                      hint=f"e.g. curl -F {name}=@FILE")
                if self.predictor.input_kinds[name] == "text" and is_file:
                    raise ConfigError(f"input {shown(name)}: is text: send it as a form field, "
                                      "not as a file", hint=f"e.g. curl -F '{name}=what is the sum'")
                if is_file:
                    base = Path(value.filename or "").name or name
                    files[name] = (capped(base, 120), await value.read())
                else:
                    texts[name] = value
            return texts, files, top
        finally:
            await form.close()

    def _top(self, value: Any) -> int:
        if isinstance(value, str) and value.strip().isdigit():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"must be an int >= 1, got {shown(value)}", key="top")
        return value

    def _check_names(self, given: Mapping[str, Any]) -> None:
        """The CLI's message for an unknown modality, or for no input at all."""
        if not given or any(n not in self.predictor.input_kinds for n in given):
            self.predictor.read(dict.fromkeys(given, ""))  # raises before reading anything

    def _read(self, texts: dict[str, str], files: dict[str, tuple[str, bytes]]) -> Example:
        """The example, each upload read from a temporary file with the upload's suffix;
        an error names the upload by its own file name, as the CLI names the path given."""
        paths: dict[str, tuple[str, str]] = {}
        try:
            for name, (filename, data) in files.items():
                suffix = Path(filename).suffix
                fd, path = tempfile.mkstemp(prefix="fusionjax-upload-",
                                            suffix=suffix if _SUFFIX.fullmatch(suffix) else "")
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                paths[name] = (path, filename)
            try:
                return self.predictor.read({**texts, **{n: p for n, (p, _) in paths.items()}})
            except FusionJaxError as e:
                message = str(e)
                for path, filename in paths.values():
                    message = message.replace(path, filename)
                raise Refused(400, type(e).__name__, message) from None
        finally:
            for path, _ in paths.values():
                with contextlib.suppress(OSError):
                    os.unlink(path)


async def _refused(request: Request, exc: Refused) -> JSONResponse:
    return exc.response()


async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    """404, 405 and the form parser's 400s, as JSON errors."""
    if exc.status_code == 404:
        message = f"no endpoint {request.url.path}; the endpoints are: {ENDPOINTS}"
    elif exc.status_code == 405:
        message = (f"{request.method} is not allowed on {request.url.path} "
                   f"(allowed: {(exc.headers or {}).get('Allow', '?')})")
    else:
        message = capped(str(exc.detail), 1000)
    kind = {404: "NotFound", 405: "MethodNotAllowed"}.get(exc.status_code, "RequestError")
    return Refused(exc.status_code, kind, message, exc.headers).response()


async def _internal_error(request: Request, exc: Exception) -> JSONResponse:
    """Anything unexpected: logged with its traceback, answered with a bounded message."""
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return Refused(500, "InternalError",
                   f"internal error: {type(exc).__name__}: {capped(str(exc), 300)}").response()


def listen(host: str = "127.0.0.1", port: int = 8000) -> socket.socket:
    """A socket listening on ``host:port`` (port 0: any free one), or a ConfigError that
    says why not; connections wait in its backlog until :func:`serve` accepts them."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    try:
        listener = socket.create_server((host, port), family=family)
    except (OSError, OverflowError) as e:
        code = getattr(e, "errno", None)
        why = (getattr(e, "strerror", None) or str(e)).split(" (while attempting")[0]
        if isinstance(e, OverflowError) or code in (errno.EADDRINUSE, errno.EACCES):
            raise ConfigError(f"cannot listen on {host}:{port}: {why}", key="--port",
                              hint="choose another port (0 to 65535; 0: any free one)") from None
        raise ConfigError(f"cannot listen on {host}:{port}: {why}", key="--host",
                          hint="give an address of this machine, e.g. 127.0.0.1 or 0.0.0.0") from None
    # no Nagle delay on the connections it accepts (Linux: they inherit the option): a
    # response's headers and body are two writes, and a kept-alive connection would
    # otherwise wait for the client's delayed ACK (~40 ms) between them
    listener.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return listener


def serve(app: Starlette, listener: socket.socket, *, on_ready: Callable[[str], None] | None = None) -> int:
    """Serve ``app`` on ``listener`` (:func:`listen`) until SIGTERM or SIGINT, then stop
    cleanly (requests in flight are answered, the worker thread ends) and return 0.
    ``on_ready(url)`` is called once the server accepts connections."""
    import uvicorn

    host, port = listener.getsockname()[:2]
    url = f"http://[{host}]:{port}/" if listener.family == socket.AF_INET6 else f"http://{host}:{port}/"
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                                           timeout_graceful_shutdown=10))

    async def main() -> None:
        task = asyncio.create_task(server.serve(sockets=[listener]))
        while not server.started and not task.done():
            await asyncio.sleep(0.01)
        if server.started and on_ready is not None:
            on_ready(url)
        await task

    # uvicorn stops on SIGTERM/SIGINT and then raises the signal again for the handler it
    # found: a handler that does nothing, so that a requested stop exits 0
    stops = (signal.SIGTERM, signal.SIGINT)
    previous = {s: signal.signal(s, lambda *_: None) for s in stops}
    try:
        asyncio.run(main())
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
        listener.close()
    return 0 if server.started else 1
