"""The command line against the fake server: input problems, resume, simple mode, SIGKILL."""

import json
import random
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
from batch_support import FakeServer, batch_line, read_output, run_killing_at_random, write_jsonl

from batch.cli import main

REPO = Path(__file__).resolve().parents[2]


def cli(server, *args):
    return main([*map(str, args), "--base-url", server.base_url, "--no-progress", "--retry-base-delay", "0.01"])


def test_help_runs_as_a_module_and_script():
    result = subprocess.run([sys.executable, "-m", "batch", "--help"], cwd=REPO, capture_output=True, text=True, check=True)
    for flag in ("--output", "--base-url", "--api-key", "--concurrency", "--images", "--prompt", "--model",
                 "--max-tokens", "--max-tiles", "--num-frames", "OPENAI_BASE_URL", "OPENAI_API_KEY"):
        assert flag in result.stdout
    assert Path(sys.executable).with_name("internvl-batch").exists()


@pytest.mark.parametrize("args", [[], ["in.jsonl", "--images", "d"], ["--images", "d"], ["in.jsonl", "--prompt", "p"]])
def test_contradictory_arguments_are_usage_errors(args, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([*args, "-o", "out.jsonl"])
    assert exit_info.value.code == 2


def test_malformed_lines_are_reported_by_number_and_the_rest_processed(fake_server, tmp_path, capsys):
    source, out, summary = tmp_path / "in.jsonl", tmp_path / "out.jsonl", tmp_path / "summary.json"
    write_jsonl(source, [
        batch_line("a"),
        '{"custom_id": "broken", ',
        {**batch_line("wrong-method"), "method": "GET"},
        batch_line("b"),
        batch_line("a", text="again"),
        "42",
        batch_line("c"),
    ])
    assert cli(fake_server, source, "-o", out, "--summary-json", summary) == 1
    err = capsys.readouterr().err
    assert "input line 2: not valid JSON" in err
    assert "input line 3 (custom_id 'wrong-method'): `method` must be POST" in err
    assert "input line 6: not a JSON object" in err
    assert "duplicate custom_id 'a' on input lines 5" in err
    records = {r["custom_id"]: r for r in read_output(out)}
    assert sorted(records) == ["a", "b", "c", "wrong-method"]
    assert records["wrong-method"]["error"]["code"] == "invalid_request"
    assert all(records[c]["response"]["status_code"] == 200 for c in "abc")
    assert len(fake_server.received) == 3
    report = json.loads(summary.read_text())
    assert [m["line"] for m in report["malformed_lines"]] == [2, 3, 6]
    assert report["duplicate_custom_ids"] == {"a": [5]}
    assert (report["succeeded"], report["failed"]) == (3, 1)


def test_a_rerun_skips_what_is_written_and_redoes_a_torn_line(fake_server, tmp_path, capsys):
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, [batch_line(f"r{i}") for i in range(6)])
    assert cli(fake_server, source, "-o", out) == 0
    assert len(fake_server.received) == 6
    assert cli(fake_server, source, "-o", out) == 0
    assert len(fake_server.received) == 6  # nothing left to do
    # A kill mid-append: the last line is cut short.
    lines = out.read_bytes().splitlines(keepends=True)
    torn_id = json.loads(lines[-1])["custom_id"]
    out.write_bytes(b"".join(lines[:-1]) + lines[-1][:15])
    assert cli(fake_server, source, "-o", out) == 0
    assert [entry["body"]["messages"] for entry in fake_server.received[6:]] == [
        batch_line(torn_id)["body"]["messages"]]
    assert Counter(r["custom_id"] for r in read_output(out)) == {f"r{i}": 1 for i in range(6)}
    assert "dropped a torn final output line" in capsys.readouterr().err


def test_env_vars_give_base_url_and_key(make_fake_server, tmp_path, monkeypatch):
    server = make_fake_server(api_key="secret")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "secret")
    write_jsonl(tmp_path / "in.jsonl", [batch_line("a")])
    assert main([str(tmp_path / "in.jsonl"), "-o", str(tmp_path / "out.jsonl"), "--no-progress"]) == 0
    assert server.received[0]["auth"] == "Bearer secret"


def test_simple_mode_one_request_per_media_file(fake_server, tmp_path):
    media = tmp_path / "media"
    (media / "sub").mkdir(parents=True)
    (media / "a.png").write_bytes(b"A")
    (media / "sub" / "b.JPG").write_bytes(b"B")
    (media / "clip.mp4").write_bytes(b"V")
    (media / "notes.txt").write_text("not media")
    out = tmp_path / "out.jsonl"
    assert cli(fake_server, "--images", media, "--prompt", "Describe.", "-o", out, "--max-tokens", 3,
               "--max-tiles", 2, "--num-frames", 4, "--system", "Be brief.") == 0
    ids = sorted(r["custom_id"] for r in read_output(out))
    assert ids == sorted(f"{media.as_posix()}/{name}" for name in ("a.png", "sub/b.JPG", "clip.mp4"))
    assert len(fake_server.received) == 3
    for body in fake_server.bodies():
        assert body["model"] == "fake-model" and body["max_tokens"] == 3
        assert body["messages"][0] == {"role": "system", "content": "Be brief."}
        media_part, text_part = body["messages"][1]["content"]
        assert text_part == {"type": "text", "text": "Describe."}
        if media_part["type"] == "video_url":
            assert media_part["video_url"]["url"].startswith("data:video/mp4;base64,")
            assert media_part["video_url"]["num_frames"] == 4
        else:
            assert media_part["image_url"]["url"].startswith("data:image/")
            assert media_part["image_url"]["max_tiles"] == 2
    # A glob selects a subset; already-done files are skipped.
    assert cli(fake_server, "--images", f"{media}/*.png", "--prompt", "Describe.", "-o", out) == 0
    assert len(fake_server.received) == 3


def test_an_output_in_use_is_refused(fake_server, tmp_path, capsys):
    from batch.output import OutputWriter

    write_jsonl(tmp_path / "in.jsonl", [batch_line("a")])
    holder = OutputWriter(tmp_path / "out.jsonl")
    holder.open()
    try:
        assert cli(fake_server, tmp_path / "in.jsonl", "-o", tmp_path / "out.jsonl") == 2
    finally:
        holder.close()
    assert "in use" in capsys.readouterr().err


def test_sigkill_at_random_moments_then_resume_gives_each_id_exactly_once(tmp_path):
    ids = [f"k{i:03d}" for i in range(80)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, [batch_line(custom_id) for custom_id in ids])
    with FakeServer(delay_s=0.05) as server:
        command = [sys.executable, "-m", "batch", str(source), "-o", str(out), "--base-url", server.base_url,
                   "--concurrency", "8", "--no-progress"]
        process, kills = run_killing_at_random(
            command, cwd=REPO, watched=out, rng=random.Random(1234), most_new_lines=12, most_extra_s=0.03
        )
        assert process.returncode == 0
        assert subprocess.run(command, cwd=REPO, capture_output=True, timeout=120, check=False).returncode == 0
    assert kills >= 3
    counts = Counter(record["custom_id"] for record in read_output(out))
    assert counts == Counter(ids)
    assert out.read_bytes().endswith(b"\n")
