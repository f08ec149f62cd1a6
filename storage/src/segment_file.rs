//! Writing the segment files of the local log layout.
//!
//! Segment files are extended in pre-zeroed chunks
//! ([`crate::LogOptions::segment_preallocate_bytes`]): a record written
//! into space that already holds zeros changes no file size, so its
//! `fdatasync` flushes data only and commits no file-system journal
//! transaction (measured here: 40 µs of CPU per sync against 64 µs for an
//! append that grows the file). The zeros after the last record are the
//! clean end of the segment (`docs/storage-format.md`).
//!
//! Each group commit's write and sync runs on tokio's blocking pool, so
//! the partitions of a hub sync in parallel and the file system merges
//! their flushes. One I/O thread per directory doing every partition's
//! syncs in turn was tried and measured slower
//! (`docs/decisions/0006-log-writes-on-the-blocking-pool.md`).

use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::codec::{self, SegmentHeader};
use crate::error::{Error, Result};
use crate::types::{Epoch, Lsn, PartitionId};

/// Zeros written per `pwrite` while extending a file.
static ZEROS: [u8; 64 << 10] = [0; 64 << 10];

/// A segment file open for appends.
#[derive(Debug)]
pub(crate) struct SegmentFile {
    file: std::fs::File,
    path: PathBuf,
    /// Bytes of header and records written (the next record's offset).
    len: u64,
    /// The file holds zeros up to here (its size).
    zeroed_to: u64,
}

impl SegmentFile {
    /// Bytes of header and records written.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }
}

/// One group commit of a segment-file log.
pub(crate) struct Write {
    /// The segment to append to; `None` creates the one named by
    /// `new_segment` first.
    pub current: Option<SegmentFile>,
    /// The folder, partition and epoch a new segment is created with.
    pub new_segment: NewSegment,
    /// First LSN of the batch (names a new segment).
    pub first_lsn: Lsn,
    /// The record frames.
    pub frames: Vec<u8>,
    /// Extend the file in zeroed chunks of this many bytes (0: grow it by
    /// each write).
    pub preallocate: u64,
}

/// Where and for whom a new segment file is created.
#[derive(Clone, Debug)]
pub(crate) struct NewSegment {
    pub dir: PathBuf,
    pub partition: PartitionId,
    pub epoch: Epoch,
}

/// Writes a batch durably (creating its segment first if `current` is
/// `None`); answers with the segment to append to next.
pub(crate) async fn write(write: Write) -> Result<SegmentFile> {
    let dir = write.new_segment.dir.clone();
    tokio::task::spawn_blocking(move || {
        let file = write_batch(write)?;
        file.file
            .sync_data()
            .map_err(|e| Error::io(&file.path, e))?;
        Ok(file)
    })
    .await
    .map_err(|e| Error::io(&dir, std::io::Error::other(e)))?
}

/// Gives a segment back when its log closes: the zeros past its last
/// record are cut off (best effort: they read as the segment's end).
pub(crate) async fn close(file: SegmentFile) {
    let _ = tokio::task::spawn_blocking(move || cut_back(file)).await;
}

/// Appends a batch's frames (not yet synced), creating the segment first
/// when needed and zeroing ahead in whole chunks.
fn write_batch(write: Write) -> Result<SegmentFile> {
    let mut file = match write.current {
        Some(file) => file,
        None => create_segment(&write.new_segment, write.first_lsn, write.preallocate)?,
    };
    let end = file.len + write.frames.len() as u64;
    if write.preallocate > 0 && end > file.zeroed_to {
        let target = end.div_ceil(write.preallocate) * write.preallocate;
        zero_fill(&file.file, file.zeroed_to, target).map_err(|e| Error::io(&file.path, e))?;
        file.zeroed_to = target;
    }
    file.file
        .write_all_at(&write.frames, file.len)
        .map_err(|e| Error::io(&file.path, e))?;
    file.len = end;
    file.zeroed_to = file.zeroed_to.max(end);
    Ok(file)
}

/// Creates a segment file with its header (and its first zeroed chunk),
/// durable together with its directory entry.
fn create_segment(new: &NewSegment, first_lsn: Lsn, preallocate: u64) -> Result<SegmentFile> {
    let key = codec::segment_key(new.partition, new.epoch, first_lsn);
    let name = key.rsplit('/').next().unwrap_or(&key);
    let path = new.dir.join(name);
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| Error::io(&path, e))?;
    let header = SegmentHeader {
        partition: new.partition,
        epoch: new.epoch,
        first_lsn,
    }
    .encode();
    let len = header.len() as u64;
    file.write_all_at(&header, 0)
        .map_err(|e| Error::io(&path, e))?;
    let zeroed_to = if preallocate > 0 {
        let target = len.div_ceil(preallocate) * preallocate;
        zero_fill(&file, len, target).map_err(|e| Error::io(&path, e))?;
        target
    } else {
        len
    };
    file.sync_all().map_err(|e| Error::io(&path, e))?;
    sync_dir(&new.dir)?;
    Ok(SegmentFile {
        file,
        path,
        len,
        zeroed_to,
    })
}

/// Writes zeros over `[from, to)`.
fn zero_fill(file: &std::fs::File, from: u64, to: u64) -> std::io::Result<()> {
    let mut at = from;
    while at < to {
        let n = (to - at).min(ZEROS.len() as u64);
        // `n` is at most ZEROS.len().
        file.write_all_at(&ZEROS[..n as usize], at)?;
        at += n;
    }
    Ok(())
}

fn cut_back(file: SegmentFile) {
    if file.zeroed_to > file.len
        && let Err(e) = file.file.set_len(file.len)
    {
        tracing::warn!(path = %file.path.display(), error = %e, "could not cut the preallocated zeros off a closed log segment; they read as its end");
    }
}

/// Makes a directory's entries durable.
pub(crate) fn sync_dir(dir: &Path) -> Result<()> {
    std::fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| Error::io(dir, e))
}
