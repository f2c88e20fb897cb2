"""--retry-failed: failures sent again and replaced in place, each custom_id once, the output
rewritten atomically (old file or complete new one after a crash or a kill), and how it
composes with resuming and simple mode."""

import json
import os
import random
import socket
import sys
from collections import Counter
from pathlib import Path

import pytest
from batch_support import FakeServer, batch_line, make_png, read_output, run_killing_at_random, write_jsonl

from batch.cli import main

REPO = Path(__file__).resolve().parents[2]


def cli(base_url, *args):
    return main([*map(str, args), "--base-url", base_url, "--no-progress", "--retry-base-delay", "0.01"])


def scripted(custom_id, script):
    return batch_line(custom_id, fake={"key": custom_id, "script": script})


def by_id(path):
    return {record["custom_id"]: record for record in read_output(path)}


def is_ok(record):
    return record["error"] is None and record["response"]["status_code"] == 200


def sent_ids(server, start=0):
    return Counter(body["fake"]["key"] if "fake" in body else body["messages"][0]["content"]
                   for body in server.bodies()[start:])


def closed_port_url():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{sock.getsockname()[1]}/v1"


@pytest.fixture
def failed_run(fake_server, tmp_path):
    """A finished run with two successes and three kinds of failure: a 400 that will pass
    next time, a 400 that will fail again, and a dropped connection (no retries allowed)."""
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    write_jsonl(source, [batch_line("ok1", text="ok1"), scripted("fixed", ["400"]), scripted("stubborn", ["400", "400"]),
                         batch_line("ok2", text="ok2"), scripted("dropped", ["drop"])])
    # One at a time: the output's line order is the input's.
    assert cli(fake_server.base_url, source, "-o", out, "--max-retries", 0, "--concurrency", 1) == 1
    records = by_id(out)
    assert [c for c, r in records.items() if not is_ok(r)] == ["fixed", "stubborn", "dropped"]
    return source, out


def test_only_failures_are_sent_again_and_replaced_in_place(fake_server, failed_run, tmp_path):
    source, out = failed_run
    before = out.read_bytes().splitlines(keepends=True)
    old = by_id(out)
    sent = len(fake_server.received)
    assert cli(fake_server.base_url, source, "-o", out, "--max-retries", 0, "--retry-failed",
               "--summary-json", tmp_path / "s.json") == 1  # "stubborn" failed again
    after = out.read_bytes().splitlines(keepends=True)
    records = by_id(out)
    assert sent_ids(fake_server, sent) == {"fixed": 1, "stubborn": 1, "dropped": 1}
    assert [json.loads(raw)["custom_id"] for raw in after] == ["ok1", "fixed", "stubborn", "ok2", "dropped"]
    assert after[0] == before[0] and after[3] == before[3]  # successes kept byte for byte
    assert is_ok(records["fixed"]) and is_ok(records["dropped"])
    assert records["stubborn"]["response"]["status_code"] == 400
    assert records["stubborn"]["id"] != old["stubborn"]["id"]  # the new error, not the old line
    assert not (tmp_path / "out.jsonl.retry-journal").exists() and not (tmp_path / "out.jsonl.rewrite-tmp").exists()
    report = json.loads((tmp_path / "s.json").read_text())
    assert (report["retried_failures"], report["succeeded"], report["failed"], report["skipped"]) == (3, 2, 1, 2)
    # Again: only what still fails goes out, and now it passes.
    assert cli(fake_server.base_url, source, "-o", out, "--retry-failed") == 0
    assert sent_ids(fake_server, sent + 3) == {"stubborn": 1}
    assert Counter(r["custom_id"] for r in read_output(out)) == {c: 1 for c in ("ok1", "fixed", "stubborn", "ok2", "dropped")}
    assert all(is_ok(r) for r in read_output(out))


def test_a_plain_rerun_does_not_touch_failures(fake_server, failed_run, capsys):
    source, out = failed_run
    before, sent = out.read_bytes(), len(fake_server.received)
    capsys.readouterr()
    assert cli(fake_server.base_url, source, "-o", out) == 0
    assert out.read_bytes() == before and len(fake_server.received) == sent
    assert "rerun with --retry-failed" in capsys.readouterr().err


def test_a_crash_between_write_and_rename_leaves_the_old_file_and_the_rerun_sends_nothing_twice(
        fake_server, failed_run, tmp_path, monkeypatch, capsys):
    source, out = failed_run
    before, sent = out.read_bytes(), len(fake_server.received)
    real_replace = os.replace

    def crash(src, dst, *args, **kwargs):
        if Path(dst) == out:
            raise OSError(28, "No space left on device (simulated, before the rename)")
        return real_replace(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "replace", crash)
    assert cli(fake_server.base_url, source, "-o", out, "--retry-failed", "--max-retries", 0) == 2
    monkeypatch.setattr(os, "replace", real_replace)
    assert out.read_bytes() == before  # not a byte changed
    assert (tmp_path / "out.jsonl.rewrite-tmp").exists()  # the new file was complete, only not renamed
    journal = read_output(tmp_path / "out.jsonl.retry-journal")
    assert sorted(r["custom_id"] for r in journal) == ["dropped", "fixed", "stubborn"]
    assert sent_ids(fake_server, sent) == {"fixed": 1, "stubborn": 1, "dropped": 1}

    # A plain run meanwhile: appends a new custom_id, leaves the failures and the journal alone.
    write_jsonl(source, [*map(json.loads, source.read_text().splitlines()), batch_line("late", text="late")])
    capsys.readouterr()
    assert cli(fake_server.base_url, source, "-o", out) == 0
    assert "unfinished --retry-failed" in capsys.readouterr().err
    assert out.read_bytes().startswith(before) and sent_ids(fake_server, sent + 3) == {"late": 1}

    # The same --retry-failed command: nothing is sent again, the journal is merged.
    assert cli(fake_server.base_url, source, "-o", out, "--retry-failed", "--max-retries", 0) == 0
    assert sent_ids(fake_server, sent + 4) == {}
    records = read_output(out)
    assert Counter(r["custom_id"] for r in records) == {c: 1 for c in ("ok1", "fixed", "stubborn", "ok2", "dropped", "late")}
    assert {r["custom_id"]: r["id"] for r in records if r["custom_id"] in ("fixed", "stubborn", "dropped")} == {
        r["custom_id"]: r["id"] for r in journal}
    assert not (tmp_path / "out.jsonl.retry-journal").exists() and not (tmp_path / "out.jsonl.rewrite-tmp").exists()


