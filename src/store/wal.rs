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
//!
//! A segment starts with [`MAGIC`] and is allocated in steps of [`STEP`] bytes (zeros past the
//! last frame), its size made durable with its data. A crash leaves a whole number of steps; a
//! segment cut short (even exactly at a frame boundary, which no frame check can see) does
//! not, so the cut is found and reported instead of passing as a shorter log. Segments written
//! before this format (no magic) are read as before.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use ulid::Ulid;

use super::sync_dir;

/// The first bytes of a preallocated segment.
pub const MAGIC: &[u8; 8] = b"stwal\x002\n";
/// A segment's size is always a whole number of these.
pub const STEP: u64 = 4 * 1024 * 1024;

/// An open segment being appended to.
pub struct Segment {
    pub id: Ulid,
    pub path: PathBuf,
    file: File,
    buf: Vec<u8>,
    /// Bytes of the magic and of whole, durable frames: where the next frame goes.
    len: u64,
    /// The file's size: a whole number of [`STEP`]s.
    allocated: u64,
    /// A failed append could not be cut back: appending after a torn frame would hide the
    /// new frames from replay, so this segment takes no more.
    poisoned: bool,
}

impl Segment {
    /// Create a new, empty segment `{dir}/{prefix}-{ulid}.wal`, durable before it is used.
    pub fn create(dir: &Path, prefix: &str) -> io::Result<Self> {
        super::create_dir_durably(dir)?;
        let id = Ulid::generate();
        let path = segment_path(dir, prefix, id);
        let file = OpenOptions::new()
            .create_new(true)
            .write(true)
            .open(&path)?;
        let ready = (|| {
            file.write_all_at(MAGIC, 0)?;
            file.set_len(STEP)?;
            file.sync_all()?;
            sync_dir(dir)
        })();
        if let Err(e) = ready {
            // A full disk fails this each second the writer retries: no empty file per try.
            let _ = std::fs::remove_file(&path);
            return Err(e);
        }
        Ok(Self {
            id,
            path,
            file,
            buf: Vec::new(),
            len: MAGIC.len() as u64,
            allocated: STEP,
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
        let end = self.len + self.buf.len() as u64;
        let allocated = end.div_ceil(STEP).max(1) * STEP;
        let result = (|| {
            if allocated > self.allocated {
                self.file.set_len(allocated)?;
            }
            self.file.write_all_at(&self.buf, self.len)?;
            // Data and, when it grew, the size with it.
            self.file.sync_data()
        })();
        match result {
            Ok(()) => {
                self.len = end;
                self.allocated = self.allocated.max(allocated);
                Ok(())
            }
            Err(e) => {
                // Zero whatever part of the batch reached the file (cut it, then restore the
                // allocation).
                let size = self.allocated.max(allocated);
                if self
                    .file
                    .set_len(self.len)
                    .and_then(|()| self.file.set_len(size))
                    .and_then(|()| self.file.sync_data())
                    .is_err()
                {
                    self.poisoned = true;
                }
                self.allocated = size;
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
    /// Where the log ends (the zeros a preallocated segment holds past it are not log).
    pub len: usize,
    /// The segment is shorter than it was allocated: it was cut, and records past the cut
    /// (acknowledged ones among them) are gone.
    pub cut: bool,
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
    let (mut at, mut end, mut cut) = (0, bytes.len(), false);
    if bytes.starts_with(MAGIC) {
        at = MAGIC.len();
        // The magic alone is a segment whose creation a crash cut before its allocation: it
        // never held a frame, so nothing of it was lost.
        cut = bytes.len() > MAGIC.len() && !(bytes.len() as u64).is_multiple_of(STEP);
        // Past the last byte written is allocation, not log (no frame ends in a zero byte:
        // records are JSON).
        end = bytes
            .iter()
            .rposition(|b| *b != 0)
            .map_or(at, |i| i + 1)
            .max(at);
    }
    let bytes = &bytes[..end];
    let mut records = Vec::new();
    let mut skipped: Vec<(usize, usize)> = Vec::new();
    while at < bytes.len() {
        if let Some(payload) = frame_at(bytes, at) {
            records.push(payload.to_vec());
            at += 8 + payload.len();
            continue;
        }
        let next = (at + 1..bytes.len())
            .find(|&i| frame_at(bytes, i).is_some())
            .unwrap_or(bytes.len());
        skipped.push((at, next - at));
        at = next;
    }
    Ok(Replay {
        records,
        skipped,
        len: bytes.len(),
        cut,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A crash between writing a new segment's magic and allocating it leaves the magic
    /// alone: nothing was cut (it never held a frame), where a shorter allocation was.
    #[test]
    fn a_segment_cut_before_its_allocation_lost_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("inbox-x.wal");
        fs::write(&path, MAGIC).unwrap();
        let r = replay(&path).unwrap();
        assert!(!r.cut && r.records.is_empty() && r.skipped.is_empty());
        let mut short = MAGIC.to_vec();
        short.extend_from_slice(&[0; 100]);
        fs::write(&path, short).unwrap();
        assert!(replay(&path).unwrap().cut);
    }

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

        assert!(!r.cut);
        assert_eq!(fs::metadata(&path).unwrap().len(), STEP);

        // A torn write: the last record half there, zeros after it (the allocation stays).
        let mut bytes = fs::read(&path).unwrap();
        bytes[40..43].fill(0);
        fs::write(&path, &bytes).unwrap();
        let r = replay(&path).unwrap();
        assert_eq!(r.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(r.skipped, [(30, 10)]);
        assert!(r.only_torn_tail() && !r.cut);

        // A flipped byte fails one frame's checksum; the frames after it are found again.
        bytes[8 + 9] ^= 0xff;
        fs::write(&path, &bytes).unwrap();
        let r = replay(&path).unwrap();
        assert_eq!(r.records, vec![b"two".to_vec()]);
        assert_eq!(r.skipped, [(8, 11), (30, 10)]);
        assert!(!r.only_torn_tail());

        // Cut exactly after the second frame: every frame left checks out, but the segment
        // is shorter than it was allocated.
        bytes[8 + 9] ^= 0xff;
        bytes.truncate(8 + 22);
        fs::write(&path, &bytes).unwrap();
        let r = replay(&path).unwrap();
        assert_eq!(r.records, vec![b"one".to_vec(), b"two".to_vec()]);
        assert!(r.skipped.is_empty() && r.cut);

        assert_eq!(segments(dir.path(), "inbox").unwrap().len(), 1);
        assert_eq!(segments(dir.path(), "plan").unwrap().len(), 0);
    }
}
