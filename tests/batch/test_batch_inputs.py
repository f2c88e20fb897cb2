"""Input parsing: every bad line is reported with its number; good lines survive it."""

import json

from batch_support import batch_line, write_jsonl

from batch.inputs import BatchRequest, InputProblem, collect, parse_line, read_input


def numbered(*texts):
    return list(enumerate(texts, start=1))


def test_a_valid_line_becomes_a_request():
    request = parse_line(json.dumps(batch_line("a")), 7)
    assert isinstance(request, BatchRequest)
    assert (request.custom_id, request.method, request.url, request.line) == ("a", "POST", "/v1/chat/completions", 7)


def test_bad_lines_are_reported_by_number_and_the_rest_kept():
    good = json.dumps(batch_line("good"))
    parsed = collect(numbered(
        good,
        "{not json",
        "[1, 2]",
        json.dumps({"method": "POST", "url": "/v1/chat/completions", "body": {}}),  # no custom_id
        json.dumps({**batch_line("get"), "method": "GET"}),
        json.dumps({**batch_line("nourl"), "url": "http://elsewhere/v1/chat"}),
        json.dumps({**batch_line("nobody"), "body": "text"}),
        "",
        json.dumps(batch_line("good2")),
    ))
    assert [r.custom_id for r in parsed.requests] == ["good", "good2"]
    assert [p.line for p in parsed.problems] == [2, 3, 4]
    assert "not valid JSON" in parsed.problems[0].message
    # Lines that name a custom_id are kept apart: they still get an error line in the output.
    assert [(p.line, p.custom_id) for p in parsed.rejected] == [(5, "get"), (6, "nourl"), (7, "nobody")]
    assert all(isinstance(p, InputProblem) for p in parsed.rejected)


def test_duplicate_custom_ids_run_once_and_are_reported():
    line = json.dumps(batch_line("same"))
    parsed = collect(numbered(line, json.dumps(batch_line("other")), line, json.dumps({**batch_line("same"), "url": 5})))
    assert [r.custom_id for r in parsed.requests] == ["same", "other"]
    assert parsed.duplicates == {"same": [3, 4]}
    assert not parsed.rejected


def test_read_input_survives_bad_utf8(tmp_path):
    path = tmp_path / "in.jsonl"
    write_jsonl(path, [batch_line("a")])
    with open(path, "ab") as handle:
        handle.write(b"\xff\xfe not utf8\n")
    parsed = read_input(path)
    assert [r.custom_id for r in parsed.requests] == ["a"]
    assert [p.line for p in parsed.problems] == [2]
