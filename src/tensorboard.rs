//! TensorBoard event files (`RUN_DIR/tensorboard/events.out.tfevents.*`)
//! with the scalars of every step and epoch, for a live graph in
//! `tensorboard --logdir runs`. Written by hand: the one crate that writes
//! them (tensorboard-rs) is unmaintained since 2022 and pulls in protobuf 2
//! and image 0.23; the format needs only a few protobuf fields and CRC-32C.
//!
//! A file is a sequence of TFRecords (length, masked CRC of the length,
//! payload, masked CRC of the payload); each payload is an `Event` message.

use anyhow::{Context, Result};
use std::io::Write;
use std::path::Path;

/// CRC-32C (Castagnoli), as TFRecord uses it.
pub fn crc32c(bytes: &[u8]) -> u32 {
    static TABLE: std::sync::OnceLock<[u32; 256]> = std::sync::OnceLock::new();
    let table = TABLE.get_or_init(|| {
        let mut t = [0u32; 256];
        for (i, slot) in t.iter_mut().enumerate() {
            let mut c = i as u32;
            for _ in 0..8 {
                c = if c & 1 != 0 {
                    0x82F6_3B78 ^ (c >> 1)
                } else {
                    c >> 1
                };
            }
            *slot = c;
        }
        t
    });
    !bytes.iter().fold(!0u32, |c, &b| {
        table[((c ^ b as u32) & 0xff) as usize] ^ (c >> 8)
    })
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let c = crc32c(bytes);
    c.rotate_right(15).wrapping_add(0xa282_ead8)
}

/// Protobuf encoding of the few fields we write.
fn varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

fn bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    varint(out, ((field << 3) | 2) as u64);
    varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// `Event { wall_time, step, file_version | summary }`.
fn event(wall_time: f64, step: u64, body: &[u8], body_field: u32) -> Vec<u8> {
    let mut e = Vec::new();
    e.push(0x09); // field 1, fixed64: wall_time
    e.extend_from_slice(&wall_time.to_le_bytes());
    e.push(0x10); // field 2, varint: step
    varint(&mut e, step);
    bytes_field(&mut e, body_field, body);
    e
}

/// `Summary { value: [Value { tag, simple_value }] }`.
fn summary(scalars: &[(&str, f64)]) -> Vec<u8> {
    let mut s = Vec::new();
    for (tag, v) in scalars {
        let mut value = Vec::new();
        bytes_field(&mut value, 1, tag.as_bytes());
        value.push(0x15); // field 2, fixed32: simple_value
        value.extend_from_slice(&(*v as f32).to_le_bytes());
        bytes_field(&mut s, 1, &value);
    }
    s
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// An open event file.
pub struct EventWriter {
    file: std::io::BufWriter<std::fs::File>,
    path: std::path::PathBuf,
}

impl EventWriter {
    /// Starts a new event file in `dir` (created if needed).
    pub fn create(dir: &Path) -> Result<EventWriter> {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let t = now();
        let path = dir.join(format!(
            "events.out.tfevents.{}.{}.{}",
            t as u64,
            crate::run_dir::hostname(),
            std::process::id()
        ));
        let file = std::fs::File::create(&path)
            .with_context(|| format!("cannot create {}", path.display()))?;
        let mut w = EventWriter {
            file: std::io::BufWriter::new(file),
            path,
        };
        w.record(&event(t, 0, b"brain.Event:2", 3))?;
        Ok(w)
    }

    fn record(&mut self, payload: &[u8]) -> Result<()> {
        let len = (payload.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(payload.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(payload);
        rec.extend_from_slice(&masked_crc(payload).to_le_bytes());
        self.file
            .write_all(&rec)
            .with_context(|| format!("cannot write {} (disk full?)", self.path.display()))
    }

    /// Scalars under their tags at `step`.
    pub fn scalars(&mut self, step: u64, scalars: &[(&str, f64)]) -> Result<()> {
        self.record(&event(now(), step, &summary(scalars), 5))
    }

    pub fn flush(&mut self) -> Result<()> {
        self.file
            .flush()
            .with_context(|| format!("cannot write {} (disk full?)", self.path.display()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_standard_check_value() {
        // The CRC-32C of "123456789" is 0xE3069283 (RFC 3720, appendix B.4).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b""), 0);
    }

    /// Reads the records back, checking both CRCs of each.
    fn records(bytes: &[u8]) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            assert_eq!(
                u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()),
                masked_crc(len_bytes)
            );
            let payload = &bytes[at + 12..at + 12 + len];
            let crc = u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap());
            assert_eq!(crc, masked_crc(payload));
            out.push(payload.to_vec());
            at += 16 + len;
        }
        out
    }

    #[test]
    fn event_files_hold_checked_records_with_the_scalars() {
        let dir = tempfile::tempdir().unwrap();
        let mut w = EventWriter::create(dir.path()).unwrap();
        w.scalars(7, &[("train/loss", 0.5), ("lr", 0.001)]).unwrap();
        w.flush().unwrap();
        let file = std::fs::read_dir(dir.path())
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
            .path();
        assert!(
            file.file_name()
                .unwrap()
                .to_string_lossy()
                .starts_with("events.out.tfevents.")
        );
        let recs = records(&std::fs::read(&file).unwrap());
        assert_eq!(recs.len(), 2);
        assert!(recs[0].ends_with(b"brain.Event:2"));
        // step 7, then the tags and the float 0.5 as little-endian bytes.
        let e = &recs[1];
        assert_eq!(&e[9..11], &[0x10, 7]);
        let text = String::from_utf8_lossy(e);
        assert!(text.contains("train/loss") && text.contains("lr"));
        assert!(
            e.windows(5).any(|w| w == [0x15, 0, 0, 0, 0x3f]),
            "simple_value 0.5"
        );
    }
}
