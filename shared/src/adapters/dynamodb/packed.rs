//! The large JSON attributes of items (an event's envelope, an entity's state) stored deflated
//! (raw DEFLATE, RFC 1951), as binary. DynamoDB bills a write per started KB of the item, so a
//! ~1.1 KB event item costs two units on every write and ~0.8 KB costs one. Items written before
//! keep their JSON text attribute and are read as they are.
//!
//! libdeflate, not a streaming compressor: on the ~1 KB each event packs, a stream's fixed costs
//! (its tables' set-up, the block's Huffman codes) were most of the time, about 17 µs against 10
//! for the same bytes (docs/benchmarks.md). Each thread keeps its compressor and decompressor.

use std::cell::RefCell;
use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;
use libdeflater::{CompressionLvl, Compressor, DecompressionError, Decompressor};

use crate::ports::StoreError;

/// No JSON attribute of ours inflates past this (an item is at most 400 KB deflated); a larger
/// result is corruption, not data.
const MAX_INFLATED: usize = 8 << 20;
/// zlib's default level: on ~1 KB of JSON the higher levels gain a few bytes at most, and it
/// gives the sizes the write-unit arithmetic in docs/benchmarks.md was measured with.
const LEVEL: i32 = 6;

thread_local! {
    static COMPRESSOR: RefCell<Compressor> =
        RefCell::new(Compressor::new(CompressionLvl::new(LEVEL).expect("6 is a valid level")));
    static DECOMPRESSOR: RefCell<Decompressor> = RefCell::new(Decompressor::new());
}

fn deflate(bytes: &[u8]) -> Vec<u8> {
    COMPRESSOR.with_borrow_mut(|c| {
        let mut out = vec![0; c.deflate_compress_bound(bytes.len())];
        let n = c
            .deflate_compress(bytes, &mut out)
            .expect("the compress bound always holds the output");
        out.truncate(n);
        out
    })
}

/// Inflates into a buffer sized from the input, grown while the data is longer: the stored
/// form does not record its inflated length.
fn inflate(bytes: &[u8]) -> Result<Vec<u8>, String> {
    DECOMPRESSOR.with_borrow_mut(|d| {
        let mut size = bytes.len().saturating_mul(4).clamp(4096, MAX_INFLATED);
        loop {
            let mut out = vec![0; size];
            match d.deflate_decompress(bytes, &mut out) {
                Ok(n) => {
                    out.truncate(n);
                    return Ok(out);
                }
                Err(DecompressionError::InsufficientSpace) if size < MAX_INFLATED => {
                    size = size.saturating_mul(4).min(MAX_INFLATED);
                }
                Err(e) => return Err(e.to_string()),
            }
        }
    })
}

/// The packed form of `name`'s JSON text is stored under this attribute.
fn packed_name(name: &str) -> String {
    format!("{name}_z")
}

/// `json` deflated, as the binary attribute that stands for `name`.
pub(super) fn pack(name: &str, json: &str) -> (String, AttributeValue) {
    let bytes = deflate(json.as_bytes());
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
        let inflated =
            inflate(bytes.as_ref()).map_err(|e| StoreError::Corrupt(format!("{name}: {e}")))?;
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

    /// Items packed before libdeflate, by miniz_oxide at level 6, read back unchanged: the
    /// stored form is plain raw DEFLATE, whoever wrote it.
    #[test]
    fn items_packed_by_the_earlier_compressor_read_back() {
        let json = r#"{"schema":"plumbline.event/v1","type":"payment.succeeded","data":{"amount":{"amount_minor":2000,"currency":"EUR"},"status":"succeeded"}}"#;
        let miniz = hex::decode(
            "458cb10ac3300c44ff45b349dd8ed9fb0385cec5950509444ab0a58009fef72853b6bb7bdc3ba0e2449c\
             60846d31fe2fb3d0403b893ef62704d0b6d1c55263df866a884499b2a39cd46f07245e4df44e3f9e652d\
             30be628c01d04a21c1e692f7f7033d40d5a456bddfb2de4f",
        )
        .expect("hex");
        let item = HashMap::from([("envelope_z".to_owned(), AttributeValue::B(Blob::new(miniz)))]);
        assert_eq!(
            unpack(&item, "envelope").expect("unpack").as_deref(),
            Some(json)
        );
    }

    /// A long, repetitive state inflates to many times its packed size: the buffer grows to it.
    /// Past the limit it is corruption, not an allocation of whatever the bytes claim.
    #[test]
    fn long_text_inflates_whole_and_past_the_limit_is_corruption() {
        let long = format!("[{}0]", "0,".repeat(200_000));
        let (name, value) = pack("entity", &long);
        assert!(value.as_b().expect("binary").as_ref().len() * 100 < long.len());
        let item = HashMap::from([(name, value)]);
        assert_eq!(unpack(&item, "entity").expect("unpack"), Some(long));

        let bomb = deflate(&vec![b' '; MAX_INFLATED + 1]);
        let item = HashMap::from([("entity_z".to_owned(), AttributeValue::B(Blob::new(bomb)))]);
        assert!(matches!(
            unpack(&item, "entity"),
            Err(StoreError::Corrupt(_))
        ));
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
