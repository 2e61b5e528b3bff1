//! The `migrate_interleaved` fuzz body under proptest: the real source engine and
//! destination applier, with guest writes, polls, chunked delivery, time and link
//! failures interleaved at random. Every run either completes with the destination's
//! memory equal to the source's, byte for byte, or fails with every page that differs
//! still marked dirty (see `precopy::fuzzing::migrate_interleaved` for the properties).

use precopy::fuzzing::{migrate_interleaved, MigrateOutcome};
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(precopy::fuzzing::cases(512)))]

    #[test]
    fn interleaved_migrations_lose_no_write(data in prop::collection::vec(any::<u8>(), 0..4000)) {
        migrate_interleaved(&data);
    }

    /// Long migrations: inputs made of many guest writes between polls, so the engine
    /// runs many rounds before its round limit switches over.
    #[test]
    fn long_migrations_lose_no_write(
        head in prop::collection::vec(any::<u8>(), 8),
        steps in prop::collection::vec((0u8..3, any::<u8>(), any::<u8>(), any::<u8>()), 200..1500),
    ) {
        let mut data = head;
        // Round limit high and every round required, no failure: op bytes 0 (write),
        // 1 (poll), 2 (deliver).
        // Bytes: pages, pre-migration writes (none), cache, deferral, round limit,
        // downtime limit, fewest rounds.
        data[1] = 0;
        data[4] = 39;
        data[6] = 255;
        for (op, a, b, c) in steps {
            data.extend_from_slice(&[op, a, b, c]);
        }
        migrate_interleaved(&data);
    }
}

/// The generated inputs reach every ending: completions, failures, and migrations of
/// many rounds.
#[test]
fn inputs_reach_completion_failure_and_many_rounds() {
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let mut seen = Vec::new();
    for _ in 0..300 {
        let len = (next() % 3000) as usize;
        let data: Vec<u8> = (0..len).map(|_| next() as u8).collect();
        seen.push(migrate_interleaved(&data));
    }
    let count = |f: &dyn Fn(&MigrateOutcome) -> bool| seen.iter().filter(|o| f(o)).count();
    assert!(count(&|o| o.completed) > 30, "completions: {seen:?}");
    assert!(count(&|o| o.failed) > 30, "failures");
    assert!(count(&|o| o.rounds >= 4) > 5, "long migrations");
}
