"""structlog JSON logs: one line per RPC, never alert contents (they are personal data)."""

from __future__ import annotations

import logging
import sys

import structlog

# Libraries that narrate routine work at INFO ("Context impl SQLiteImpl."): kept, at debug level.
_CHATTY = frozenset({"alembic"})


class _Level(logging.Filter):
    """The handler's level, applied after demoting the chatty libraries' records (a filter on
    their logger would not see the records of its children, such as alembic.runtime.migration)."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.partition(".")[0] in _CHATTY and record.levelno > logging.DEBUG:
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
        return record.levelno >= self.level


def configure_logging(level: int = logging.INFO) -> None:
    """Our events and the standard library's records (SQLAlchemy, Alembic, grpc) alike as one
    JSON object per line on stderr, so a log shipper parses every line."""
    shared: list[structlog.types.Processor] = [
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(_Level(level))
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            *shared,
            structlog.processors.format_exc_info,
            structlog.processors.JSONRenderer(),
        ],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
