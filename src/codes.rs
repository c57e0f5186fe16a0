//! Latent codes: images stored as their quantized bottleneck latents, a few
//! dozen bytes each, which the model's decoder turns back into images.
//! Plain codecs usually win at the same size; this is the autoencoder's
//! compression, and what lets `serve` draw a file that has vanished.
//!
//! The file describes itself (little-endian):
//!
//! ```text
//! "IMGSCODE"            8 bytes, then format version (u32, 1)
//! header length (u32), header JSON: model, fingerprint, latent, bits, count
//! per image:            width u32, height u32 (the original's),
//!                       name length u16, name (UTF-8: the file's name),
//!                       lo f32, hi f32 (the latent's range),
//!                       latent × bits packed, most significant bit first
//! blake3 of all the above (32 bytes)
//! ```
//!
//! Each latent is quantized on its own range: `q = round((z - lo) / (hi -
//! lo) · (2^bits - 1))`.

use serde::{Deserialize, Serialize};

/// The magic bytes that open a codes file.
pub const MAGIC: &[u8; 8] = b"IMGSCODE";
pub const VERSION: u32 = 1;

#[derive(Debug, thiserror::Error)]
pub enum CodesError {
    #[error("not a latent codes file (it does not start with IMGSCODE)")]
    NotCodes,
    #[error("version {0} of the codes format is newer than this imgsearch reads ({VERSION})")]
    TooNew(u32),
    #[error("truncated: the file ends inside {0}")]
    Truncated(&'static str),
    #[error("corrupt: {0}")]
    Corrupt(String),
    #[error("--bits must be 1 to 8, not {0}")]
    Bits(u8),
}

/// What the header says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CodesHeader {
    pub model: String,
    pub fingerprint: String,
    pub latent: usize,
    pub bits: u8,
    pub count: usize,
}

/// One image's code, dequantized.
#[derive(Debug, Clone, PartialEq)]
pub struct Coded {
    /// The file's name (no folders): what decompress names its output.
    pub name: String,
    pub width: u32,
    pub height: u32,
    pub latent: Vec<f32>,
}

/// The bytes of a codes file holding `images` (latents as the model gives
/// them) quantized to `bits` per value.
pub fn encode(header: &CodesHeader, images: &[Coded]) -> Result<Vec<u8>, CodesError> {
    if !(1..=8).contains(&header.bits) {
        return Err(CodesError::Bits(header.bits));
    }
    let header = CodesHeader {
        count: images.len(),
        ..header.clone()
    };
    let json = serde_json::to_vec(&header).expect("a header serializes");
    let mut out = MAGIC.to_vec();
    out.extend(VERSION.to_le_bytes());
    out.extend((json.len() as u32).to_le_bytes());
    out.extend(json);
    let levels = ((1u32 << header.bits) - 1) as f32;
    for image in images {
        out.extend(image.width.to_le_bytes());
        out.extend(image.height.to_le_bytes());
        let name = truncate_name(&image.name);
        out.extend((name.len() as u16).to_le_bytes());
        out.extend(name.as_bytes());
        let lo = image.latent.iter().copied().fold(f32::INFINITY, f32::min);
        let hi = image
            .latent
            .iter()
            .copied()
            .fold(f32::NEG_INFINITY, f32::max);
        let span = (hi - lo).max(f32::MIN_POSITIVE);
        out.extend(lo.to_le_bytes());
        out.extend(hi.to_le_bytes());
        let mut bits = BitWriter::default();
        for z in &image.latent {
            let q = ((z - lo) / span * levels).round().clamp(0.0, levels) as u32;
            bits.push(q, header.bits);
        }
        out.extend(bits.finish());
    }
    let checksum = blake3::hash(&out);
    out.extend(checksum.as_bytes());
    Ok(out)
}

/// A name of at most `u16::MAX` bytes, cut at a character boundary.
fn truncate_name(name: &str) -> &str {
    let mut end = name.len().min(u16::MAX as usize);
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    &name[..end]
}

