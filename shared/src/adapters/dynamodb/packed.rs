//! The large JSON attributes of items (an event's envelope, an entity's state) stored deflated,
//! as binary. DynamoDB bills a write per started KB of the item, so a ~1.1 KB event item costs
//! two units on every write and ~0.8 KB costs one. Items written before keep their JSON text
//! attribute and are read as they are.

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use miniz_oxide::deflate::compress_to_vec;
use miniz_oxide::inflate::decompress_to_vec_with_limit;

use crate::ports::StoreError;

/// No JSON attribute of ours inflates past this (an item is at most 400 KB deflated); a larger
/// result is corruption, not data.
const MAX_INFLATED: usize = 8 << 20;
/// zlib's default level: on ~1 KB of JSON the higher levels gain a few bytes at most.
const LEVEL: u8 = 6;

/// The packed form of `name`'s JSON text is stored under this attribute.
fn packed_name(name: &str) -> String {
    format!("{name}_z")
}

/// `json` deflated, as the binary attribute that stands for `name`.
pub(super) fn pack(name: &str, json: &str) -> (String, AttributeValue) {
    let bytes = compress_to_vec(json.as_bytes(), LEVEL);
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
        let inflated = decompress_to_vec_with_limit(bytes.as_ref(), MAX_INFLATED)
            .map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))?;
        let text =
            String::from_utf8(inflated).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))?;
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
