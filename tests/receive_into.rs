//! The destination receives into memory the caller gives: the header is read and
//! checked first ([`accept`], [`accept_streams`]), then the stream is applied into the
//! caller's memory (a vm-memory guest with a hole, `&mut VecMemory`, per-stream views);
//! memory of another shape, or the wrong number of views, is refused with a typed
//! error.

use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::time::Duration;

use precopy::fuzzing::StreamBuilder;
use precopy::layout::GuestLayout;
use precopy::layout::Shard;
use precopy::memory::{FreshMemory, PageMemory, VecMemory};
use precopy::runtime::session::read_reply;
use precopy::runtime::{accept, accept_streams, Limits, Reply, RuntimeError};

const PAGE: usize = 4096;

/// 600 pages at 0, a hole, 500 pages at 4 GiB.
fn layout() -> GuestLayout {
    GuestLayout::new(PAGE as u64, &[(0, 600 * 4096), (4 << 30, 500 * 4096)]).unwrap()
}

/// Source memory with some pages written.
fn source() -> VecMemory {
    let mut m = VecMemory::new(PAGE, layout().total_pages());
    for p in (0..m.total_pages()).step_by(7) {
        m.write_page(p, &[p as u8 | 1; PAGE]).unwrap();
    }
    m
}

/// The complete stream `stream` of `source`: one round of every page it owns.
fn stream_bytes(source: &VecMemory, stream: Shard) -> Vec<u8> {
    let mut b = StreamBuilder::for_stream(layout(), 1 << 20, stream);
    let pages: Vec<u64> = (0..source.total_pages())
        .filter(|&p| stream.owns(p))
        .collect();
    b.round(source, &pages);
    b.switchover(0);
    b.complete(source)
}

fn limits() -> Limits {
    Limits {
        max_memory: 1 << 30,
        expect: None,
    }
}

#[cfg(feature = "vm-memory")]
#[test]
fn one_stream_into_a_vm_memory_guest_with_a_hole() {
    use precopy::memory::VmMemory;
    use vm_memory::{GuestAddress, GuestMemoryMmap};
    let source = source();
    let bytes = stream_bytes(&source, Shard::WHOLE);
    let guest = GuestMemoryMmap::<()>::from_ranges(&[
        (GuestAddress(0), 600 * PAGE),
        (GuestAddress(4 << 30), 500 * PAGE),
    ])
    .unwrap();
    let memory = VmMemory::new(&guest, PAGE as u64).unwrap();
    assert_eq!(memory.layout(), layout());
    let mut input = &bytes[..];
    let incoming = accept(&mut input, None, &limits()).unwrap();
    assert_eq!(incoming.header().layout, layout());
    let applied = incoming.apply_into(memory).unwrap();
    assert_eq!(applied.stream_bytes, bytes.len() as u64);
    // The guest's bytes, read through vm-memory, are the source's.
    let mut page = vec![0u8; PAGE];
    let mut want = vec![0u8; PAGE];
    for p in 0..source.total_pages() {
        memory.read_page(p, &mut page).unwrap();
        source.read_page(p, &mut want).unwrap();
        assert!(page == want, "page {p}");
    }
}

#[test]
fn memory_of_another_shape_is_refused_and_the_source_told() {
    let source = source();
    let bytes = stream_bytes(&source, Shard::WHOLE);
    let mut small = VecMemory::new(PAGE, 1000);
    let mut replies = Vec::new();
    let mut input = &bytes[..];
    let incoming = accept(&mut input, Some(&mut replies), &limits()).unwrap();
    let e = incoming.apply_into(&mut small).unwrap_err();
    assert!(e.to_string().contains("1000 pages"), "{e}");
    assert!(small.as_bytes().iter().all(|&b| b == 0), "nothing written");
    let Reply::Refused(reason) = read_reply(&mut &replies[..]).unwrap() else {
        panic!("not refused");
    };
    assert_eq!(reason, e.to_string());
    // The right shape, lent by `&mut`, takes the stream.
    let mut memory = VecMemory::new(PAGE, source.total_pages());
    let mut input = &bytes[..];
    let incoming = accept(&mut input, None, &limits()).unwrap();
    incoming.apply_into(&mut memory).unwrap();
    assert!(memory == source);
}

/// Sends `bytes` (a stream) as a source would: header, answer, rest, verdict.
fn send(addr: std::net::SocketAddr, bytes: Vec<u8>, header_len: usize) -> Reply {
    let mut conn = TcpStream::connect(addr).unwrap();
    conn.write_all(&bytes[..header_len]).unwrap();
    match read_reply(&mut conn).unwrap() {
        Reply::Ok => {}
        refused => return refused,
    }
    conn.write_all(&bytes[header_len..]).unwrap();
    read_reply(&mut conn).unwrap()
}

