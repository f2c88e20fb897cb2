"""The output file: resumable after a kill at any byte, and never shared by two runs."""

import json

import pytest

from batch.output import OutputError, OutputWriter, scan


def line(custom_id, status=200, error=None):
    response = None if status is None else {"status_code": status, "request_id": "r", "body": {}}
    return json.dumps({"id": "x", "custom_id": custom_id, "response": response, "error": error}) + "\n"


def test_scan_reports_done_and_failed_ids():
    data = (line("a") + line("b", 500) + line("c", None, {"code": "connection_error", "message": "m"})).encode()
    state, complete = scan(data)
    assert state.done == {"a", "b", "c"}
    assert state.failed == {"b", "c"}
    assert complete == len(data) and state.torn_bytes == 0


@pytest.mark.parametrize("cut", [1, 10, -2, -1])
def test_a_torn_final_line_is_cut_off_on_resume(tmp_path, cut):
    whole = line("a") + line("b")
    torn = line("c")[:cut]
    path = tmp_path / "out.jsonl"
    path.write_text(whole + torn)
    writer = OutputWriter(path)
    state = writer.open()
    writer.close()
    assert state.done == {"a", "b"}
    assert state.torn_bytes == len(torn.encode())
    assert path.read_text() == whole


def test_a_corrupt_middle_line_refuses_to_resume(tmp_path):
    path = tmp_path / "out.jsonl"
    path.write_text(line("a") + "not json\n" + line("b"))
    with pytest.raises(OutputError, match="line 2"):
        OutputWriter(path).open()


async def test_lines_are_appended_whole(tmp_path):
    path = tmp_path / "sub" / "out.jsonl"
    writer = OutputWriter(path)
    assert writer.open().done == set()
    await writer.write({"custom_id": "é", "response": None, "error": None})
    await writer.write({"custom_id": "b", "response": None, "error": None})
    writer.close()
    assert [json.loads(raw)["custom_id"] for raw in path.read_text().splitlines()] == ["é", "b"]


def test_two_runs_cannot_share_an_output(tmp_path):
    path = tmp_path / "out.jsonl"
    first = OutputWriter(path)
    first.open()
    try:
        with pytest.raises(OutputError, match="in use"):
            OutputWriter(path).open()
    finally:
        first.close()
    second = OutputWriter(path)
    second.open()  # free again once the first run is gone
    second.close()
