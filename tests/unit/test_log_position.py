"""Position arithmetic and file names, at the edges of every field."""

import pytest

from rtcommon.log import (
    MAX_OFFSET,
    MAX_ROLL,
    MAX_SESSION,
    PositionError,
    check_position,
    file_name,
    file_start,
    make_position,
    parse_file_name,
    split_position,
)


def test_log_1_0_starts_at_2_pow_44():
    assert file_start(1, 0) == 2**44
    assert split_position(2**44) == (1, 0, 0)
    assert make_position(0, 0, 0) == 0


def test_fields_pack_into_20_14_30_bits():
    assert make_position(0, 0, MAX_OFFSET) == 2**30 - 1
    assert make_position(0, 1, 0) == 2**30
    assert make_position(0, MAX_ROLL, MAX_OFFSET) == 2**44 - 1
    assert make_position(MAX_SESSION, MAX_ROLL, MAX_OFFSET) == 2**64 - 1
    assert split_position(2**64 - 1) == (MAX_SESSION, MAX_ROLL, MAX_OFFSET)


@pytest.mark.parametrize(
    ("session", "roll", "offset"),
    [
        (-1, 0, 0),
        (MAX_SESSION + 1, 0, 0),
        (0, -1, 0),
        (0, MAX_ROLL + 1, 0),
        (0, 0, -1),
        (0, 0, MAX_OFFSET + 1),
    ],
)
def test_out_of_range_parts_are_refused(session, roll, offset):
    with pytest.raises(PositionError, match="outside"):
        make_position(session, roll, offset)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.5, "12", None, True])
def test_malformed_positions_are_refused(bad):
    with pytest.raises(PositionError):
        check_position(bad)
    with pytest.raises(PositionError):
        split_position(bad)


def test_position_error_is_a_value_error():
    with pytest.raises(ValueError):
        make_position(0, 0, -1)


def test_file_names_round_trip():
    assert file_name(3, 17) == "log.3.17"
    assert parse_file_name("log.3.17") == (3, 17)
    assert parse_file_name(f"log.{MAX_SESSION}.{MAX_ROLL}") == (MAX_SESSION, MAX_ROLL)


@pytest.mark.parametrize(
    "name",
    [
        "log.1",
        "log.a.0",
        "log.01.0",
        "log.1.0.tmp",
        "xlog.1.0",
        f"log.{MAX_SESSION + 1}.0",
        "log.-1.0",
        ".session",
    ],
)
def test_bad_file_names_are_refused(name):
    with pytest.raises(PositionError):
        parse_file_name(name)
