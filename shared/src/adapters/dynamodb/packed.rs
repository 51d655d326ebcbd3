//! The large JSON attributes of items (an event's envelope, an entity's state) stored deflated,
//! as binary. DynamoDB bills a write per started KB of the item, so a ~1.1 KB event item costs
//! two units on every write and ~0.8 KB costs one. Items written before keep their JSON text
//! attribute and are read as they are.

use std::collections::HashMap;
use std::io::{Read, Write};

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use flate2::Compression;
use flate2::read::DeflateDecoder;
use flate2::write::DeflateEncoder;

use crate::ports::StoreError;

/// No JSON attribute of ours inflates past this (an item is at most 400 KB deflated); a larger
/// result is corruption, not data.
const MAX_INFLATED: u64 = 8 << 20;

/// The packed form of `name`'s JSON text is stored under this attribute.
fn packed_name(name: &str) -> String {
    format!("{name}_z")
}

/// `json` deflated, as the binary attribute that stands for `name`.
pub(super) fn pack(name: &str, json: &str) -> (String, AttributeValue) {
    let mut encoder = DeflateEncoder::new(Vec::with_capacity(json.len()), Compression::default());
    encoder
        .write_all(json.as_bytes())
        .expect("deflating into memory cannot fail");
    let bytes = encoder.finish().expect("deflating into memory cannot fail");
    (packed_name(name), AttributeValue::B(Blob::new(bytes)))
}

/// The JSON text of `name`, packed or not; `None` when the item has neither.
pub(super) fn unpack(
    item: &HashMap<String, AttributeValue>,
    name: &str,
) -> Result<Option<String>, StoreError> {
    if let Some(value) = item.get(&packed_name(name)) {
        let bytes = value
            .as_b()
            .map_err(|_| StoreError::Corrupt(format!("{name}: not binary")))?;
        let mut text = String::new();
        DeflateDecoder::new(bytes.as_ref())
            .take(MAX_INFLATED)
            .read_to_string(&mut text)
            .map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))?;
        return Ok(Some(text));
    }
    Ok(item.get(name).and_then(|v| v.as_s().ok()).cloned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packed_text_comes_back_as_it_went_in() {
        let json = r#"{"schema":"plumbline.event/v1","data":{"amount":{"amount_minor":2000}}}"#;
        let (name, value) = pack("envelope", json);
        assert_eq!(name, "envelope_z");
        let item = HashMap::from([(name, value)]);
        assert_eq!(
            unpack(&item, "envelope").expect("unpack").as_deref(),
            Some(json)
        );
    }

    #[test]
    fn an_item_written_as_text_is_read_as_text() {
        let item = HashMap::from([("entity".to_owned(), AttributeValue::S("{}".into()))]);
        assert_eq!(
            unpack(&item, "entity").expect("unpack").as_deref(),
            Some("{}")
        );
        assert_eq!(unpack(&item, "envelope").expect("unpack"), None);
    }

    #[test]
    fn damaged_bytes_are_corruption() {
        let item = HashMap::from([(
            "entity_z".to_owned(),
            AttributeValue::B(Blob::new(vec![0xff, 0x00, 0x13])),
        )]);
        assert!(matches!(
            unpack(&item, "entity"),
            Err(StoreError::Corrupt(_))
        ));
    }
}
