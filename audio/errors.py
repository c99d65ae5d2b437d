"""Audio errors carry a stable code and a Vietnamese message for the UI."""


class AudioError(Exception):
    """An input the pipeline refuses, or a failure of ffmpeg itself."""

    def __init__(self, code: str, message: str, message_vi: str):
        super().__init__(message)
        self.code = code
        self.message = message
        self.message_vi = message_vi
