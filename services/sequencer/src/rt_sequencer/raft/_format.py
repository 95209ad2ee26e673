"""One-line text forms of entries, messages and Ready batches, for traces and tests.

What it owns: the human-readable notation shared by the simulator's traces and the
scripted interaction tests, e.g. ``1->2 APPEND Term:2 Log:1/11 Commit:11 Entries:[2/12 ""]``.
"""

from __future__ import annotations

from collections.abc import Sequence

from ._types import Entry, Message, MessageType, Ready

_RESPONSES = (
    MessageType.VOTE_RESPONSE,
    MessageType.PRE_VOTE_RESPONSE,
    MessageType.HEARTBEAT_RESPONSE,
)


def format_entry(entry: Entry) -> str:
    return f'{entry.term}/{entry.index} "{entry.data.decode("utf-8", "backslashreplace")}"'


def format_entries(entries: Sequence[Entry], max_shown: int | None = None) -> str:
    if max_shown is not None and len(entries) > max_shown:
        first, last = entries[0], entries[-1]
        return f"[{first.term}/{first.index} .. {last.term}/{last.index} ({len(entries)} entries)]"
    return "[" + ", ".join(format_entry(e) for e in entries) + "]"


def format_message(message: Message, max_entries: int | None = None) -> str:
    kind = message.type
    parts = [f"{message.src}->{message.dst} {kind.name}"]
    if kind is not MessageType.PROPOSE:
        parts.append(f"Term:{message.term}")
    if kind in (MessageType.APPEND, MessageType.COMMIT, MessageType.VOTE, MessageType.PRE_VOTE):
        parts.append(f"Log:{message.log_term}/{message.index}")
    if kind in (MessageType.APPEND, MessageType.COMMIT, MessageType.HEARTBEAT):
        parts.append(f"Commit:{message.commit}")
    if kind is MessageType.APPEND_RESPONSE:
        parts.append(f"Index:{message.index}")
        if message.reject:
            parts.append(f"Rejected Hint:{message.log_term}/{message.reject_hint}")
    elif kind in _RESPONSES and message.reject:
        parts.append("Rejected")
    if kind is MessageType.SNAPSHOT and message.snapshot is not None:
        parts.append(f"Snapshot:{message.snapshot.term}/{message.snapshot.index}")
    if message.entries:
        parts.append("Entries:" + format_entries(message.entries, max_entries))
    return " ".join(parts)


def format_ready(ready: Ready, max_entries: int | None = None) -> list[str]:
    lines = [f"Ready MustSync={str(ready.must_sync).lower()}:"]
    if ready.soft_state is not None:
        soft = ready.soft_state
        lines.append(f"State:{soft.role.value} Lead:{soft.leader_id}")
    if ready.hard_state is not None:
        hard = ready.hard_state
        lines.append(f"HardState Term:{hard.term} Vote:{hard.vote} Commit:{hard.commit}")
    if ready.snapshot is not None:
        lines.append(f"Snapshot Index:{ready.snapshot.index} Term:{ready.snapshot.term}")
    for title, entries in (("Entries", ready.entries), ("Committed", ready.committed_entries)):
        if not entries:
            continue
        lines.append(f"{title}:")
        if max_entries is not None and len(entries) > max_entries:
            lines.append("  " + format_entries(entries, max_entries))
        else:
            lines.extend("  " + format_entry(e) for e in entries)
    if ready.messages:
        lines.append("Messages:")
        lines.extend("  " + format_message(m, max_entries) for m in ready.messages)
    return lines