#[test]
fn streams_into_caller_views_and_a_wrong_view_count_is_refused() {
    let source = source();
    for views in [2usize, 1] {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let senders: Vec<_> = (0..2u8)
            .map(|i| {
                let bytes = stream_bytes(&source, Shard::new(i, 2).unwrap());
                let len = precopy::wire::HeaderPrefix::new_checked(&bytes)
                    .unwrap()
                    .header_len()
                    .unwrap();
                std::thread::spawn(move || send(addr, bytes, len))
            })
            .collect();
        let (first, peer) = listener.accept().unwrap();
        let incoming = accept_streams(
            &listener,
            first,
            &peer.to_string(),
            &limits(),
            Duration::from_secs(30),
        )
        .unwrap();
        let header = *incoming.header();
        let mut memory = FreshMemory::new(PAGE, header.layout.total_pages()).unwrap();
        let mut given = memory.views(header.stream.count());
        given.truncate(views);
        let result = incoming.apply_into(given);
        let replies: Vec<Reply> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        if views == 2 {
            let applied = result.unwrap();
            assert_eq!(applied.digests.len(), 2);
            // Each verdict names the session and that stream's digest.
            for (reply, digest) in replies.iter().zip(&applied.digests) {
                assert_eq!(
                    *reply,
                    Reply::Verified {
                        session: header.session_id,
                        digest: *digest
                    }
                );
            }
            assert!(memory.as_bytes() == source.as_bytes());
        } else {
            let e = result.unwrap_err();
            assert!(
                matches!(
                    e,
                    RuntimeError::WrongViewCount {
                        views: 1,
                        streams: 2
                    }
                ),
                "{e}"
            );
            for r in replies {
                assert_eq!(r, Reply::Refused(e.to_string()));
            }
            assert!(memory.as_bytes().iter().all(|&b| b == 0), "nothing written");
        }
    }
}

/// The listener takes a migration whose streams arrive among strangers: a port scan,
/// junk and a header of another session are refused alone (each reported, each
/// answered), and the migration's two streams are applied and verified.
#[test]
fn strangers_among_the_streams_are_refused_alone() {
    use precopy::runtime::{listen_streams, receive_into_fresh, ListenOptions};
    let source = source();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let junk = std::thread::spawn(move || {
        drop(TcpStream::connect(addr).unwrap());
        let mut c = TcpStream::connect(addr).unwrap();
        c.write_all(&[0x5a; 64]).unwrap();
        read_reply(&mut c).unwrap()
    });
    let stream_sender = |i: u8, delay_ms: u64| {
        let bytes = stream_bytes(&source, Shard::new(i, 2).unwrap());
        let len = precopy::wire::HeaderPrefix::new_checked(&bytes)
            .unwrap()
            .header_len()
            .unwrap();
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(delay_ms));
            send(addr, bytes, len)
        })
    };
    let first = stream_sender(0, 0);
    // A header of another session (and its own layout) while stream 1 is awaited.
    let intruder = std::thread::spawn(move || {
        // Well after stream 0's header, however loaded the machine.
        std::thread::sleep(Duration::from_millis(1000));
        let header = precopy::wire::StreamHeader {
            features: precopy::wire::Features::ALL,
            session_id: [9; 16],
            layout: layout(),
            stream: Shard::new(1, 2).unwrap(),
        };
        let mut bytes = vec![0u8; header.encoded_len()];
        header.emit(&mut bytes).unwrap();
        let mut c = TcpStream::connect(addr).unwrap();
        let _ = c.write_all(&bytes);
        read_reply(&mut c).unwrap()
    });
    let second = stream_sender(1, 2000);
    let mut refusals = Vec::new();
    let options = ListenOptions {
        keep_listening: true,
        ..ListenOptions::new(Duration::from_secs(20))
    };
    let incoming = listen_streams(&listener, None, &limits(), &options, &mut |peer, e| {
        refusals.push(format!("{peer}: {e}"))
    })
    .unwrap();
    let received = receive_into_fresh(incoming).unwrap();
    assert!(received.memory == source);
    for reply in [first.join().unwrap(), second.join().unwrap()] {
        assert!(matches!(reply, Reply::Verified { .. }), "{reply:?}");
    }
    assert!(matches!(junk.join().unwrap(), Reply::Refused(_)));
    let intruded = intruder.join().unwrap();
    let Reply::Refused(reason) = intruded else {
        panic!("the intruder was not refused: {intruded:?}");
    };
    assert!(reason.contains("belongs to another migration"), "{reason}");
    assert!(refusals.len() >= 3, "{refusals:?}");
}