/// Reads a codes file's bytes: the header and every image's latent.
pub fn decode(bytes: &[u8]) -> Result<(CodesHeader, Vec<Coded>), CodesError> {
    if bytes.len() < MAGIC.len() || &bytes[..MAGIC.len()] != MAGIC {
        return Err(CodesError::NotCodes);
    }
    let mut r = Reader {
        bytes,
        at: MAGIC.len(),
    };
    let version = r.u32("the version")?;
    if version > VERSION {
        return Err(CodesError::TooNew(version));
    }
    let json_len = r.u32("the header")? as usize;
    let header: CodesHeader = serde_json::from_slice(r.take(json_len, "the header")?)
        .map_err(|e| CodesError::Corrupt(format!("the header is not readable: {e}")))?;
    if !(1..=8).contains(&header.bits) || header.latent == 0 || header.latent > 1 << 20 {
        return Err(CodesError::Corrupt(format!(
            "the header says {} bits of {} values",
            header.bits, header.latent
        )));
    }
    // Each image takes at least its fixed fields: a count that cannot fit
    // is caught before anything is allocated for it.
    let packed = (header.latent * header.bits as usize).div_ceil(8);
    let least = 4 + 4 + 2 + 8 + packed;
    if header.count > bytes.len() / least {
        return Err(CodesError::Truncated("the images the header counts"));
    }
    let levels = ((1u32 << header.bits) - 1) as f32;
    let mut images = Vec::with_capacity(header.count);
    for _ in 0..header.count {
        let (width, height) = (r.u32("an image")?, r.u32("an image")?);
        let name_len = r.u16("an image")? as usize;
        let name = String::from_utf8(r.take(name_len, "an image's name")?.to_vec())
            .map_err(|_| CodesError::Corrupt("an image's name is not UTF-8".into()))?;
        let (lo, hi) = (r.f32("an image")?, r.f32("an image")?);
        let span = (hi - lo).max(f32::MIN_POSITIVE);
        let mut bits = BitReader::new(r.take(packed, "an image's code")?);
        let latent = (0..header.latent)
            .map(|_| lo + bits.pull(header.bits) as f32 / levels * span)
            .collect();
        images.push(Coded {
            name,
            width,
            height,
            latent,
        });
    }
    let body = r.at;
    let stored = r.take(32, "the checksum")?;
    if stored != blake3::hash(&bytes[..body]).as_bytes() {
        return Err(CodesError::Corrupt("the checksum does not match".into()));
    }
    if r.at != bytes.len() {
        return Err(CodesError::Corrupt(format!(
            "{} bytes after the checksum",
            bytes.len() - r.at
        )));
    }
    Ok((header, images))
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &'static str) -> Result<&'a [u8], CodesError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len());
        let end = end.ok_or(CodesError::Truncated(what))?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, CodesError> {
        Ok(u32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, CodesError> {
        Ok(u16::from_le_bytes(self.take(2, what)?.try_into().unwrap()))
    }

    fn f32(&mut self, what: &'static str) -> Result<f32, CodesError> {
        Ok(f32::from_le_bytes(self.take(4, what)?.try_into().unwrap()))
    }
}

/// Values of `bits` bits packed most significant bit first.
#[derive(Default)]
struct BitWriter {
    out: Vec<u8>,
    used: u8,
}

impl BitWriter {
    fn push(&mut self, value: u32, bits: u8) {
        for i in (0..bits).rev() {
            if self.used == 0 {
                self.out.push(0);
            }
            let bit = ((value >> i) & 1) as u8;
            *self.out.last_mut().expect("pushed above") |= bit << (7 - self.used);
            self.used = (self.used + 1) % 8;
        }
    }

    fn finish(self) -> Vec<u8> {
        self.out
    }
}

struct BitReader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> BitReader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes, at: 0 }
    }

    fn pull(&mut self, bits: u8) -> u32 {
        let mut value = 0;
        for _ in 0..bits {
            let bit = (self.bytes[self.at / 8] >> (7 - self.at % 8)) & 1;
            value = (value << 1) | bit as u32;
            self.at += 1;
        }
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(bits: u8) -> (CodesHeader, Vec<Coded>) {
        let header = CodesHeader {
            model: "digits".into(),
            fingerprint: "abc".into(),
            latent: 5,
            bits,
            count: 2,
        };
        let images = vec![
            Coded {
                name: "a.png".into(),
                width: 28,
                height: 28,
                latent: vec![-1.0, 0.5, 2.0, 0.0, 1.25],
            },
            Coded {
                name: "b é.jpg".into(),
                width: 640,
                height: 480,
                latent: vec![3.0; 5],
            },
        ];
        (header, images)
    }

    #[test]
    fn codes_round_trip_within_a_quantization_step() {
        for bits in [1u8, 3, 4, 8] {
            let (header, images) = sample(bits);
            let bytes = encode(&header, &images).unwrap();
            let (read, decoded) = decode(&bytes).unwrap();
            assert_eq!(read, header);
            let step = 3.0 / ((1u32 << bits) - 1) as f32;
            for (a, b) in images.iter().zip(&decoded) {
                assert_eq!((&a.name, a.width, a.height), (&b.name, b.width, b.height));
                for (x, y) in a.latent.iter().zip(&b.latent) {
                    assert!(
                        (x - y).abs() <= step / 2.0 + 1e-6,
                        "{bits} bits: {x} vs {y}"
                    );
                }
            }
        }
    }

    #[test]
    fn damaged_files_are_refused_with_what_is_wrong() {
        let (header, images) = sample(8);
        let bytes = encode(&header, &images).unwrap();
        for cut in [4, 12, 20, bytes.len() - 40, bytes.len() - 1] {
            let err = decode(&bytes[..cut]).unwrap_err();
            assert!(
                matches!(err, CodesError::Truncated(_) | CodesError::NotCodes),
                "cut at {cut}: {err}"
            );
        }
        let mut flipped = bytes.clone();
        let at = flipped.len() - 40;
        flipped[at] ^= 0x10;
        assert!(matches!(decode(&flipped), Err(CodesError::Corrupt(_))));
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(matches!(decode(&longer), Err(CodesError::Corrupt(_))));
        assert!(matches!(decode(b"PNG...."), Err(CodesError::NotCodes)));
        // A header counting more images than the bytes could hold.
        let mut huge = header.clone();
        huge.latent = 5;
        let mut lying = encode(&huge, &images).unwrap();
        let json_at = 16;
        let json_len = u32::from_le_bytes(lying[12..16].try_into().unwrap()) as usize;
        let text = String::from_utf8(lying[json_at..json_at + json_len].to_vec()).unwrap();
        let swapped = text.replace("\"count\":2", "\"count\":9");
        lying.splice(json_at..json_at + json_len, swapped.bytes());
        assert!(matches!(decode(&lying), Err(CodesError::Truncated(_))));
        assert!(matches!(
            encode(&CodesHeader { bits: 9, ..header }, &images),
            Err(CodesError::Bits(9))
        ));
    }
}