def test_a_crash_after_the_rename_does_not_stop_the_next_retry(fake_server, failed_run, tmp_path, monkeypatch):
    """Killed between the rename and the journal's removal: the journal is already merged,
    so the next --retry-failed discards it and retries what still fails."""
    source, out = failed_run
    sent = len(fake_server.received)
    real_unlink = Path.unlink

    def crash(self, *args, **kwargs):
        if self.name.endswith(".retry-journal"):
            raise OSError(5, "I/O error (simulated, after the rename)")
        return real_unlink(self, *args, **kwargs)

    monkeypatch.setattr(Path, "unlink", crash)
    assert cli(fake_server.base_url, source, "-o", out, "--retry-failed", "--max-retries", 0) == 2
    monkeypatch.setattr(Path, "unlink", real_unlink)
    assert (tmp_path / "out.jsonl.retry-journal").exists()
    merged = by_id(out)
    assert is_ok(merged["fixed"]) and not is_ok(merged["stubborn"])
    assert cli(fake_server.base_url, source, "-o", out, "--retry-failed", "--max-retries", 0) == 0
    assert sent_ids(fake_server, sent) == {"fixed": 1, "stubborn": 2, "dropped": 1}
    records = read_output(out)
    assert len(records) == 5 and all(is_ok(r) for r in records)


def test_simple_mode_retries_failed_files_and_runs_new_ones(fake_server, tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    for seed in range(3):
        make_png(media / f"{seed}.png", seed)
    out = tmp_path / "out.jsonl"
    args = ["--images", media, "--prompt", "Describe.", "-o", out, "--max-retries", 0]
    assert cli(closed_port_url(), *args, "--model", "m") == 1  # no server: every file fails
    assert all(r["error"]["code"] == "connection_error" for r in read_output(out))
    make_png(media / "new.png", 9)  # not yet in the output: a plain resume would run it
    assert cli(fake_server.base_url, *args, "--retry-failed") == 0
    records = read_output(out)
    assert Counter(r["custom_id"] for r in records) == {(media / n).as_posix(): 1 for n in ("0.png", "1.png", "2.png", "new.png")}
    assert all(is_ok(r) for r in records) and len(fake_server.received) == 4



def test_sigkill_mid_retry_leaves_the_old_output_or_the_complete_new_one(tmp_path):
    ids = [f"k{i:02d}" for i in range(40)]
    source, out = tmp_path / "in.jsonl", tmp_path / "out.jsonl"
    journal = tmp_path / "out.jsonl.retry-journal"
    # Even ids fail on the first attempt; the retry answers them all.
    write_jsonl(source, [scripted(c, ["500"] if i % 2 == 0 else []) for i, c in enumerate(ids)])
    with FakeServer(delay_s=0.04) as server:
        common = ["--base-url", server.base_url, "--no-progress", "--concurrency", "4", "--max-retries", "0"]
        assert main([str(source), "-o", str(out), *common]) == 1
        old = out.read_bytes()
        command = [sys.executable, "-m", "batch", str(source), "-o", str(out), *common, "--retry-failed"]

        def check_after_kill() -> None:
            if out.read_bytes() != old:  # killed after the rename: then it is the whole new file
                assert Counter(r["custom_id"] for r in read_output(out)) == Counter(ids)
                assert all(is_ok(r) for r in read_output(out))

        process, kills = run_killing_at_random(
            command, cwd=REPO, watched=journal, rng=random.Random(99), most_new_lines=6, most_extra_s=0.02,
            after_kill=check_after_kill,
        )
        assert process.returncode == 0
        # A kill between a request's headers and its body reaches the fake server as an empty body.
        retried = Counter(body["fake"]["key"] for body in server.bodies()[len(ids):] if body)
    assert kills >= 2
    records = read_output(out)
    assert Counter(r["custom_id"] for r in records) == Counter(ids) and all(is_ok(r) for r in records)
    assert [r["custom_id"] for r in records] == [json.loads(raw)["custom_id"] for raw in old.splitlines()]
    # Each failure was sent again about once: a kill loses at most the requests in flight.
    assert set(retried) == set(ids[::2]) and sum(retried.values()) <= len(ids[::2]) + 4 * kills
    assert not journal.exists()
