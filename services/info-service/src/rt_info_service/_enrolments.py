"""Enrolled external clients, kept in one file (``enrolments.json``, mode 0600).

An enrolment is a client's name (the first part of its streams' names, unique across
the cluster), the OAuth2 client that made it (only that client reads or removes it),
the topics it may insert, and its current certificate and key. The pair is issued at
enrolment and again when asked for with less than half its life left; every serial
issued is remembered until it expires, so removing an enrolment revokes them all.
"""

from __future__ import annotations

import datetime
import secrets
import threading
import time
from pathlib import Path

import msgspec

from rtcommon.log import write_file_atomically
from rtcommon.tls import CAStore

__all__ = ["Enrolment", "EnrolmentConflict", "Enrolments"]


class EnrolmentConflict(Exception):
    """A name enrolled by another client (409)."""


class Enrolment(msgspec.Struct, kw_only=True):
    id: str
    name: str
    client_id: str
    topics: tuple[str, ...]
    cert: str = ""
    key: str = ""
    issued_at: float = 0.0
    not_after: float = 0.0
    #: every serial issued to this enrolment and not yet expired: (serial, end)
    serials: list[tuple[int, float]] = []


class Enrolments:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        try:
            listed = msgspec.json.decode(path.read_bytes(), type=list[Enrolment])
        except FileNotFoundError:
            listed = []
        self._by_id = {enrolment.id: enrolment for enrolment in listed}

    def enrol(
        self, client_id: str, name: str, topics: tuple[str, ...]
    ) -> tuple[Enrolment, list[tuple[int, float]]]:
        """Enrol ``name`` for ``client_id``. The same client enrolling the same name again
        gets the same enrolment, with these topics; the serials of certificates issued
        for other topics are returned for revoking."""
        with self._lock:
            held = next((e for e in self._by_id.values() if e.name == name), None)
            if held is not None and held.client_id != client_id:
                raise EnrolmentConflict(f"the name {name!r} is enrolled by another client")
            if held is not None and held.topics == topics:
                return held, []
            revoked = held.serials if held is not None else []
            enrolment = Enrolment(
                id=held.id if held is not None else secrets.token_hex(16),
                name=name,
                client_id=client_id,
                topics=topics,
                # Kept until they expire: unenrolling revokes them again should the
                # revocation the caller makes now fail.
                serials=list(revoked),
            )
            self._by_id[enrolment.id] = enrolment
            self._save()
            return enrolment, revoked

    def get(self, enrolment_id: str) -> Enrolment | None:
        with self._lock:
            return self._by_id.get(enrolment_id)

    def current_pair(self, enrolment_id: str, store: CAStore, lifetime: float) -> Enrolment:
        """Enrolment ``enrolment_id`` with a certificate that has at least half its life
        ahead (issued now if needed, under the lock: a certificate issued to an enrolment
        removed meanwhile would escape revocation). KeyError if it is gone."""
        now = time.time()
        with self._lock:
            enrolment = self._by_id[enrolment_id]
            if enrolment.not_after - now > (enrolment.not_after - enrolment.issued_at) / 2:
                return enrolment
            pair = store.ca().issue_client(
                enrolment.name, enrolment.topics, datetime.timedelta(seconds=lifetime)
            )
            enrolment.cert, enrolment.key = pair.cert.decode(), pair.key.decode()
            enrolment.issued_at, enrolment.not_after = now, pair.not_after
            enrolment.serials = [
                (serial, end) for serial, end in enrolment.serials if end > now
            ] + [(pair.serial, pair.not_after)]
            self._save()
            return enrolment

    def remove(self, enrolment_id: str) -> Enrolment | None:
        with self._lock:
            enrolment = self._by_id.pop(enrolment_id, None)
            if enrolment is not None:
                self._save()
            return enrolment

    def _save(self) -> None:
        data = msgspec.json.encode(list(self._by_id.values()))
        write_file_atomically(self.path, data, mode=0o600)
