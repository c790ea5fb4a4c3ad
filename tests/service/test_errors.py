"""service.errors: every domain error has its gRPC status; to_status is the one translation."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from service import errors
from service.errors import ConvserveError, to_status

# The contract with clients (DESIGN.md "Errors"): a new class must be added here on purpose.
EXPECTED = {
    "ConvserveError": grpc.StatusCode.INTERNAL,
    "InvalidInputError": grpc.StatusCode.INVALID_ARGUMENT,
    "SettingsError": grpc.StatusCode.INVALID_ARGUMENT,
    "ModelNotFoundError": grpc.StatusCode.NOT_FOUND,
    "ModelNotReadyError": grpc.StatusCode.UNAVAILABLE,
    "ModelLoadError": grpc.StatusCode.UNAVAILABLE,
    "ServerShuttingDownError": grpc.StatusCode.UNAVAILABLE,
    "QueueFullError": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "MessageTooLargeError": grpc.StatusCode.RESOURCE_EXHAUSTED,
    "DeadlineExceededError": grpc.StatusCode.DEADLINE_EXCEEDED,
    "RepositoryError": grpc.StatusCode.INTERNAL,
    "InferenceError": grpc.StatusCode.INTERNAL,
}


def all_error_classes() -> list[type[ConvserveError]]:
    found: list[type[ConvserveError]] = [ConvserveError]
    for cls in found:
        found.extend(c for c in cls.__subclasses__() if c.__module__ == errors.__name__)
    return found


def test_every_error_class_is_in_the_table_and_the_docstring() -> None:
    names = {cls.__name__ for cls in all_error_classes()}
    assert names == set(EXPECTED)
    for name in names:
        assert name in (errors.__doc__ or ""), f"{name} missing from the module docstring"


@pytest.mark.parametrize("cls", all_error_classes(), ids=lambda c: c.__name__)
def test_to_status_uses_the_class_status_and_message(cls: type[ConvserveError]) -> None:
    code, message = to_status(cls("model 'x' said no"))
    assert code == EXPECTED[cls.__name__] == cls.status
    assert message == "model 'x' said no"


def test_empty_message_falls_back_to_the_class_name() -> None:
    assert to_status(errors.QueueFullError()) == (
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        "QueueFullError",
    )


def test_cancelled_maps_to_cancelled() -> None:
    assert to_status(asyncio.CancelledError())[0] == grpc.StatusCode.CANCELLED


@pytest.mark.parametrize("exc", [ValueError("secret path /etc/x"), KeyError("k"), RuntimeError()])
def test_anything_else_is_internal_without_leaking_its_text(exc: BaseException) -> None:
    code, message = to_status(exc)
    assert code == grpc.StatusCode.INTERNAL
    assert message == errors.INTERNAL_MESSAGE
    assert "secret" not in message


def test_subclass_of_a_domain_error_keeps_its_parent_status() -> None:
    class Special(errors.InvalidInputError):
        pass

    assert to_status(Special("bad"))[0] == grpc.StatusCode.INVALID_ARGUMENT
