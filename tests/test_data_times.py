"""Time derivations (hour_of_day, weekday) by format: avazu, iso, epoch, epoch_ms, strptime
patterns; errors name file, line, field and format; the presets' output is unchanged."""

from __future__ import annotations

import datetime
import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shaver.cli import main
from shaver.data.encode import RowEncoder
from shaver.data.numbers import BadValue
from shaver.data.prepare import prepare_dataset
from shaver.data.presets import load_preset
from shaver.data.spec import DatasetSpec
from shaver.data.times import time_tokens
from shaver.errors import DataError, SpecError

FIX = Path(__file__).parent / "fixtures" / "data"
SHARED_HEAD = Path("/work/shared/data/avazu/train_head9999.csv")
UTC = datetime.timezone.utc

times = st.datetimes(min_value=datetime.datetime(1971, 1, 1),
                     max_value=datetime.datetime(2199, 12, 31))
zones = st.integers(-14 * 60, 14 * 60).map(lambda m: datetime.timezone(datetime.timedelta(
    minutes=m)))


def expected(kind: str, t: datetime.datetime) -> str:
    return str(t.hour if kind == "hour_of_day" else t.weekday())


def both(values: list[str], fmt: str | None) -> tuple[list[str], list[str]]:
    return time_tokens("hour_of_day", fmt, values), time_tokens("weekday", fmt, values)


# -- each format against Python's datetime --------------------------------------------------
@settings(deadline=None, max_examples=50)
@given(st.lists(times.map(lambda t: t.replace(year=2000 + t.year % 100)), max_size=30))
def test_avazu_is_yymmddhh_in_the_2000s(stamps):
    texts = [t.strftime("%y%m%d%H") for t in stamps]
    hours, days = both(texts, "avazu")
    assert hours == [expected("hour_of_day", t) for t in stamps]
    assert days == [expected("weekday", t) for t in stamps]
    assert both(texts, None) == (hours, days)  # avazu is the default


@settings(deadline=None, max_examples=50)
@given(st.lists(st.tuples(times, st.sampled_from(["T", " "]), st.booleans()), max_size=30))
def test_iso_without_zone_is_the_time_as_written(items):
    texts = [t.isoformat(sep) if frac else t.replace(microsecond=0).isoformat(sep)
             for t, sep, frac in items]
    hours, days = both(texts, "iso")
    assert hours == [expected("hour_of_day", t) for t, _, _ in items]
    assert days == [expected("weekday", t) for t, _, _ in items]


@settings(deadline=None, max_examples=50)
@given(st.lists(st.tuples(times, zones, st.booleans()), max_size=30))
def test_iso_with_a_zone_is_utc(items):
    stamps = [t.replace(tzinfo=z) for t, z, _ in items]
    texts = [s.isoformat().replace("+00:00", "Z") if z else s.isoformat()
             for s, (_, _, z) in zip(stamps, items)]
    hours, days = both(texts, "iso")
    assert hours == [expected("hour_of_day", s.astimezone(UTC)) for s in stamps]
    assert days == [expected("weekday", s.astimezone(UTC)) for s in stamps]


def test_iso_mixes_dates_zones_and_missing():
    texts = ["2017-11-07", "", "2017-11-07 09:30:38", "2017-11-07T22:00-05:00",
             "2017-11-07T09:30:38.25+0800", "2017-11-07T23:59Z", "2017-11-07T09"]
    hours, days = both(texts, "iso")
    assert hours == ["0", "", "9", "3", "1", "23", "9"]
    assert days == ["1", "", "1", "2", "1", "1", "1"]  # 2017-11-07 was a Tuesday


@settings(deadline=None, max_examples=50)
@given(st.lists(st.integers(-(10**9), 7 * 10**9), max_size=30), st.booleans())
def test_epoch_seconds_and_milliseconds_are_utc(seconds, millis):
    stamps = [datetime.datetime(1970, 1, 1, tzinfo=UTC) + datetime.timedelta(seconds=s)
              for s in seconds]
    texts = [str(s * 1000 + 999) if millis else str(s) for s in seconds]
    hours, days = both(texts, "epoch_ms" if millis else "epoch")
    assert hours == [expected("hour_of_day", t) for t in stamps]
    assert days == [expected("weekday", t) for t in stamps]


