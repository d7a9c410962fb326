//! Write-ahead log segments: the cheap durable append behind a webhook's 2xx.
//!
//! Each batch of requests is one `write` and one `fdatasync` (group commit). A segment's rows
//! are later written as the Parquet part with the segment's own id, after which the segment is
//! deleted; on start-up a segment whose part exists is already flushed, one without is replayed.
//!
//! Frame: `len: u32 LE | crc32(payload): u32 LE | payload`. A torn tail (crash mid-write) fails
//! its length or checksum; its requests were never acknowledged. A bad frame anywhere else is
//! damage (a flipped bit, a bad block): replay skips it and looks for the next frame whose
//! checksum holds, so one bad byte does not lose every acknowledged receipt after it.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use ulid::Ulid;

use super::sync_dir;

/// An open segment being appended to.
pub struct Segment {
    pub id: Ulid,
    pub path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes of whole, durable frames.
    len: u64,
    /// A failed append could not be cut back: appending after a torn frame would hide the
    /// new frames from replay, so this segment takes no more.
    poisoned: bool,
}

impl Segment {
    /// Create a new, empty segment `{dir}/{prefix}-{ulid}.wal`, durable before it is used.
    pub fn create(dir: &Path, prefix: &str) -> io::Result<Self> {
        fs::create_dir_all(dir)?;
        let id = Ulid::generate();
        let path = segment_path(dir, prefix, id);
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        sync_dir(dir)?;
        Ok(Self {
            id,
            path,
            file,
            buf: Vec::new(),
            len: 0,
            poisoned: false,
        })
    }

    /// Append records and make them durable: one write, one fdatasync.
    pub fn append<'a>(&mut self, records: impl IntoIterator<Item = &'a [u8]>) -> io::Result<()> {
        self.buf.clear();
        for r in records {
            let len = u32::try_from(r.len()).map_err(|_| io::Error::other("record over 4 GiB"))?;
            self.buf.extend_from_slice(&len.to_le_bytes());
            self.buf
                .extend_from_slice(&crc32fast::hash(r).to_le_bytes());
            self.buf.extend_from_slice(r);
        }
        if self.poisoned {
            return Err(io::Error::other(
                "log segment unusable after an earlier write error",
            ));
        }
        let result = self
            .file
            .write_all(&self.buf)
            .and_then(|()| self.file.sync_data());
        match result {
            Ok(()) => {
                self.len += self.buf.len() as u64;
                Ok(())
            }
            Err(e) => {
                // Cut off whatever part of the batch reached the file.
                if self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.sync_data())
                    .is_err()
                {
                    self.poisoned = true;
                }
                Err(e)
            }
        }
    }
}

pub fn segment_path(dir: &Path, prefix: &str, id: Ulid) -> PathBuf {
    dir.join(format!("{prefix}-{id}.wal"))
}

/// Segments left in `dir` for `prefix`, oldest first.
pub fn segments(dir: &Path, prefix: &str) -> io::Result<Vec<(Ulid, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        let id = path
            .file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| {
                n.strip_prefix(prefix)?
                    .strip_prefix('-')?
                    .strip_suffix(".wal")
            })
            .and_then(|id| Ulid::from_string(id).ok());
        if let Some(id) = id {
            out.push((id, path));
        }
    }
    out.sort();
    Ok(out)
}

/// What a segment holds: its intact records, and the byte ranges that were not whole frames.
pub struct Replay {
    pub records: Vec<Vec<u8>>,
    /// (offset, length) of each run of bytes skipped, in file order.
    pub skipped: Vec<(usize, usize)>,
    pub len: usize,
}

impl Replay {
    /// Only the end was bad: a crash mid-append, whose requests were never acknowledged.
    pub fn only_torn_tail(&self) -> bool {
        matches!(self.skipped.as_slice(), [(at, n)] if at + n == self.len)
    }

    pub fn skipped_bytes(&self) -> usize {
        self.skipped.iter().map(|(_, n)| n).sum()
    }
}

/// The whole frame at `at`, if its length fits and its checksum holds.
fn frame_at(bytes: &[u8], at: usize) -> Option<&[u8]> {
    let header = bytes.get(at..at + 8)?;
    let len = u32::from_le_bytes(header[..4].try_into().ok()?) as usize;
    let crc = u32::from_le_bytes(header[4..].try_into().ok()?);
    let payload = bytes.get(at + 8..(at + 8).checked_add(len)?)?;
    // An empty record is never written: a run of zeros is not a frame.
    (len > 0 && crc32fast::hash(payload) == crc).then_some(payload)
}

/// Read the intact records of a segment, skipping damaged bytes to the next intact frame.
pub fn replay(path: &Path) -> io::Result<Replay> {
    let mut bytes = Vec::new();
    File::open(path)?.read_to_end(&mut bytes)?;
    let mut records = Vec::new();
    let mut skipped: Vec<(usize, usize)> = Vec::new();
    let mut at = 0;
    while at < bytes.len() {
        if let Some(payload) = frame_at(&bytes, at) {
            records.push(payload.to_vec());
            at += 8 + payload.len();
            continue;
        }
        let next = (at + 1..bytes.len())
            .find(|&i| frame_at(&bytes, i).is_some())
            .unwrap_or(bytes.len());
        skipped.push((at, next - at));
        at = next;
    }
    Ok(Replay {
        records,
        skipped,
        len: bytes.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tail() {
        let dir = tempfile::tempdir().unwrap();
        let mut seg = Segment::create(dir.path(), "inbox").unwrap();
        seg.append([b"one".as_slice(), b"two".as_slice()]).unwrap();
        seg.append([b"three".as_slice()]).unwrap();
        let path = seg.path.clone();
        drop(seg);
        let r = replay(&path).unwrap();
        assert_eq!(
            r.records,
            vec![b"one".to_vec(), b"two".to_vec(), b"three".to_vec()]
        );
        assert!(r.skipped.is_empty());

        // Cut the last record in half: the first two survive, the tail is reported.
        let len = fs::metadata(&path).unwrap().len();
        OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(len - 3)
            .unwrap();
        let r = replay(&path).unwrap();
        assert_eq!(r.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(r.skipped, [(22, 10)]);
        assert!(r.only_torn_tail());

        // A flipped byte fails one frame's checksum; the frames after it are found again.
        let mut bytes = fs::read(&path).unwrap();
        bytes[9] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        let r = replay(&path).unwrap();
        assert_eq!(r.records, vec![b"two".to_vec()]);
        assert_eq!(r.skipped, [(0, 11), (22, 10)]);
        assert!(!r.only_torn_tail());

        assert_eq!(segments(dir.path(), "inbox").unwrap().len(), 1);
        assert_eq!(segments(dir.path(), "plan").unwrap().len(), 0);
    }
}
