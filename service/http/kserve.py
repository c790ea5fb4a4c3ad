"""KServe v2 / Open Inference Protocol over REST, with Triton's extensions, as tritonclient.http,
perf_analyzer (-i http) and curl use it:

    GET  /v2/health/live | /v2/health/ready                  200, or 400 when not ready (Triton)
    GET  /v2                                                 server metadata
    GET  /v2/models/{m}[/versions/{v}]                       model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready                 200, or 400 when not ready
    GET  /v2/models/{m}[/versions/{v}]/config                the ModelConfig as JSON
    GET  /v2/models[/{m}[/versions/{v}]]/stats               Triton's statistics
    POST /v2/models/{m}[/versions/{v}]/infer                 JSON and binary tensors
    POST /v2/repository/index                                {"ready": bool} -> model list
    POST /v2/repository/models/{m}/load | unload             {"parameters": {"config": ...}}

Each route converts its request, calls the same data plane as gRPC, and converts the answer.
"""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from service._proto.inference import grpc_service_pb2 as pb
from service.errors import InvalidInputError
from service.http import json_tensors
from service.http.routes import (
    HttpContext,
    deadline,
    endpoint,
    json_response,
    message_json,
)
from service.servicers import converters


def _names(request: Request) -> tuple[str, str]:
    return request.path_params.get("model", ""), request.path_params.get("version", "")


@endpoint("ServerLive")
async def server_live(ctx: HttpContext, request: Request, body: bytes) -> Response:
    return json_response({"live": True})


@endpoint("ServerReady")
async def server_ready(ctx: HttpContext, request: Request, body: bytes) -> Response:
    ready = ctx.plane.ready()
    return json_response({"ready": ready}, 200 if ready else 400)


@endpoint("ServerMetadata")
async def server_metadata(ctx: HttpContext, request: Request, body: bytes) -> Response:
    meta = ctx.plane.metadata()
    return json_response(
        {"name": meta.name, "version": meta.version, "extensions": list(meta.extensions)}
    )


@endpoint("ModelMetadata")
async def model_metadata(ctx: HttpContext, request: Request, body: bytes) -> Response:
    return json_response(
        message_json(converters.model_metadata(ctx.plane.models.metadata(*_names(request))))
    )


@endpoint("ModelReady")
async def model_ready(ctx: HttpContext, request: Request, body: bytes) -> Response:
    name, version = _names(request)
    ready = ctx.plane.model_ready(name, version)
    return json_response({"name": name, "ready": ready}, 200 if ready else 400)


@endpoint("ModelConfig")
async def model_config(ctx: HttpContext, request: Request, body: bytes) -> Response:
    return json_response(message_json(ctx.plane.models.config(*_names(request))))


@endpoint("ModelStatistics")
async def model_statistics(ctx: HttpContext, request: Request, body: bytes) -> Response:
    rows = ctx.plane.models.statistics(*_names(request))
    stats = pb.ModelStatisticsResponse(model_stats=[converters.model_statistics(*r) for r in rows])
    return json_response(message_json(stats))


@endpoint("ModelInfer", watch=True)
async def infer(ctx: HttpContext, request: Request, body: bytes) -> Response:
    name, version = _names(request)
    header = request.headers.get(json_tensors.HEADER_LENGTH)
    record, parameters = json_tensors.infer_request(body, header, name, version)
    answer = await ctx.plane.infer(record, deadline(parameters.get("timeout")))
    content, json_length = json_tensors.infer_response(answer, record, parameters)
    if json_length is None:
        return Response(content, media_type="application/json")
    return Response(
        content,
        media_type="application/octet-stream",
        headers={"Inference-Header-Content-Length": str(json_length)},
    )


@endpoint("RepositoryIndex")
async def repository_index(ctx: HttpContext, request: Request, body: bytes) -> Response:
    document = _optional_json(body)
    ready = document.get("ready", False)
    if not isinstance(ready, bool):
        raise InvalidInputError("ready must be true or false")
    entries = ctx.plane.index(ready_only=ready)
    return json_response(
        [
            {"name": e.name, "version": e.version, "state": e.state, "reason": e.reason}
            for e in entries
        ]
    )


@endpoint("RepositoryModelLoad")
async def repository_load(ctx: HttpContext, request: Request, body: bytes) -> Response:
    document = _optional_json(body)
    parameters = document.get("parameters", {})
    if not isinstance(parameters, dict):
        raise InvalidInputError("parameters must be an object")
    if isinstance(parameters.get("config"), dict):  # accepted as an object as well as a string
        parameters = {**parameters, "config": json.dumps(parameters["config"])}
    await ctx.plane.load(request.path_params["model"], parameters=parameters)
    return json_response({})


@endpoint("RepositoryModelUnload")
async def repository_unload(ctx: HttpContext, request: Request, body: bytes) -> Response:
    await ctx.plane.unload(request.path_params["model"])
    return json_response({})


def _optional_json(body: bytes) -> dict[str, Any]:
    if not body.strip():
        return {}
    try:
        document = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInputError(f"request body is not valid JSON: {exc}") from None
    if not isinstance(document, dict):
        raise InvalidInputError("request body must be a JSON object")
    return document


def _model_routes(suffix: str, handler: Any, methods: list[str]) -> list[Route]:
    return [
        Route(f"/v2/models/{{model}}{suffix}", handler, methods=methods),
        Route(f"/v2/models/{{model}}/versions/{{version}}{suffix}", handler, methods=methods),
    ]


ROUTES = [
    Route("/v2/health/live", server_live, methods=["GET"]),
    Route("/v2/health/ready", server_ready, methods=["GET"]),
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/models/stats", model_statistics, methods=["GET"]),
    *_model_routes("/ready", model_ready, ["GET"]),
    *_model_routes("/config", model_config, ["GET"]),
    *_model_routes("/stats", model_statistics, ["GET"]),
    *_model_routes("/infer", infer, ["POST"]),
    *_model_routes("", model_metadata, ["GET"]),
    Route("/v2/repository/index", repository_index, methods=["POST"]),
    Route("/v2/repository/models/{model}/load", repository_load, methods=["POST"]),
    Route("/v2/repository/models/{model}/unload", repository_unload, methods=["POST"]),
]