def test_epoch_decimals_round_down():
    assert both(["1510047038.9", "-0.5", "3599.999"], "epoch") == (["9", "23", "0"],
                                                                   ["1", "2", "3"])


@settings(deadline=None, max_examples=50)
@given(st.lists(times, max_size=20))
def test_strptime_pattern(stamps):
    pattern = "%d/%m/%Y %H:%M"
    hours, days = both([t.strftime(pattern) for t in stamps], pattern)
    assert hours == [expected("hour_of_day", t) for t in stamps]
    assert days == [expected("weekday", t) for t in stamps]


def test_strptime_pattern_with_zone_is_utc():
    assert both(["2017-11-07 01:30 +0300"], "%Y-%m-%d %H:%M %z") == (["22"], ["0"])


# -- bad values -----------------------------------------------------------------------------
@pytest.mark.parametrize("fmt,texts,index,message", [
    ("avazu", ["14102100", "", "141021"], 2, "'141021' is not a YYMMDDHH time (format avazu)"),
    ("avazu", ["14102124"], 0, "'14102124' is not a YYMMDDHH time (format avazu)"),
    ("avazu", ["14023001"], 0, "'14023001' is not a YYMMDDHH time (format avazu)"),
    ("avazu", ["1410210a"], 0, "'1410210a' is not a YYMMDDHH time (format avazu)"),
    ("avazu", ["14102100", "+1410210"], 1, "'+1410210' is not a YYMMDDHH time (format avazu)"),
    ("avazu", ["-1410210"], 0, "'-1410210' is not a YYMMDDHH time (format avazu)"),
    ("avazu", ["141021000"], 0, "'141021000' is not a YYMMDDHH time (format avazu)"),
    ("iso", ["2017-11-07", "", "x", "y"], 2, "'x' is not an ISO 8601 time (format iso)"),
    ("iso", ["2017-02-30T01:00+01:00"], 0,
     "'2017-02-30T01:00+01:00' is not an ISO 8601 time (format iso)"),
    ("iso", ["14102100"], 0, "'14102100' is not an ISO 8601 time (format iso)"),
    ("epoch", ["1", "1,5"], 1, "'1,5' is not epoch seconds (format epoch)"),
    ("epoch", ["1", "1510047038000"], 1, "'1510047038000' is not epoch seconds (format epoch: "
     "past the year 9999; milliseconds? use format epoch_ms)"),
    ("epoch", ["nan"], 0, "'nan' is not epoch seconds (format epoch: not finite)"),
    ("epoch_ms", ["abc"], 0, "'abc' is not epoch milliseconds (format epoch_ms)"),
    ("epoch_ms", ["1e300"], 0,
     "'1e300' is not epoch milliseconds (format epoch_ms: past the year 9999)"),
    ("%d/%m/%Y", ["01/01/2017", "2017-01-01"], 1,
     "'2017-01-01' does not match the time format '%d/%m/%Y'"),
])
def test_bad_value_names_the_value_and_format(fmt, texts, index, message):
    for kind in ("hour_of_day", "weekday"):
        with pytest.raises(BadValue) as err:
            time_tokens(kind, fmt, texts)
        assert (err.value.index, err.value.message) == (index, message)


BAD_ISO = ("bad", "2017-13-01", "2017-02-30T01:00Z", "2017-11-07T09:30+25:00")


@settings(deadline=None, max_examples=50)
@given(st.lists(st.sampled_from(["2017-11-07 09:30", "", "2017-11-07T10:30+01:00", *BAD_ISO]),
                max_size=40))
def test_bisection_finds_the_first_bad_value(texts):
    bad = [i for i, t in enumerate(texts) if t in BAD_ISO]
    if not bad:
        assert both(texts, "iso")[0] == ["9" if t else "" for t in texts]
        return
    with pytest.raises(BadValue) as err:
        time_tokens("hour_of_day", "iso", texts)
    assert err.value.index == bad[0]


# -- the spec -------------------------------------------------------------------------------
def _spec(**field) -> dict:
    return {"input": {"format": "csv", "header": True}, "label": {"column": "y"},
            "fields": [{"name": "hour", "column": "t", "derive": "hour_of_day", **field}]}


