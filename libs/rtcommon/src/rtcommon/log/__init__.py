"""rtcommon.log: the RT log format, and the reader and writer of log directories.

What it owns: records (``_record``), positions and file names (``_position``),
payload codecs (``_codec``), the sans-I/O decoder (``_decoder``), the files of a
log directory (``_files``), the writer (``_writer``) and the reader (``_reader``).
``docs/log-format.md`` specifies the bytes.

Errors derive from :class:`LogError` (the tree is drawn in ``_errors``).
"""

from ._codec import FLAG_TIMEOUT, FLAG_TUPLE, Codec, decode_payload, encode_payload, message_tags
from ._decoder import NEED_DATA, SEALED, Corrupt, RecordDecoder
from ._errors import (
    CodecError,
    LogDirectoryError,
    LogError,
    LogLockedError,
    LogWriteError,
    PositionError,
    PositionPastEndError,
    RecordError,
    RecordTooLargeError,
)
from ._files import (
    DirectoryLock,
    archive_log_files,
    fsync_directory,
    list_log_files,
    read_session,
    write_file_atomically,
)
from ._mirror import LogMirror, MirrorError, PendingSync, read_mirror_start
from ._position import (
    MAX_FILE_SIZE,
    MAX_OFFSET,
    MAX_ROLL,
    MAX_SESSION,
    check_position,
    file_name,
    file_start,
    make_position,
    next_file,
    parse_file_name,
    split_position,
)
from ._reader import (
    BADTAIL,
    RESET,
    Chunk,
    LogEvent,
    LogReader,
    file_is_sealed,
    read_log,
    starts_a_record,
)
from ._record import (
    HEADER_SIZE,
    MAX_RECORD_SIZE,
    SEAL_SIZE,
    SEAL_TRAILER,
    Record,
    TagFilter,
    encode_message,
    encode_record,
    scan,
)
from ._watch import DirectoryWatcher
from ._writer import DEFAULT_ROLL_SIZE, MIN_ROLL_SIZE, LogWriter, SyncPolicy

__all__ = [
    "BADTAIL",
    "DEFAULT_ROLL_SIZE",
    "FLAG_TIMEOUT",
    "FLAG_TUPLE",
    "HEADER_SIZE",
    "MAX_FILE_SIZE",
    "MAX_OFFSET",
    "MAX_RECORD_SIZE",
    "MAX_ROLL",
    "MAX_SESSION",
    "MIN_ROLL_SIZE",
    "NEED_DATA",
    "RESET",
    "SEALED",
    "SEAL_SIZE",
    "SEAL_TRAILER",
    "Chunk",
    "Codec",
    "CodecError",
    "Corrupt",
    "DirectoryLock",
    "DirectoryWatcher",
    "LogDirectoryError",
    "LogError",
    "LogEvent",
    "LogLockedError",
    "LogMirror",
    "LogReader",
    "LogWriteError",
    "LogWriter",
    "MirrorError",
    "PendingSync",
    "PositionError",
    "PositionPastEndError",
    "Record",
    "RecordDecoder",
    "RecordError",
    "RecordTooLargeError",
    "SyncPolicy",
    "TagFilter",
    "archive_log_files",
    "check_position",
    "decode_payload",
    "encode_message",
    "encode_payload",
    "encode_record",
    "file_is_sealed",
    "file_name",
    "file_start",
    "fsync_directory",
    "list_log_files",
    "make_position",
    "message_tags",
    "next_file",
    "parse_file_name",
    "read_log",
    "read_mirror_start",
    "read_session",
    "scan",
    "split_position",
    "starts_a_record",
    "write_file_atomically",
]
