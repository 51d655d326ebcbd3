//! The template and the code agree on the table's shape.

use crate::helpers::template_table;

#[test]
fn the_table_declares_the_keys_the_store_writes() {
    let props = template_table();
    let keys: Vec<&str> = props["KeySchema"]
        .as_sequence()
        .expect("KeySchema")
        .iter()
        .filter_map(|k| k["AttributeName"].as_str())
        .collect();
    assert_eq!(keys, ["pk", "sk"]);
    let index = &props["GlobalSecondaryIndexes"][0];
    assert_eq!(
        index["IndexName"].as_str(),
        Some(plumbline::adapters::dynamodb::PENDING_INDEX)
    );
    assert_eq!(
        props["TimeToLiveSpecification"]["AttributeName"].as_str(),
        Some("expires_at")
    );
}