def test_spec_format_round_trips_and_is_absent_by_default():
    spec = DatasetSpec.from_dict(_spec(format="iso"))
    assert spec.fields[0].format == "iso"
    assert DatasetSpec.from_dict(spec.to_dict()) == spec
    plain = DatasetSpec.from_dict(_spec())
    assert plain.fields[0].format is None and "format" not in plain.to_dict()["fields"][0]
    assert DatasetSpec.from_dict(_spec(format="%d.%m.%Y %H")).fields[0].format == "%d.%m.%Y %H"


def test_readme_time_fields_validate():
    import yaml

    from test_readme import fenced_blocks

    (block,) = [b for b in fenced_blocks("yaml") if "click_time" in b]
    fields = yaml.safe_load(block)["fields"]
    spec = DatasetSpec.from_dict({"input": {"columns": ["y", "click_time"]},
                                  "label": {"column": "y"}, "fields": fields})
    assert [(f.derive, f.format) for f in spec.fields] == [("hour_of_day", "iso"),
                                                           ("weekday", "iso")]


@pytest.mark.parametrize("field,message", [
    ({"format": "unix"}, "fields[0].format: 'unix' is not one of avazu, iso, epoch, epoch_ms "
     "nor a strptime pattern (with %)"),
    ({"format": 3}, "fields[0].format: 3 is not one of avazu, iso, epoch, epoch_ms nor a "
     "strptime pattern (with %)"),
    ({"derive": "first_token", "format": "iso"},
     "fields[0].format: a format needs derive: hour_of_day or weekday"),
    ({"derive": None, "format": "iso"}, "fields[0].format: a format needs derive: hour_of_day or weekday"),
])
def test_spec_refuses_bad_formats(field, message):
    with pytest.raises(SpecError) as err:
        DatasetSpec.from_dict(_spec(**field))
    assert str(err.value) == message


# -- preparation ----------------------------------------------------------------------------
ISO_CSV = ("id,click_time,y\n"
           "1,2017-11-07 09:30:38,1\n"
           "2,2017-11-07 23:01:00,0\n"
           "3,2017-11-08 09:00:00,0\n"
           "4,,1\n"
           "5,2017-11-09T04:00:00+08:00,0\n")


def _iso_spec(fmt="iso") -> dict:
    return {"input": {"format": "csv", "header": True}, "label": {"column": "y"}, "min_count": 1,
            "fields": [{"name": "id"},
                       {"name": "hour", "column": "click_time", "derive": "hour_of_day",
                        "format": fmt},
                       {"name": "day", "column": "click_time", "derive": "weekday",
                        "format": fmt}]}


def _tokens(ds, field: str) -> list[str]:
    """The token of every row, in file order."""
    rows, tokens = [], []
    for split in ("train", "val", "test"):
        ids, _ = ds.arrays(split)
        col = ds.field_names.index(field)
        rows += np.load(ds.path / f"{split}_rows.npy").tolist()
        tokens += [ds.vocabularies[field][int(i) - int(ds.offsets[col])] for i in ids[:, col]]
    return [t for _, t in sorted(zip(rows, tokens))]


def test_iso_timestamped_csv_prepares(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text(ISO_CSV)
    ds = prepare_dataset(_iso_spec(), path, tmp_path / "o", quiet=True)
    assert _tokens(ds, "hour") == ["9", "23", "9", "", "20"]  # +08:00 -> 20:00 UTC on the 8th
    assert _tokens(ds, "day") == ["1", "1", "2", "", "2"]
    assert ds.meta["spec"]["fields"][1]["format"] == "iso"
    rows = [{"id": "9", "click_time": "2017-11-08T09:59:00"},
            {"id": "", "click_time": "2017-11-07"}]
    ids = RowEncoder.from_dataset(ds).encode(rows)  # deployment derives the same way
    hour_col, day_col = ds.field_names.index("hour"), ds.field_names.index("day")
    assert ds.vocabularies["hour"][ids[0, hour_col] - ds.offsets[hour_col]] == "9"
    assert ds.vocabularies["day"][ids[0, day_col] - ds.offsets[day_col]] == "2"
    assert ids[1, hour_col] == ds.offsets[hour_col]  # hour 0 never seen: OOV


def test_bad_time_names_file_line_field_and_format(tmp_path):
    path = tmp_path / "clicks.csv"
    path.write_text(ISO_CSV + "6,07/11/2017 09:30,1\n7,2017-11-07 10:00:00,0\n")
    with pytest.raises(DataError) as err:
        prepare_dataset(_iso_spec(), path, tmp_path / "o", quiet=True)
    assert str(err.value) == (f"{path}:7: field 'hour': '07/11/2017 09:30' is not an ISO 8601 "
                              "time (format iso)")
    rc = main(["data", "prepare", "--spec", str(_write_spec(tmp_path)), "--input", str(path),
               "--out", str(tmp_path / "skipped"), "--skip-bad-lines", "--quiet"])
    assert rc == 0
    meta = json.loads((tmp_path / "skipped" / "meta.json").read_text())
    assert meta["skipped_lines"] == 1 and sum(meta["rows"].values()) == 6
    assert "07/11/2017 09:30" in json.dumps(meta["skipped_examples"])


def _write_spec(tmp_path: Path) -> Path:
    import yaml

    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(_iso_spec()))
    return path


