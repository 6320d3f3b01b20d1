//! Body compression of the sync protocol: gzip (`content-encoding: gzip`).
//!
//! Batches travel gzip-compressed (event JSON shrinks about tenfold) at the
//! fastest level, because the appliance compresses on a small CPU while it
//! catches up. Decompression is always bounded: [`gunzip_bounded`] stops at
//! a limit, so a small body cannot expand into a large allocation.

use std::io::{Read, Write};

/// The `content-encoding` value of a compressed body.
pub const GZIP: &str = "gzip";

/// Why a compressed body was not decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// It expands beyond the limit (a decompression bomb, or simply too big).
    #[error("the body expands beyond {max} bytes")]
    TooLarge {
        /// The limit.
        max: usize,
    },
    /// It is not valid gzip.
    #[error("the body is not valid gzip: {0}")]
    Corrupt(String),
}

/// Compresses `bytes` with gzip at the fastest level.
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(bytes.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(bytes)?;
    enc.finish()
}

/// Decompresses gzip `bytes`, refusing output longer than `max` bytes.
pub fn gunzip_bounded(bytes: &[u8], max: usize) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .take(max as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| DecodeError::Corrupt(e.to_string()))?;
    if out.len() > max {
        return Err(DecodeError::TooLarge { max });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_bounds_expansion() {
        let text = br#"{"events":[{"seq":1},{"seq":2}]}"#.repeat(100);
        let z = gzip(&text).unwrap();
        assert!(z.len() < text.len() / 5, "{} -> {}", text.len(), z.len());
        assert_eq!(gunzip_bounded(&z, text.len()).unwrap(), text);
        // A bomb: 64 MiB of zeros in a few tens of KiB.
        let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        enc.write_all(&vec![0u8; 64 << 20]).unwrap();
        let bomb = enc.finish().unwrap();
        assert!(bomb.len() < 128 << 10, "{}", bomb.len());
        assert_eq!(
            gunzip_bounded(&bomb, 1 << 20),
            Err(DecodeError::TooLarge { max: 1 << 20 })
        );
        assert!(matches!(
            gunzip_bounded(b"not gzip", 100),
            Err(DecodeError::Corrupt(_))
        ));
    }
}
