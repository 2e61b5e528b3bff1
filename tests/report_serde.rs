//! The library's report types serialize (feature `serde`), so a VMM can log or ship
//! them: field names and values as the types have them.

use precopy::engine::ApplyStats;
use precopy::runtime::SourceCheck;

#[test]
fn report_types_serialize_with_their_field_names() {
    let stats = ApplyStats {
        zero_pages: 3,
        raw_pages: 5,
        lz4_pages: 7,
        delta_pages: 11,
        rounds: 2,
    };
    let json = serde_json::to_value(stats).unwrap();
    assert_eq!(json["zero_pages"], 3);
    assert_eq!(json["delta_pages"], 11);
    assert_eq!(json["rounds"], 2);
    let check = SourceCheck::Mismatch {
        pages: 10,
        differing: 1,
        first: vec![9],
    };
    let json = serde_json::to_value(&check).unwrap();
    assert_eq!(json["Mismatch"]["first"][0], 9);
}