def test_epoch_and_pattern_prepare_like_iso(tmp_path):
    base = prepare_dataset(_iso_spec(), _write(tmp_path / "iso.csv", ISO_CSV), tmp_path / "a",
                           quiet=True)
    epoch = ["1510047038", "1510095660", "1510131600", "", "1510171200"]  # the same instants
    lines = ISO_CSV.splitlines()
    text = "\n".join([lines[0]] + [",".join([ln.split(",")[0], e, ln.split(",")[2]])
                                   for ln, e in zip(lines[1:], epoch)]) + "\n"
    ds = prepare_dataset(_iso_spec("epoch"), _write(tmp_path / "e.csv", text), tmp_path / "b",
                         quiet=True)
    assert _tokens(ds, "hour") == _tokens(base, "hour")
    assert _tokens(ds, "day") == _tokens(base, "day")


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


# -- the presets' prepared data is byte-identical to before formats ---------------------------
def avazu_like(path: Path, rows: int = 2000) -> Path:
    """An Avazu-format CSV from arithmetic only (no RNG): hours over a century of days."""
    cols = load_preset("avazu").input.columns
    lines = [",".join(cols)]
    for i in range(rows):
        hour = f"{(i * 7) % 100:02d}{i % 12 + 1:02d}{(i * 5) % 28 + 1:02d}{(i * 11) % 24:02d}"
        rest = [format((i * (k + 3) * 2654435761) % (5 + 3 * k), "x")
                for k in range(len(cols) - 3)]
        lines.append(",".join([str(10**18 + i), str(int(i % 7 == 0 or i % 5 == 1)), hour,
                               *rest]))
    path.write_text("\n".join(lines) + "\n")
    return path


def prepared_digest(path: Path) -> str:
    """sha256 of a prepared dataset's content: every file's checksum, spec, dims and counts
    (meta.json's paths and library version left out)."""
    meta = json.loads((path / "meta.json").read_text())
    keep = {k: meta[k] for k in ("checksums", "spec", "field_names", "field_dims", "rows",
                                 "skipped_lines", "quantile_edges", "oov_token", "fingerprint")}
    return hashlib.sha256(json.dumps(keep, sort_keys=True).encode()).hexdigest()


#: Digests of the avazu preset's output, computed with the code before time formats
#: (main at 77dff1c).
BEFORE = {
    "generated": "f94064c086ee0ccc681c243f77ed22947444810dd36926b67af34a3a1b777fbe",
    "fixture": "fe66774009f5561c2c1715c04ba10d9d4721184f730e6f82ea34179e2b41a54c",
    "shared-head": "f1af2e24214f9690057a299b35e593192b32d8ca694cbce3e04dd97427283c4e",
}


@pytest.mark.parametrize("source", ["generated", "fixture", "shared-head"])
def test_avazu_preset_output_is_unchanged(tmp_path, source):
    if source == "generated":
        path = avazu_like(tmp_path / "avazu.csv")
    elif source == "fixture":
        path = FIX / "avazu_small.csv"
    else:
        path = SHARED_HEAD
        if not path.is_file():
            pytest.skip(f"{path} not present")
    ds = prepare_dataset("avazu", path, tmp_path / "o", quiet=True)
    if source == "generated":
        assert len(ds.vocabularies["weekday"]) == 8 and len(ds.vocabularies["hour_of_day"]) == 25
    assert prepared_digest(ds.path) == BEFORE[source]
