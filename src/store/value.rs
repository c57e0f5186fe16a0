//! How a record and its embedding share one value of the `records` tree.
//!
//! `[n: u32 LE][n × f32 LE][postcard Record]`
//!
//! The embedding comes first so that a scan of embeddings (the flat file
//! and the graph catching up) reads it without decoding the record, and a
//! record rewrite (a move, a touch) copies it without decoding it. One
//! value per record, not a tree each: sled's cost is per insert, and an
//! import of a million records made two million of them for this.

use super::Record;

/// The value of a new record.
pub(super) fn encode(record: &Record, vector: &[f32]) -> Vec<u8> {
    encode_with(record, &vector_bytes(vector))
}

/// The value of a rewritten record: `embedding` is the embedding part of
/// its old value, kept as it was.
pub(super) fn encode_with(record: &Record, embedding: &[u8]) -> Vec<u8> {
    let record = postcard::to_stdvec(record).expect("records serialize");
    let mut value = Vec::with_capacity(embedding.len() + record.len());
    value.extend_from_slice(embedding);
    value.extend_from_slice(&record);
    value
}

/// The value's embedding part (its length prefix included) and record
/// part, or `None` when the prefix promises more bytes than there are.
pub(super) fn split(value: &[u8]) -> Option<(&[u8], &[u8])> {
    let n = u32::from_le_bytes(value.get(..4)?.try_into().ok()?) as usize;
    let end = n.checked_mul(4)?.checked_add(4)?;
    (value.len() >= end).then(|| value.split_at(end))
}

/// The record a value holds.
pub(super) fn record(value: &[u8]) -> Result<Record, String> {
    let (_, record) = split(value).ok_or("its embedding is cut short")?;
    postcard::from_bytes(record).map_err(|e| e.to_string())
}

/// The embedding a value holds.
pub(super) fn vector(value: &[u8]) -> Result<Vec<f32>, String> {
    let (embedding, _) = split(value).ok_or("its embedding is cut short")?;
    Ok(floats(&embedding[4..]))
}

/// An embedding with its length prefix.
pub(super) fn vector_bytes(v: &[f32]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(4 + v.len() * 4);
    bytes.extend_from_slice(&(v.len() as u32).to_le_bytes());
    bytes.extend(v.iter().flat_map(|x| x.to_le_bytes()));
    bytes
}

/// Little-endian f32s (no prefix), as schema 4's `vectors` tree held them.
pub(super) fn floats(b: &[u8]) -> Vec<f32> {
    b.chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_gives_back_its_record_and_embedding_and_refuses_a_short_one() {
        let record = Record {
            path: b"/a/1.png".to_vec(),
            size: 10,
            mtime_ns: 1,
            hash: [7; 32],
            label: Some("x".into()),
            width: 4,
            height: 4,
            recon_error: 0.1,
            ingested_at: 0,
        };
        let value = encode(&record, &[1.0, -2.5, 3.0]);
        assert_eq!(super::record(&value).unwrap(), record);
        assert_eq!(vector(&value).unwrap(), [1.0, -2.5, 3.0]);
        let mut moved = record.clone();
        moved.path = b"/b/1.png".to_vec();
        let (embedding, _) = split(&value).unwrap();
        let rewritten = encode_with(&moved, embedding);
        assert_eq!(vector(&rewritten).unwrap(), [1.0, -2.5, 3.0]);
        assert_eq!(super::record(&rewritten).unwrap(), moved);
        assert_eq!(vector(&encode(&record, &[])).unwrap(), Vec::<f32>::new());
        // A prefix promising more floats than the value holds.
        assert!(vector(&value[..10]).is_err());
        assert!(super::record(&[0xff, 0xff, 0xff, 0xff]).is_err());
        assert!(split(&[1, 0]).is_none());
    }
}
