"""Registering servicers with tolerant request parsing.

The generated ``add_*_to_server`` functions parse requests with
``FromString``; a body that does not parse (invalid UTF-8 in a string, wire
garbage) then makes gRPC log a stack trace and answer UNKNOWN with Python's
exception text. Here a bad body reaches the handler as ``Unparseable`` and
is answered INVALID_ARGUMENT like any other bad input.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from google.protobuf.message import DecodeError


class Unparseable:
    """Stands in for a request body that is not a valid message of its type."""

    def __init__(self, type_name: str, error: Exception, bad_utf8: str | None = None) -> None:
        if bad_utf8 is not None:
            self.message = f"field {bad_utf8} of {type_name} is not valid UTF-8"
        else:
            self.message = f"the request is not a valid {type_name}: {error}"


MAX_VARINT_BYTES = 10  # a 64-bit varint; longer is garbage, not a bigger number


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """One base-128 varint; IndexError for a truncated or overlong one (an
    unbounded run of continuation bytes would build ever larger integers)."""
    value = 0
    for shift in range(0, 7 * MAX_VARINT_BYTES, 7):
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
    raise IndexError("varint longer than 10 bytes")


def bad_utf8_field(descriptor: Any, data: bytes) -> str | None:
    """The top-level string field of ``data`` that holds invalid UTF-8, if
    one does: protobuf's own error does not say which (every request's
    strings are top-level fields)."""
    strings = {f.number: f.name for f in descriptor.fields if f.type == f.TYPE_STRING}
    pos = 0
    try:
        while pos < len(data):
            key, pos = _varint(data, pos)
            number, wire_type = key >> 3, key & 7
            if wire_type == 0:
                _, pos = _varint(data, pos)
            elif wire_type in (1, 5):
                pos += 8 if wire_type == 1 else 4
            elif wire_type == 2:
                size, pos = _varint(data, pos)
                if pos + size > len(data):  # cut short: not a UTF-8 problem
                    return None
                value, pos = data[pos : pos + size], pos + size
                if number in strings:
                    value.decode("utf-8")
            else:
                return None
    except UnicodeDecodeError:
        return strings[number]
    except IndexError:
        return None
    return None


def tolerant_deserializer(message_class: Any) -> Callable[[bytes], Any]:
    """Parse like the generated code, but hand a bad body to the handler as
    ``Unparseable`` (answered INVALID_ARGUMENT) instead of letting gRPC log a
    stack trace and answer UNKNOWN with Python's exception text."""
    parse = message_class.FromString
    type_name = message_class.DESCRIPTOR.full_name

    def deserialize(data: bytes) -> Any:
        try:
            return parse(data)
        except DecodeError as error:
            return Unparseable(type_name, error, bad_utf8_field(message_class.DESCRIPTOR, data))

    return deserialize


_HANDLER_MAKERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def add_service(server: grpc.aio.Server, servicer: Any, service: ServiceDescriptor) -> None:
    """Register ``servicer`` for ``service`` as the generated add_*_to_server
    does, with tolerant request parsing."""
    handlers = {}
    for method in service.methods:
        request_class = message_factory.GetMessageClass(method.input_type)
        response_class = message_factory.GetMessageClass(method.output_type)
        make = _HANDLER_MAKERS[method.client_streaming, method.server_streaming]
        handlers[method.name] = make(
            getattr(servicer, method.name),
            request_deserializer=tolerant_deserializer(request_class),
            response_serializer=response_class.SerializeToString,
        )
    server.add_generic_rpc_handlers(
        (grpc.method_handlers_generic_handler(service.full_name, handlers),)
    )
    server.add_registered_method_handlers(service.full_name, handlers)
