//! `precopy send` / `precopy recv` through the real binary: a TCP pair, a stream file
//! round trip, and every fault an operator can meet, each ending in one line on stderr
//! and a non-zero exit, never a panic. Every child process is bounded in time and
//! killed on timeout.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::Duration;

#[path = "common/cli_proc.rs"]
mod cli_proc;
use cli_proc::{assert_fails_with, listening_recv, run, send, GUEST, TIMEOUT};

/// The JSON summary line among `lines`.
fn summary(lines: &[String]) -> &str {
    lines
        .iter()
        .find(|l| l.starts_with("{\"kind\":\"summary\""))
        .unwrap_or_else(|| panic!("no summary in {lines:?}"))
}

/// The string value of `"key":"..."` in a JSON line.
fn json_str<'a>(line: &'a str, key: &str) -> &'a str {
    let start = line
        .find(&format!("\"{key}\":\""))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 4;
    let len = line[start..].find('"').unwrap();
    &line[start..start + len]
}

/// The number value of `"key":N` in a JSON line.
fn json_num(line: &str, key: &str) -> u64 {
    let start = line
        .find(&format!("\"{key}\":"))
        .unwrap_or_else(|| panic!("no {key} in {line}"))
        + key.len()
        + 3;
    line[start..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect::<String>()
        .parse()
        .unwrap()
}

/// A scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("precopy-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A verified stream file of a 16 MiB guest; returns its path and the source's digest.
fn stream_file(dir: &Path) -> (PathBuf, String) {
    let path = dir.join("guest.precopy");
    let (status, out, err) = send(&["--output", path.to_str().unwrap(), "--json"]);
    assert!(status.success(), "send --output failed: {err}");
    let digest = json_str(summary(&out), "digest").to_string();
    (path, digest)
}

/// `recv --input` of a file in `dir` holding `stream`.
fn recv_file(dir: &Path, stream: &[u8]) -> (ExitStatus, Vec<String>, String) {
    let path = dir.join("input.precopy");
    std::fs::write(&path, stream).unwrap();
    run(&["recv", "--input", path.to_str().unwrap()])
}

/// Sends raw `bytes` to a listening recv as a fake source, half-closes, and returns
/// the reply bytes the destination sent before closing.
fn fake_source(addr: &str, bytes: &[u8]) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    // The destination may stop reading early (it refused): that is its right.
    let _ = c.write_all(bytes);
    let _ = c.shutdown(Shutdown::Write);
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    reply
}

/// A fake destination on a thread: accepts one source as a destination would up to
/// its first reply (reads the stream header, its length from bytes 10..12, and
/// answers "accepted"), then runs `then` with the connection and the header's bytes.
/// Returns the address to send to and the thread.
fn fake_destination<T: Send + 'static>(
    then: impl FnOnce(TcpStream, Vec<u8>) -> T + Send + 'static,
) -> (String, std::thread::JoinHandle<T>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let thread = std::thread::spawn(move || {
        let (c, header) = accept_as_destination(&listener);
        then(c, header)
    });
    (addr, thread)
}

fn accept_as_destination(listener: &TcpListener) -> (TcpStream, Vec<u8>) {
    let (mut c, _) = listener.accept().unwrap();
    let mut header = vec![0u8; 12];
    c.read_exact(&mut header).unwrap();
    let len = usize::from(u16::from_le_bytes([header[10], header[11]]));
    header.resize(len, 0);
    c.read_exact(&mut header[12..]).unwrap();
    c.write_all(&[1, 0, 0]).unwrap();
    (c, header)
}

/// A reply's reason text (status byte 0 = refused).
fn refusal(reply: &[u8]) -> String {
    assert!(reply.len() >= 3, "no reply: {reply:?}");
    assert_eq!(reply[0], 0, "expected a refusal: {reply:?}");
    String::from_utf8_lossy(&reply[3..]).into_owned()
}

