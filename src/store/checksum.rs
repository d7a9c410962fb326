//! A checksum beside each part (`part-<ulid>.xxh3`, the XXH3-64 of the part's bytes), written
//! before the part becomes visible and checked before it is decoded: Parquet's own page
//! checksums are not written by Polars, and a flipped bit in a part would otherwise change
//! receipts silently. Parts written before checksums existed have none and are read as before.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use xxhash_rust::xxh3::Xxh3;

/// The extension of a part's checksum file.
pub const EXT: &str = "xxh3";

/// Where the checksum of the part at `part` is.
pub fn path_of(part: &Path) -> PathBuf {
    part.with_extension(EXT)
}

/// A part whose bytes are not those its checksum was taken of.
#[derive(Debug, thiserror::Error)]
#[error(
    "part {path} does not match its checksum (stored {expected:016x}, read {actual:016x}): its bytes changed after it was written"
)]
pub struct Mismatch {
    pub path: PathBuf,
    pub expected: u64,
    pub actual: u64,
}

/// A writer that hashes what goes through it, buffered: Parquet writers hand over pages
/// and headers in many small pieces (tens of thousands of system calls for a part).
pub struct Hashing<'f> {
    inner: io::BufWriter<&'f mut File>,
    hasher: Xxh3,
}

impl<'f> Hashing<'f> {
    pub fn new(inner: &'f mut File) -> Self {
        Hashing {
            inner: io::BufWriter::with_capacity(1 << 20, inner),
            hasher: Xxh3::new(),
        }
    }

    pub fn digest(&self) -> u64 {
        self.hasher.digest()
    }
}

impl Write for Hashing<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Check the part at `path` against its checksum, when it has one: whether it had one. An
/// error opening or reading is an `io::Error`; a mismatch is a [`Mismatch`].
pub fn verify(path: &Path) -> anyhow::Result<bool> {
    let stored = match std::fs::read(path_of(path)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e.into()),
    };
    // Bytes that are not its text (a flipped high bit) are a damaged checksum, as other text
    // is: read as an error opening it, the part was never set aside and stopped every start
    // (an audit).
    let expected = std::str::from_utf8(&stored)
        .ok()
        .and_then(|text| u64::from_str_radix(text.trim(), 16).ok());
    let Some(expected) = expected else {
        return Err(Mismatch {
            path: path.to_path_buf(),
            expected: 0,
            actual: hash_file(path)?,
        }
        .into());
    };
    let actual = hash_file(path)?;
    if actual != expected {
        return Err(Mismatch {
            path: path.to_path_buf(),
            expected,
            actual,
        }
        .into());
    }
    Ok(true)
}

fn hash_file(path: &Path) -> io::Result<u64> {
    let mut file = File::open(path)?;
    let mut hasher = Xxh3::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf)?;
        if n == 0 {
            return Ok(hasher.digest());
        }
        hasher.update(&buf[..n]);
    }
}
