"""OpenAPI 3.1 description of /api/v1 (served at /api/v1/openapi.json)."""

_ERROR = {"$ref": "#/components/schemas/Error"}
_JSON_ERROR = {"application/json": {"schema": _ERROR}}


def _op(summary: str, responses: dict, **extra) -> dict:
    base = {"summary": summary, "security": [{"basic": []}],
            "responses": {**responses,
                          "401": {"description": "not authenticated (no Basic challenge is sent: send credentials"
                                                 " preemptively)", "content": _JSON_ERROR},
                          "403": {"description": "role or area forbids it, or a cross-site change"
                                                 " (auth.cross_site)", "content": _JSON_ERROR},
                          "413": {"description": "body over 64 KB (request.too_large; uploads: upload.too_large)",
                                  "content": _JSON_ERROR}}}
    base.update(extra)
    return base


def _q(name: str, schema: dict, description: str = "") -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


_RX_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_AREA_Q = _q("area", {"type": "string"}, "an area id in the caller's scope (404 otherwise)")
_STATUS_PATHS = {  # health dashboard, faults, as-run reports (controller/api/status.py)
    "/api/v1/clusters": {"get": _op("cluster table: status, last seen, clock offset, signal, version, volume", {
        "200": {"description": "summary and one page of clusters"}, "400": {"description": "bad filter"},
        "404": {"description": "area unknown or out of scope"}}, parameters=[
        _q("status", {"enum": ["ok", "fault", "offline", "unknown"]}), _AREA_Q, _q("q", {"type": "string"}),
        _q("sort", {"enum": ["name", "status", "last_seen", "offset", "signal", "version", "volume", "area"]}),
        _q("dir", {"enum": ["asc", "desc"]}), _q("page", {"type": "integer", "minimum": 1}),
        _q("per_page", {"type": "integer", "minimum": 1, "maximum": 500})])},
    "/api/v1/clusters/{id}/history": {"get": _op("heartbeat history in 15-minute buckets (count, min, max, avg)", {
        "200": {"description": "history"}, "404": {"description": "unknown or out of scope"}}, parameters=[
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}},
        _q("hours", {"type": "integer", "minimum": 1, "maximum": 744})])},
    "/api/v1/faults": {"get": _op("faults by state, statistics (time to repair) and working share over time", {
        "200": {"description": "faults"}, "400": {"description": "bad filter"}}, parameters=[
        _q("state", {"enum": ["open", "acked", "resolved", "all"]}), _AREA_Q,
        _q("days", {"type": "integer", "minimum": 1, "maximum": 90}), _q("page", {"type": "integer"}),
        _q("per_page", {"type": "integer"})])},
    "/api/v1/faults/{id}/ack": {"post": _op("acknowledge a fault (operator and above); idempotent", {
        "200": {"description": "the fault, acknowledged"}, "404": {"description": "unknown or out of scope"}},
        parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}])},
    "/api/v1/reports/as-run": {"get": _op(
        "as-run per occurrence and receiver (full, partial with share, failed, missed with reasons), broadcast"
        " hours per area per day/week/month; format=csv streams the whole log", {
            "200": {"description": "report (JSON) or CSV"}, "400": {"description": "bad date, range or field"},
            "404": {"description": "area unknown or out of scope"}}, parameters=[
            _AREA_Q, _q("from", {"type": "string", "format": "date"}), _q("to", {"type": "string", "format": "date"}),
            _q("period", {"enum": ["day", "week", "month"]}), _q("format", {"enum": ["json", "csv"]}),
            _q("page", {"type": "integer"}), _q("per_page", {"type": "integer"})])},
}