#[test]
fn tcp_pair_migrates_and_both_sides_agree_on_the_digest() {
    let (recv, addr) = listening_recv(&[]);
    let (status, out, err) = send(&["--connect", &addr, "--json"]);
    assert!(status.success(), "send: {err}");
    let (rstatus, rout, rerr) = recv.finish();
    assert!(rstatus.success(), "recv: {rerr}");
    assert!(err.is_empty() && rerr.is_empty(), "{err}{rerr}");
    let (s, r) = (summary(&out), summary(&rout));
    assert!(s.contains("\"verified\":true") && r.contains("\"verified\":true"));
    assert_eq!(json_str(s, "digest"), json_str(r, "digest"));
    assert_eq!(json_str(s, "session"), json_str(r, "session"));
    assert_eq!(json_num(r, "memory_bytes"), 16 << 20);
    // The bulk round, at least one more, and rows for each.
    assert!(json_num(r, "rounds") >= 2, "{r}");
    assert!(out.iter().any(|l| l.contains("\"final\":true")));
}

#[test]
fn stream_file_restores_to_the_source_digest() {
    let dir = scratch("file");
    let (path, digest) = stream_file(&dir);
    let (status, out, err) = run(&["recv", "--input", path.to_str().unwrap(), "--json"]);
    assert!(status.success(), "recv --input: {err}");
    let r = summary(&out);
    assert!(r.contains("\"verified\":true"), "{r}");
    assert_eq!(json_str(r, "digest"), digest);
    // A destination sized otherwise refuses the same file.
    let (status, _, err) = run(&["recv", "--input", path.to_str().unwrap(), "--memory", "8M"]);
    assert_fails_with(
        status,
        &err,
        "the stream is for 4096 pages of 4096 bytes but the destination has 2048 pages",
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn connection_refused() {
    let port = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr = format!("127.0.0.1:{port}");
    let (status, _, err) = send(&["--connect", &addr]);
    assert_fails_with(status, &err, &format!("connect {addr}: Connection refused"));
}

#[test]
fn address_in_use() {
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = held.local_addr().unwrap().to_string();
    let (status, _, err) = run(&["recv", "--listen", &addr]);
    assert_fails_with(
        status,
        &err,
        &format!("listen {addr}: Address already in use"),
    );
}

#[test]
fn http_request_to_the_listening_port() {
    let (recv, addr) = listening_recv(&["--deadline", "3"]);
    let reply = fake_source(&addr, b"GET / HTTP/1.1\r\nHost: localhost\r\n\r\n");
    assert!(refusal(&reply).contains("an HTTP request"), "{reply:?}");
    let (status, _, err) = recv.finish();
    assert_fails_with(
        status,
        &err,
        "an HTTP request (\"GET / HTTP/1...\") arrived instead of a precopy stream",
    );
}

#[test]
fn garbage_to_the_listening_port() {
    let (recv, addr) = listening_recv(&["--deadline", "3"]);
    let garbage: Vec<u8> = (0..200u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let reply = fake_source(&addr, &garbage);
    assert!(refusal(&reply).contains("not a precopy stream"));
    let (status, _, err) = recv.finish();
    assert_fails_with(
        status,
        &err,
        "stream header: not a precopy stream (starts with",
    );
    // A peer that sends a few bytes and hangs up.
    let (recv, addr) = listening_recv(&["--deadline", "3"]);
    fake_source(&addr, b"PREC");
    let (status, _, err) = recv.finish();
    assert_fails_with(
        status,
        &err,
        "stream header: stream ends inside a frame (4 of 12 bytes)",
    );
}

#[test]
fn newer_format_version_is_refused_over_tcp_and_from_a_file() {
    let dir = scratch("version");
    let (path, _) = stream_file(&dir);
    let mut stream = std::fs::read(&path).unwrap();
    stream[8..10].copy_from_slice(&9u16.to_le_bytes());
    let needle = format!(
        "stream format version 9 is newer than this precopy supports ({})",
        precopy::wire::FORMAT_VERSION
    );
    let needle = needle.as_str();
    let (recv, addr) = listening_recv(&["--deadline", "3"]);
    let reply = fake_source(&addr, &stream);
    assert!(refusal(&reply).contains(needle), "{reply:?}");
    let (status, _, err) = recv.finish();
    assert_fails_with(status, &err, needle);
    std::fs::write(&path, &stream).unwrap();
    let (status, _, err) = run(&["recv", "--input", path.to_str().unwrap()]);
    assert_fails_with(status, &err, needle);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn layout_mismatch_and_memory_cap_are_refused_and_the_source_runs_on() {
    for (recv_args, needle) in [
        (
            &["--memory", "8M"][..],
            "refused the migration: the stream is for 4096 pages of 4096 bytes but the destination has 2048 pages of 4096 bytes",
        ),
        (
            &["--max-memory", "8M"][..],
            "refused the migration: the stream's guest of 16 MiB (4096 pages of 4096 bytes) is larger than this destination's limit of 8 MiB (raise the destination's memory limit)",
        ),
    ] {
        let mut recv_args = recv_args.to_vec();
        recv_args.extend(["--deadline", "10"]);
        let (recv, addr) = listening_recv(&recv_args);
        let (status, out, err) = send(&["--connect", &addr, "--json"]);
        assert_fails_with(status, &err, needle);
        assert!(err.contains(&format!("the destination {addr} refused")), "{err}");
        let s = summary(&out);
        assert!(s.contains("\"verified\":false"), "{s}");
        assert!(json_num(s, "writes_after_failure") > 0, "{s}");
        // The destination reports the refusal and listens on until its deadline.
        let (status, rout, rerr) = recv.finish();
        let reason = needle.split_once("migration: ").unwrap().1;
        assert!(rout.iter().any(|l| l.contains(reason)), "{rout:?}");
        assert_fails_with(status, &rerr, "the deadline passed");
    }
}

#[test]
fn source_closing_mid_stream() {
    let dir = scratch("source-closes");
    let (path, _) = stream_file(&dir);
    let stream = std::fs::read(&path).unwrap();
    let (recv, addr) = listening_recv(&[]);
    let reply = fake_source(&addr, &stream[..stream.len() / 2]);
    // Accepted header, then a refusal naming the cut.
    assert_eq!(&reply[..3], &[1, 0, 0]);
    let reason = refusal(&reply[3..]);
    let (status, _, err) = recv.finish();
    // Cut inside a frame, or (rarely) exactly between two.
    let needle = if err.contains("inside a frame") {
        "stream ends inside a frame"
    } else {
        "stream ends before the completion frame: the migration did not finish"
    };
    assert_fails_with(status, &err, needle);
    assert!(reason.contains(needle), "{reason}");
    assert!(err.contains("the source 127.0.0.1:"), "{err}");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn destination_closing_mid_stream_leaves_the_source_running() {
    let (addr, fake) = fake_destination(|mut c, _| {
        let mut some = vec![0u8; 64 << 10];
        c.read_exact(&mut some).unwrap();
        // Then the destination dies.
    });
    // One stream: the fake destination takes one connection.
    let (status, out, err) = send(&["--connect", &addr, "--json", "--streams", "1"]);
    fake.join().unwrap();
    assert_fails_with(
        status,
        &err,
        &format!("the destination {addr} closed the connection mid-stream, after"),
    );
    let s = summary(&out);
    assert!(s.contains("\"verified\":false"), "{s}");
    assert!(json_num(s, "writes_after_failure") > 0, "{s}");
}

#[test]
fn corrupted_stream_file_is_refused_at_a_named_frame() {
    let dir = scratch("corrupt");
    let (path, _) = stream_file(&dir);
    let stream = std::fs::read(&path).unwrap();
    for at in [
        20,
        200,
        stream.len() / 3,
        stream.len() / 2,
        stream.len() - 30,
    ] {
        let mut s = stream.clone();
        s[at] ^= 0x10;
        let (status, _, err) = recv_file(&dir, &s);
        let expect = if at < 60 { "stream header" } else { "frame " };
        assert_fails_with(status, &err, expect);
        assert!(
            err.contains("checksum mismatch") || err.contains("byte"),
            "{err}"
        );
        // A file is not "in transit" (issue 16, 11).
        assert!(!err.contains("in transit"), "{err}");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn truncated_stream_file_is_refused() {
    let dir = scratch("truncated");
    let (path, _) = stream_file(&dir);
    let stream = std::fs::read(&path).unwrap();
    for len in [0, 5, 40, 70, stream.len() / 2, stream.len() - 1] {
        let (status, _, err) = recv_file(&dir, &stream[..len]);
        assert_eq!(status.code(), Some(1), "{len}: {err}");
        let needle = if err.contains("the file is truncated") {
            "the file is truncated"
        } else {
            "stream ends before the completion frame"
        };
        assert_fails_with(status, &err, needle);
    }
    // Bytes after the completion frame are refused too.
    let mut long = stream.clone();
    long.extend_from_slice(b"extra");
    let (status, _, err) = recv_file(&dir, &long);
    assert_fails_with(status, &err, "data after the completion frame");
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn full_disk_on_output() {
    if !Path::new("/dev/full").exists() {
        eprintln!("SKIP: no /dev/full");
        return;
    }
    let (status, out, err) = send(&["--output", "/dev/full", "--no-verify", "--json"]);
    assert_fails_with(
        status,
        &err,
        "writing /dev/full after 0 bytes: No space left on device",
    );
    let s = summary(&out);
    assert!(json_num(s, "writes_after_failure") > 0, "{s}");
    assert!(
        Path::new("/dev/full").exists(),
        "the device must not be removed"
    );
}

#[test]
fn silent_peer_times_out() {
    // One second is enough however loaded the machine: whether "PRE" arrives before
    // the timeout or after, the header is never complete and the read times out.
    let (recv, addr) = listening_recv(&["--header-timeout", "1", "--deadline", "3"]);
    // Connects, sends less than a header and then nothing, but stays connected.
    let mut c = TcpStream::connect(&addr).unwrap();
    c.write_all(b"PRE").unwrap();
    let (status, _, err) = recv.finish();
    assert_fails_with(
        status,
        &err,
        "reading the stream header: timed out waiting for the peer",
    );
    drop(c);
}

#[test]
fn sending_to_something_that_is_not_a_destination() {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let web = std::thread::spawn(move || {
        let (mut c, _) = listener.accept().unwrap();
        let mut some = [0u8; 60];
        let _ = c.read_exact(&mut some);
        let _ = c.write_all(b"HTTP/1.1 400 Bad Request\r\n\r\n");
    });
    let (status, _, err) = send(&["--connect", &addr, "--streams", "1"]);
    web.join().unwrap();
    assert_fails_with(
        status,
        &err,
        &format!("the destination {addr} is not a precopy destination"),
    );
}

#[test]
fn destination_vanishing_before_the_verdict_resumes_the_paused_guest() {
    let (addr, fake) = fake_destination(|mut c, header| {
        // Take the whole stream: the source then waits for the verdict with its
        // guest paused. Vanish without one.
        let mut decoder = precopy::wire::Decoder::with_max_page_size(4096);
        let mut header = &header[..];
        while decoder.next(&mut header).unwrap().is_some() {}
        let mut buf = vec![0u8; 1 << 16];
        while !decoder.is_complete() {
            let n = c.read(&mut buf).unwrap();
            assert!(n > 0, "the source closed before completing the stream");
            let mut input = &buf[..n];
            while decoder.next(&mut input).unwrap().is_some() {}
        }
        decoder.offset()
    });
    // One stream: the fake destination takes one connection.
    let (status, out, err) = send(&["--connect", &addr, "--json", "--streams", "1"]);
    assert!(fake.join().unwrap() > 4096);
    assert_fails_with(
        status,
        &err,
        &format!("the destination {addr} closed the connection before sending the verdict"),
    );
    let s = summary(&out);
    // The guest was paused for the final round, and runs again.
    assert!(!s.contains("\"downtime_ms\":null"), "{s}");
    assert!(json_num(s, "writes_after_failure") > 0, "{s}");
}

#[test]
fn three_streams_migrate_and_both_sides_agree_on_the_digest() {
    let (recv, addr) = listening_recv(&[]);
    let (status, out, err) = send(&["--connect", &addr, "--json", "--streams", "3"]);
    assert!(status.success(), "send: {err}");
    let (rstatus, rout, rerr) = recv.finish();
    assert!(rstatus.success(), "recv: {rerr}");
    let (s, r) = (summary(&out), summary(&rout));
    assert_eq!(json_num(r, "streams"), 3, "{r}");
    assert_eq!(json_str(s, "digest"), json_str(r, "digest"));
    assert!(s.contains("\"verified\":true") && r.contains("\"verified\":true"));
}

/// The header of stream `index` of `count` of a 16 MiB guest's migration `session`.
fn stream_header(session: u8, index: u8, count: u8) -> Vec<u8> {
    use precopy::layout::Shard;
    use precopy::wire::{Features, StreamHeader};
    let header = StreamHeader {
        features: Features::ALL,
        session_id: [session; 16],
        layout: precopy::layout::GuestLayout::flat(4096, 16 << 20).unwrap(),
        stream: Shard::new(index, count).unwrap(),
    };
    let mut bytes = vec![0u8; header.encoded_len()];
    header.emit(&mut bytes).unwrap();
    bytes
}

/// Opens stream 0 of 2 of migration 1 to `addr`, then runs `second` (which may open
/// another connection); returns the reply stream 0 got.
fn first_of_two_streams(addr: &str, second: impl FnOnce()) -> Vec<u8> {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(TIMEOUT)).unwrap();
    c.write_all(&stream_header(1, 0, 2)).unwrap();
    second();
    let mut reply = Vec::new();
    let _ = c.read_to_end(&mut reply);
    reply
}

#[test]
fn a_stream_of_another_migration_or_a_repeated_index_is_refused() {
    // The intruder is refused alone: the migration in progress goes on waiting for
    // its own stream 1 (which never comes here), not aborted by the stranger.
    for (session, index, needle) in [
        (2, 1, "it belongs to another migration (session id differs)"),
        (1, 0, "stream 0 already arrived"),
    ] {
        let (recv, addr) = listening_recv(&["--timeout", "3", "--deadline", "6"]);
        let mut second_reply = Vec::new();
        let first_reply = first_of_two_streams(&addr, || {
            // Headers are read concurrently: let the first one's arrive first.
            std::thread::sleep(Duration::from_millis(500));
            second_reply = fake_source(&addr, &stream_header(session, index, 2));
        });
        assert!(refusal(&second_reply).contains(needle), "{second_reply:?}");
        let first = refusal(&first_reply);
        assert!(!first.contains(needle), "{first_reply:?}");
        assert!(first.contains("waiting for stream 1 of 2"), "{first}");
        let (status, out, err) = recv.finish();
        assert!(out.iter().any(|l| l.contains(needle)), "{out:?}");
        assert_fails_with(status, &err, "waiting for stream 1 of 2");
    }
}

#[test]
fn a_missing_stream_is_waited_for_then_refused() {
    // The same timeout first bounds the wait for stream 0's header, which this test
    // writes right after connecting: 1 s could run out in between on a loaded machine
    // (and fail on "reading the stream header"); 5 s leaves a wide margin for that
    // write, and the wait for stream 1 (which never comes) takes those 5 s.
    let (recv, addr) = listening_recv(&["--timeout", "5", "--deadline", "8"]);
    let reply = first_of_two_streams(&addr, || {});
    let needle = "waiting for stream 1 of 2 of the migration: timed out";
    assert!(refusal(&reply).contains(needle), "{reply:?}");
    let (status, _, err) = recv.finish();
    assert_fails_with(status, &err, needle);
}

#[test]
fn a_stream_file_takes_one_stream() {
    let dir = scratch("streams-file");
    let path = dir.join("two.precopy");
    let (status, _, err) = send(&["--output", path.to_str().unwrap(), "--streams", "2"]);
    assert_fails_with(status, &err, "a stream file holds one stream");
    assert!(!path.exists());
    std::fs::remove_dir_all(dir).unwrap();
}

/// `precopy demo` of the small test guest, with `args`.
fn demo(args: &[&str]) -> (ExitStatus, Vec<String>, String) {
    let mut all = vec!["demo"];
    all.extend(args);
    all.extend(GUEST);
    run(&all)
}

#[test]
fn a_lost_write_is_caught_by_the_source_check_and_fails_the_demo() {
    let (status, out, err) = demo(&["--inject-lost-write", "--json"]);
    assert_fails_with(status, &err, "lost write");
    let s = summary(&out);
    assert!(s.contains("\"verified\":false"), "{s}");
    assert!(s.contains("\"source_check\":\"mismatch\""), "{s}");
    assert_eq!(json_num(s, "differing_pages"), 1, "{s}");
    // The last page of the 16 MiB guest: the one the hook changed.
    assert!(s.contains("\"first_differing_pages\":[4095]"), "{s}");
    // The destination had verified (its fold matched what was sent): downtime ended
    // there; the guest runs on at the source.
    assert!(!s.contains("\"downtime_ms\":null"), "{s}");
    assert!(json_num(s, "writes_after_failure") > 0, "{s}");
    // And in text: never "verified: yes".
    let (status, out, err) = demo(&["--inject-lost-write"]);
    assert_fails_with(status, &err, "lost write");
    let text = out.join("\n");
    assert!(text.contains("verified: no"), "{text}");
    assert!(!text.contains("verified: yes"), "{text}");
    assert!(text.contains("DIFFER"), "{text}");
}

#[test]
fn a_lost_write_with_verify_full_is_refused_by_the_destination() {
    let (status, out, err) = demo(&["--inject-lost-write", "--verify", "full", "--json"]);
    assert_fails_with(status, &err, "digest");
    let s = summary(&out);
    assert!(s.contains("\"verified\":false"), "{s}");
    assert!(s.contains("\"source_check\":\"not_run\""), "{s}");
}

#[test]
fn demo_verifies_in_both_modes_and_reports_where_verification_ran() {
    let (status, out, err) = demo(&["--json"]);
    assert!(status.success(), "demo: {err}");
    let s = summary(&out);
    assert!(s.contains("\"verified\":true"), "{s}");
    assert!(s.contains("\"verify\":\"after\""), "{s}");
    assert!(s.contains("\"source_check\":\"matched\""), "{s}");
    assert!(!s.contains("\"verify_after_ms\":null"), "{s}");
    assert!(!s.contains("\"verify_in_downtime_ms\":null"), "{s}");
    let (status, out, err) = demo(&["--json", "--verify", "full"]);
    assert!(status.success(), "demo --verify full: {err}");
    let s = summary(&out);
    assert!(s.contains("\"verified\":true"), "{s}");
    assert!(s.contains("\"verify\":\"full\""), "{s}");
    assert!(s.contains("\"source_check\":\"in_downtime\""), "{s}");
    assert!(s.contains("\"verify_after_ms\":null"), "{s}");
    let (status, out, err) = demo(&["--verify", "full"]);
    assert!(status.success(), "demo --verify full: {err}");
    let text = out.join("\n");
    assert!(text.contains("verified: yes"), "{text}");
    assert!(
        text.contains("re-reading all memory with the guest paused"),
        "{text}"
    );
}

/// The digest of a migration over `streams` streams, from the format's definition and
/// the memory's bytes alone (no precopy code): chunk `c` of 512 pages travels on stream
/// `c mod streams`; a stream's digest is XXH3-128 over the little-endian XXH3-64 of its
/// pages in order; one stream's is the migration's, several are folded by XXH3-128
/// over their little-endian digests. As the CLI prints it.
fn reference_digest(bytes: &[u8], page_size: usize, streams: usize) -> String {
    use xxhash_rust::xxh3::{xxh3_128, xxh3_64};
    let digests: Vec<u128> = (0..streams)
        .map(|s| {
            let mut hashes = Vec::new();
            for (p, page) in bytes.chunks_exact(page_size).enumerate() {
                if (p / 512) % streams == s {
                    hashes.extend_from_slice(&xxh3_64(page).to_le_bytes());
                }
            }
            xxh3_128(&hashes)
        })
        .collect();
    let d = match digests.as_slice() {
        [one] => *one,
        many => xxh3_128(
            &many
                .iter()
                .flat_map(|d| d.to_le_bytes())
                .collect::<Vec<u8>>(),
        ),
    };
    format!("{d:#034x}")
}

/// Source and destination memory, dumped by the CLI's hidden `--dump-memory`, must be
/// equal byte for byte, and the guest must have written some of it (two zeroed
/// memories prove nothing).
#[track_caller]
fn assert_same_memory(source: &[u8], dest: &[u8]) {
    assert_eq!(source.len(), 16 << 20);
    assert_eq!(dest.len(), source.len());
    let written = source
        .chunks_exact(4096)
        .filter(|p| p.iter().any(|&b| b != 0))
        .count();
    assert!(written >= 64, "only {written} pages written by the guest");
    let differing: Vec<usize> = source
        .chunks_exact(4096)
        .zip(dest.chunks_exact(4096))
        .enumerate()
        .filter(|(_, (a, b))| a != b)
        .map(|(page, _)| page)
        .collect();
    assert!(
        differing.is_empty(),
        "{} pages differ, first {:?}",
        differing.len(),
        &differing[..differing.len().min(8)]
    );
}

#[test]
fn demo_leaves_the_destination_equal_to_the_source_byte_for_byte() {
    let dir = scratch("demo-memory");
    let path = dir.join("memory");
    let (status, out, err) = demo(&[
        "--json",
        "--streams",
        "2",
        "--dump-memory",
        path.to_str().unwrap(),
    ]);
    assert!(status.success(), "demo: {err}");
    let source = std::fs::read(&path).unwrap();
    let dest = std::fs::read(dir.join("memory.dest")).unwrap();
    assert_same_memory(&source, &dest);
    // The digest printed is the one of the memory's bytes.
    let s = summary(&out);
    assert_eq!(
        json_str(s, "digest"),
        reference_digest(&source, 4096, 2),
        "{s}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_stream_file_restores_the_source_memory_byte_for_byte() {
    let dir = scratch("file-memory");
    let stream = dir.join("guest.precopy");
    let (src, dst) = (dir.join("source.mem"), dir.join("dest.mem"));
    let (status, out, err) = send(&[
        "--output",
        stream.to_str().unwrap(),
        "--json",
        "--dump-memory",
        src.to_str().unwrap(),
    ]);
    assert!(status.success(), "send --output: {err}");
    let (status, rout, err) = run(&[
        "recv",
        "--input",
        stream.to_str().unwrap(),
        "--json",
        "--dump-memory",
        dst.to_str().unwrap(),
    ]);
    assert!(status.success(), "recv --input: {err}");
    let source = std::fs::read(&src).unwrap();
    assert_same_memory(&source, &std::fs::read(&dst).unwrap());
    let expected = reference_digest(&source, 4096, 1);
    assert_eq!(json_str(summary(&out), "digest"), expected);
    assert_eq!(json_str(summary(&rout), "digest"), expected);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn an_unknown_verify_mode_is_refused_with_the_choices() {
    let (status, _, err) = run(&["demo", "--verify", "sometimes"]);
    assert_eq!(status.code(), Some(2), "{err}");
    assert!(err.contains("after") && err.contains("full"), "{err}");
}
