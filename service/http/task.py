"""The task API over HTTP, for people with curl:

    POST /v1/classify?model=&version=&top_k=&timeout_ms=          body: an encoded image
    POST /v1/detect-speech?model=&version=&threshold=&timeout_ms=  body: audio (WAV, FLAC, ...)
    GET  /v1/models                                                every model
    GET  /v1/models/{name}[?version=]                              one model

The body is the file itself (`curl --data-binary @cat.jpg`) or a multipart form with one file
part (`curl -F image=@cat.jpg`). Each answers the JSON of the matching convserve.v1 gRPC response
(protobuf's JSON mapping with the .proto field names, every field present): `classes` with
`index`, `label`, `score`; `speech_probability`, `is_speech`, `windows`, `segments`.
"""

from __future__ import annotations

import time

from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Message

from service._proto.convserve.v1 import inference_pb2 as pb
from service.errors import InvalidInputError
from service.http.routes import HttpContext, endpoint, json_response, message_json, query
from service.servicers import converters


async def _upload(request: Request, body: bytes) -> bytes:
    """The request's file: the body itself, or the one file part of a multipart form."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        return body

    async def replay() -> Message:
        return {"type": "http.request", "body": body, "more_body": False}

    async with Request(request.scope, replay).form(max_files=1, max_fields=16) as form:
        files = [v for v in form.values() if isinstance(v, UploadFile)]
        if len(files) != 1:
            raise InvalidInputError("a multipart body needs exactly one file part")
        return await files[0].read()


def _deadline(request: Request) -> float | None:
    timeout_ms = query(request, "timeout_ms", float, 0.0)
    if timeout_ms < 0:
        raise InvalidInputError(f"timeout_ms must be positive, got {timeout_ms:g}")
    return time.monotonic() + timeout_ms / 1000 if timeout_ms else None


@endpoint("ClassifyImage", watch=True)
async def classify(ctx: HttpContext, request: Request, body: bytes) -> Response:
    image = await _upload(request, body)
    top_k = query(request, "top_k", int, 0)
    if top_k < 0:
        raise InvalidInputError(f"top_k must be positive, got {top_k}")
    answer = await ctx.plane.classify_image(
        model=query(request, "model", str, ""),
        version=query(request, "version", str, ""),
        image=image,
        top_k=top_k,
        deadline=_deadline(request),
    )
    return json_response(message_json(converters.classification(answer)))


@endpoint("DetectSpeech", watch=True)
async def detect_speech(ctx: HttpContext, request: Request, body: bytes) -> Response:
    audio = await _upload(request, body)
    answer = await ctx.plane.detect_speech(
        model=query(request, "model", str, ""),
        version=query(request, "version", str, ""),
        audio=audio,
        threshold=query(request, "threshold", float, 0.0),
        deadline=_deadline(request),
    )
    return json_response(message_json(converters.speech_detection(answer)))


@endpoint("ListModels")
async def list_models(ctx: HttpContext, request: Request, body: bytes) -> Response:
    models = [converters.model_info(m) for m in ctx.plane.models.models()]
    return json_response(message_json(pb.ListModelsResponse(models=models)))


@endpoint("GetModel")
async def get_model(ctx: HttpContext, request: Request, body: bytes) -> Response:
    info = ctx.plane.models.model_info(
        request.path_params["name"], query(request, "version", str, "")
    )
    return json_response(message_json(converters.model_info(info)))


ROUTES = [
    Route("/v1/classify", classify, methods=["POST"]),
    Route("/v1/detect-speech", detect_speech, methods=["POST"]),
    Route("/v1/models", list_models, methods=["GET"]),
    Route("/v1/models/{name}", get_model, methods=["GET"]),
]