_ALERT_ID = {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}
_ALERT_BODY = {"content": {"application/json": {"schema": {
    "type": "object", "required": ["mode", "content"],
    "properties": {
        "mode": {"enum": ["live", "drill"], "description": "a drill is its own command on the wire, never a flag"},
        "areas": {"type": "array", "items": {"type": "string"}},
        "receivers": {"type": "array", "items": {"type": "string"}, "description": "clusters picked one by one"},
        "content": {"type": "object", "required": ["kind"], "properties": {
            "kind": {"enum": ["bulletin", "text", "template", "stream"]}, "bulletin_id": {"type": "integer"},
            "text": {"type": "string", "maxLength": 5000}, "template_id": {"type": "integer"},
            "url": {"type": "string", "description": "http(s) stream; not the controller, not private"}}},
        "title": {"type": "string"}, "volume": {"type": "integer", "minimum": 0, "maximum": 100},
        "chime": {"type": "boolean"}, "repeat": {"type": "integer", "minimum": 1, "maximum": 5},
        "gap_s": {"type": "number", "minimum": 0, "maximum": 30},
        "until_ms": {"type": "integer", "description": "end time, epoch ms (at most 6 h ahead)"},
        "if_running": {"enum": ["queue", "replace"], "description": "required when another alert holds some of"
                                                                    " the same clusters (else 409 alert.running)"}}}}}}
