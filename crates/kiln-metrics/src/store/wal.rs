//! The write-ahead log: framed, checksummed records in numbered files `wal-<gen>.log`.
//!
//! Frame: `u32 LE payload length`, `u32 LE CRC-32 of payload`, payload. Payloads:
//! - `1` series: `uvarint id`, labels — always written before the id's first samples in a file;
//! - `2` samples: `uvarint n`, then n × (`uvarint id`, `varint t`, `u64 LE value bits`).
//!
//! Each file is self-contained: a new generation starts with the series records of every live
//! series, so older generations can be deleted once their data is in a segment. Replay stops at
//! the first short or corrupt frame (a torn tail after a crash) and reports where, so the tail
//! can be cut off before appending resumes.

use super::codec::{Malformed, Reader, crc32, put_labels, put_uvarint, put_varint};
use crate::labels::Labels;

const TAG_SERIES: u8 = 1;
const TAG_SAMPLES: u8 = 2;

/// One decoded WAL record.
#[derive(Debug, Clone, PartialEq)]
pub enum Record {
    /// A series id is bound to labels.
    Series(u64, Labels),
    /// Samples `(id, t, v)`.
    Samples(Vec<(u64, i64, f64)>),
}

/// Appends a framed series record.
pub fn encode_series(out: &mut Vec<u8>, id: u64, labels: &Labels) {
    let mut p = vec![TAG_SERIES];
    put_uvarint(&mut p, id);
    put_labels(&mut p, labels);
    frame(out, &p);
}

/// The number of bytes [`encode_series`] appends for this record, so a buffer of many can be
/// reserved exactly (the persist writes one for every head series at once).
pub fn series_record_len(id: u64, labels: &Labels) -> usize {
    let str_len = |s: &str| uvarint_len(s.len() as u64) + s.len();
    let payload = 1
        + uvarint_len(id)
        + uvarint_len(labels.len() as u64)
        + labels
            .iter()
            .map(|l| str_len(&l.name) + str_len(&l.value))
            .sum::<usize>();
    8 + payload
}

fn uvarint_len(v: u64) -> usize {
    (64 - (v | 1).leading_zeros() as usize).div_ceil(7)
}

/// Builds sample records in place, framing them when finished.
#[derive(Debug, Default)]
pub struct SampleBatch {
    payload: Vec<u8>,
    n: u64,
}

impl SampleBatch {
    /// Adds one sample.
    pub fn push(&mut self, id: u64, t: i64, v: f64) {
        put_uvarint(&mut self.payload, id);
        put_varint(&mut self.payload, t);
        self.payload.extend_from_slice(&v.to_bits().to_le_bytes());
        self.n += 1;
    }

    /// Frames the batch into `out` (nothing when empty).
    pub fn finish(self, out: &mut Vec<u8>) {
        if self.n == 0 {
            return;
        }
        let mut p = vec![TAG_SAMPLES];
        put_uvarint(&mut p, self.n);
        p.extend_from_slice(&self.payload);
        frame(out, &p);
    }
}

fn frame(out: &mut Vec<u8>, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc32(payload).to_le_bytes());
    out.extend_from_slice(payload);
}

/// Decodes a whole file; returns the records and the byte length of the valid prefix.
pub fn decode_all(buf: &[u8]) -> (Vec<Record>, usize) {
    let mut records = Vec::new();
    let mut pos = 0;
    while let Some((rec, used)) = decode_frame(&buf[pos..]) {
        records.push(rec);
        pos += used;
    }
    (records, pos)
}

fn decode_frame(buf: &[u8]) -> Option<(Record, usize)> {
    let mut r = Reader::new(buf);
    let len = u32::from_le_bytes(r.bytes(4).ok()?.try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(r.bytes(4).ok()?.try_into().ok()?);
    let payload = r.bytes(len).ok()?;
    if crc32(payload) != crc {
        return None;
    }
    let rec = decode_payload(payload).ok()?;
    Some((rec, 8 + len))
}

fn decode_payload(p: &[u8]) -> Result<Record, Malformed> {
    let mut r = Reader::new(p);
    match r.u8()? {
        TAG_SERIES => Ok(Record::Series(r.uvarint()?, r.labels()?)),
        TAG_SAMPLES => {
            let n = r.uvarint()?;
            let mut out = Vec::new();
            for _ in 0..n {
                let id = r.uvarint()?;
                let t = r.varint()?;
                let v = f64::from_bits(r.u64_le()?);
                out.push((id, t, v));
            }
            Ok(Record::Samples(out))
        }
        _ => Err(Malformed),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let mut buf = Vec::new();
        let labels = Labels::new([("__name__", "up")]);
        encode_series(&mut buf, 7, &labels);
        let mut b = SampleBatch::default();
        b.push(7, 1000, 1.5);
        b.push(7, 2000, f64::NAN);
        b.finish(&mut buf);
        let full = buf.len();
        let (recs, used) = decode_all(&buf);
        assert_eq!(used, full);
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0], Record::Series(7, labels));
        // A torn last record is dropped, the valid prefix kept.
        let (recs, used) = decode_all(&buf[..full - 3]);
        assert_eq!(recs.len(), 1);
        assert!(used < full);
        // A flipped byte fails the checksum.
        buf[full - 1] ^= 0xff;
        assert_eq!(decode_all(&buf).0.len(), 1);
    }

    proptest::proptest! {
        #[test]
        fn a_series_records_length_is_known_before_it_is_written(
            id in proptest::prelude::any::<u64>(),
            pairs in proptest::collection::vec(("[a-z_]{1,12}", ".{1,200}"), 0..12),
        ) {
            let labels = Labels::new(pairs);
            let mut buf = vec![1, 2, 3];
            encode_series(&mut buf, id, &labels);
            proptest::prop_assert_eq!(buf.len() - 3, series_record_len(id, &labels));
        }
    }
}
