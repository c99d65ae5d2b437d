"""OpenAPI 3.1 description of /api/v1 (served at /api/v1/openapi.json)."""

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_ERROR = {"application/json": {"schema": _ERROR}}


def _op(summary: str, responses: dict, **extra) -> dict:
    base = {"summary": summary, "security": [{"basic": []}],
            "responses": {**responses,
                          "401": {"description": "not authenticated", "content": _JSON_ERROR},
                          "403": {"description": "role or area forbids it", "content": _JSON_ERROR}}}
    base.update(extra)
    return base


OPENAPI = {
    "openapi": "3.1.0",
    "info": {"title": "loaxa controller API", "version": "1"},
    "components": {
        "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}},
        "schemas": {
            "Error": {"type": "object", "required": ["error"], "properties": {"error": {
                "type": "object", "required": ["code", "message", "message_vi"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"},
                               "message_vi": {"type": "string"}}}}},
        },
    },
    "paths": {
        "/api/v1/health": {"get": {"summary": "liveness", "security": [], "responses": {"200": {"description": "ok"}}}},
        "/api/v1/areas": {"get": _op("areas the caller may see", {"200": {"description": "areas"}})},
        "/api/v1/bulletins": {
            "get": _op("bulletins, newest first", {"200": {"description": "bulletins"}}),
            "post": _op("upload an audio bulletin", {
                "202": {"description": "accepted; transcoding in the background"},
                "400": {"description": "missing field"}, "413": {"description": "too large"},
                "422": {"description": "not usable audio (code audio.*)"}},
                requestBody={"content": {"multipart/form-data": {"schema": {
                    "type": "object", "required": ["file", "title"],
                    "properties": {"file": {"type": "string", "format": "binary"}, "title": {"type": "string"},
                                   "area": {"type": "string"}}}}}}),
        },
        "/api/v1/bulletins/{id}": {"get": _op("one bulletin and its processing state", {
            "200": {"description": "bulletin"}, "404": {"description": "unknown or out of scope"}},
            parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}])},
        "/api/v1/programme/items": {
            "get": _op("programme items from an hour ago on", {"200": {"description": "items"}}),
            "post": _op("schedule a ready bulletin", {
                "201": {"description": "scheduled and published"}, "400": {"description": "bad field"},
                "409": {"description": "bulletin not ready"}, "422": {"description": "time in the past or too far"}},
                requestBody={"content": {"application/json": {"schema": {
                    "type": "object", "required": ["bulletin_id"],
                    "properties": {"bulletin_id": {"type": "integer"}, "area": {"type": "string"},
                                   "start": {"type": "string", "description": "local time, Asia/Ho_Chi_Minh"},
                                   "start_ms": {"type": "integer"},
                                   "priority": {"enum": ["normal", "priority", "emergency"]}}}}}}),
        },
        "/api/v1/receivers": {"get": _op("receivers the caller may see", {"200": {"description": "receivers"}})},
        "/api/v1/receivers/{id}": {"get": _op("one receiver: status, heartbeat, events, what it played", {
            "200": {"description": "receiver"}, "404": {"description": "unknown or out of scope"}},
            parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}])},
    },
}