_ALERT_PATHS = {
    "/api/v1/alerts": {
        "get": _op("alerts the caller may see, newest first (?open=1: not over)", {"200": {"description": "alerts"}}),
        "post": _op("send an emergency or a drill now (callers who may alert: managers, granted operators)", {
            "202": {"description": "the alert: preparing, queued or awaiting_confirm"},
            "400": {"description": "bad field (alert.*)"}, "403": {"description": "alert.forbidden"},
            "404": {"description": "a target unknown or out of scope"},
            "409": {"description": "alert.running (choose if_running) or bulletin not ready"}},
            requestBody=_ALERT_BODY),
    },
    "/api/v1/alerts/preview": {"post": _op(
        "check a request without sending: clusters reached, where, confirm needed, what runs there, TTS fallback",
        {"200": {"description": "the preview"}, "400": {"description": "bad field"}}, requestBody=_ALERT_BODY)},
    "/api/v1/alerts/{id}": {"get": _op(
        "the alert and, per cluster and per area, what happened: acknowledged, playing, finished, failed, refused,"
        " offline, silent (with the reason)", {"200": {"description": "alert and status"},
                                               "404": {"description": "unknown or out of scope"}},
        parameters=[_ALERT_ID])},
    "/api/v1/alerts/{id}/confirm": {"post": _op("a second person confirms a live alert", {
        "200": {"description": "alert and status"}, "403": {"description": "the sender, or not allowed"},
        "409": {"description": "not waiting"}}, parameters=[_ALERT_ID])},
    "/api/v1/alerts/{id}/stop": {"post": _op("stop it everywhere (its retained state is cleared)", {
        "200": {"description": "alert and status"}, "409": {"description": "already over"}},
        parameters=[_ALERT_ID])},
    "/api/v1/alerts/{id}/correction": {"post": _op(
        "stop it and send the prepared correction (thông báo đính chính) to the same targets", {
            "202": {"description": "the correction alert"}, "409": {"description": "a correction of a correction"}},
        parameters=[_ALERT_ID])},
    "/api/v1/alert-templates": {
        "get": _op("prepared alert texts the caller may use", {"200": {"description": "templates"}}),
        "post": _op("an area's own prepared text (managers)", {"201": {"description": "template"}}),
    },
    "/api/v1/stream-sources": {
        "get": _op("saved live streams to relay", {"200": {"description": "sources"}}),
        "post": _op("save a stream for an area (managers)", {"201": {"description": "source"}}),
    },
}

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
            "TtsRequest": {"type": "object", "required": ["text"], "properties": {
                "title": {"type": "string", "description": "required when saving"},
                "area": {"type": "string"}, "text": {"type": "string", "description": "Vietnamese text"},
                "engine": {"enum": ["piper", "gtts", "espeak"], "description": "tried first; others follow"},
                "voice": {"enum": ["vi", "vi-vn-x-central", "vi-vn-x-south"], "description": "espeak-ng voice"},
                "repeat": {"type": "integer", "minimum": 1, "maximum": 10},
                "repeat_gap_s": {"type": "number", "minimum": 0, "maximum": 60},
                "intro": {"type": "string", "description": "sha256 of a stored jingle"},
                "outro": {"type": "string", "description": "sha256 of a stored jingle"}}},
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
        "/api/v1/bulletins/{id}": {"get": _op(
            "one bulletin: status queued | processing (progress, percent) | ready | failed (error code and"
            " reasons); loudness before and after, waveform peaks, the TTS engine that spoke; warning (code,"
            " message, message_vi) when the file was kept but not whole, e.g. a truncated MP3", {
                "200": {"description": "bulletin"}, "404": {"description": "unknown or out of scope"}},
            parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}])},
        "/api/v1/bulletins/tts": {"post": _op("a text bulletin, spoken and normalised in the background", {
            "202": {"description": "accepted; the bulletin's tts.engine names the engine that spoke"},
            "400": {"description": "bad field (code tts.* or bulletin.bad_title)"},
            "404": {"description": "area unknown or out of scope"}},
            requestBody={"content": {"application/json": {"schema": {"$ref": "#/components/schemas/TtsRequest"}}}})},
        "/api/v1/bulletins/tts/preview": {"post": _op("listen before saving: the rendered audio, nothing stored", {
            "200": {"description": "audio/mpeg (or audio/ogg); headers X-Loaxa-TTS-Engine, X-Loaxa-TTS-Voice,"
                                   " X-Loaxa-Duration-Ms"},
            "400": {"description": "bad field"}, "422": {"description": "no engine worked (tts.unavailable)"}},
            requestBody={"content": {"application/json": {"schema": {"$ref": "#/components/schemas/TtsRequest"}}}})},
        "/api/v1/tts/engines": {"get": _op("text-to-speech engines usable now and the offline voices",
                                           {"200": {"description": "engines, voices"}})},
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
        "/api/v1/users/{id}/unlock": {"post": _op(
            "clear the login throttle of a weaker user in the caller's scope (managers)", {
                "200": {"description": "the user"}, "404": {"description": "unknown or out of scope"}},
            parameters=[{"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}}])},
        "/api/v1/receivers": {
            "get": _op("receivers the caller may see (in service; ?retired=1 adds the retired); online is null and"
                       " state unknown (unknown_since_ms) while the controller has lost the broker",
                       {"200": {"description": "receivers"}}, parameters=[_q("retired", {"enum": ["1"]})]),
            "post": _op("register a receiver box in an area the caller manages (managers)", {
                "201": {"description": "receiver"}, "400": {"description": "bad id, name or coordinates"},
                "404": {"description": "area unknown or out of scope"}, "409": {"description": "id taken"}},
                requestBody={"content": {"application/json": {"schema": {
                    "type": "object", "required": ["id", "area"],
                    "properties": {"id": {"type": "string", "pattern": "^[a-z0-9][a-z0-9-]{1,62}$"},
                                   "area": {"type": "string"}, "name": {"type": "string"},
                                   "lat": {"type": "number"}, "lon": {"type": "number"}}}}}}),
        },
        "/api/v1/receivers/{id}": {
            "get": _op("one receiver: status, heartbeat, events, what it played", {
                "200": {"description": "receiver"}, "404": {"description": "unknown or out of scope"}},
                parameters=[_RX_ID]),
            "patch": _op("rename, place (lat, lon) or move a receiver to another area (managers)", {
                "200": {"description": "receiver"}, "400": {"description": "bad field"},
                "404": {"description": "unknown or out of scope"}}, parameters=[_RX_ID]),
        },
        "/api/v1/receivers/{id}/bundle": {"post": _op(
            "new credentials and the provisioning bundle (.tar.gz for deploy/install-receiver.sh); the old ones stop",
            {"200": {"description": "the bundle", "content": {"application/gzip": {}}},
             "404": {"description": "unknown or out of scope"}, "409": {"description": "retired"}},
            parameters=[_RX_ID])},
        "/api/v1/receivers/{id}/retire": {"post": _op(
            "take a receiver out of service: token and broker login revoked, history kept (managers)",
            {"200": {"description": "receiver"}, "404": {"description": "unknown or out of scope"},
             "409": {"description": "already retired"}}, parameters=[_RX_ID])},
        **_STATUS_PATHS,
        **_ALERT_PATHS,
    },
}
