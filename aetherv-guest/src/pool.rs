//! The pool files of the kernel's `hv_kvp_daemon` (tools/hv in the Linux tree).
//!
//! The daemon keeps one file per KVP pool, `<dir>/.kvp_pool_<N>`: pool 0
//! (`KVP_POOL_EXTERNAL`) holds the items the host wrote for the guest
//! (`Add-VMKeyValuePair`), pool 1 (`KVP_POOL_GUEST`) the items the guest publishes for the
//! host. A file is a plain array of records, each a [`KEY_BYTES`]-byte key followed by a
//! [`VALUE_BYTES`]-byte value, both NUL-terminated and NUL-padded UTF-8. The daemon re-reads
//! a pool file before every operation, so rewriting the guest pool publishes items.
//!
//! Locking: the daemon holds a POSIX record lock (`fcntl(F_SETLKW)`, `F_WRLCK` over the whole
//! file) while it reads or rewrites a pool. [`KvpPool`] takes the same lock (through
//! `rustix`'s safe wrapper) for every read and rewrite.
//!
//! Parsing is bounded ([`MAX_POOL_BYTES`]) and typed: a short record, a field without its
//! terminating NUL or a field that is not UTF-8 is a [`PoolError`], never a panic.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use rustix::fs::{FlockOperation, fcntl_lock};

/// Size of the key field of a record, NUL terminator included.
pub const KEY_BYTES: usize = 512;
/// Size of the value field of a record, NUL terminator included.
pub const VALUE_BYTES: usize = 2048;
/// Size of one record.
pub const RECORD_BYTES: usize = KEY_BYTES + VALUE_BYTES;
/// The most records a pool file may hold before it is refused (bounded memory).
pub const MAX_RECORDS: usize = 4096;
/// The largest pool file accepted, in bytes.
pub const MAX_POOL_BYTES: usize = MAX_RECORDS * RECORD_BYTES;
/// File name of the host-to-guest pool (`KVP_POOL_EXTERNAL`).
pub const HOST_TO_GUEST: &str = ".kvp_pool_0";
/// File name of the guest-to-host pool (`KVP_POOL_GUEST`).
pub const GUEST_TO_HOST: &str = ".kvp_pool_1";
/// The directory where `hv_kvp_daemon` keeps its pool files.
pub const DEFAULT_POOL_DIR: &str = "/var/lib/hyperv";

/// Which field of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Field {
    /// The 512-byte key.
    Key,
    /// The 2048-byte value.
    Value,
}

impl std::fmt::Display for Field {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Key => "key",
            Self::Value => "value",
        })
    }
}

/// A malformed pool file or an item that does not fit a record.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecordError {
    /// The file's length is not a multiple of [`RECORD_BYTES`].
    #[error(
        "pool file ends with a short record of {trailing} bytes (records are {RECORD_BYTES} bytes)"
    )]
    ShortRecord {
        /// Bytes after the last whole record.
        trailing: usize,
    },
    /// The file is larger than [`MAX_POOL_BYTES`].
    #[error("pool file has {bytes} bytes, more than the {MAX_POOL_BYTES} accepted")]
    TooLarge {
        /// The file's size.
        bytes: u64,
    },
    /// A field has no terminating NUL.
    #[error("record {record}: the {field} has no terminating NUL")]
    MissingNul {
        /// Index of the record.
        record: usize,
        /// Which field.
        field: Field,
    },
    /// A field is not UTF-8.
    #[error("record {record}: the {field} is not UTF-8")]
    NotUtf8 {
        /// Index of the record.
        record: usize,
        /// Which field.
        field: Field,
    },
    /// An item to write is too long or contains NUL (names the key, never the value).
    #[error("item {key:?}: the {field} does not fit a KVP record ({detail})")]
    ItemTooLarge {
        /// The item's key (shortened).
        key: String,
        /// Which field.
        field: Field,
        /// Why.
        detail: &'static str,
    },
}

/// An I/O, locking or format error on a pool file.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PoolError {
    /// Opening, reading or writing the file failed.
    #[error("kvp pool {}: {operation} failed: {source}", path.display())]
    Io {
        /// The pool file.
        path: PathBuf,
        /// What was being done.
        operation: &'static str,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The file's content is malformed.
    #[error("kvp pool {}: {source}", path.display())]
    Format {
        /// The pool file.
        path: PathBuf,
        /// What is wrong.
        #[source]
        source: RecordError,
    },
}

fn field_text(bytes: &[u8], record: usize, field: Field) -> Result<&str, RecordError> {
    let end = bytes
        .iter()
        .position(|&b| b == 0)
        .ok_or(RecordError::MissingNul { record, field })?;
    std::str::from_utf8(&bytes[..end]).map_err(|_| RecordError::NotUtf8 { record, field })
}

/// Parses a pool file's bytes into `(key, value)` pairs in file order. Records with an empty
/// key are unused slots and are skipped.
///
/// # Errors
///
/// [`RecordError`] for a trailing short record, more than [`MAX_POOL_BYTES`], a field without
/// a NUL or a field that is not UTF-8.
pub fn parse_records(bytes: &[u8]) -> Result<Vec<(String, String)>, RecordError> {
    if bytes.len() > MAX_POOL_BYTES {
        return Err(RecordError::TooLarge {
            bytes: bytes.len() as u64,
        });
    }
    let trailing = bytes.len() % RECORD_BYTES;
    if trailing != 0 {
        return Err(RecordError::ShortRecord { trailing });
    }
    let mut items = Vec::with_capacity(bytes.len() / RECORD_BYTES);
    for (record, chunk) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
        let (key, value) = chunk.split_at(KEY_BYTES);
        let key = field_text(key, record, Field::Key)?;
        let value = field_text(value, record, Field::Value)?;
        if !key.is_empty() {
            items.push((key.to_owned(), value.to_owned()));
        }
    }
    Ok(items)
}

fn short_key(key: &str) -> String {
    key.chars().take(64).collect()
}

fn put_field(
    out: &mut Vec<u8>,
    text: &str,
    size: usize,
    key: &str,
    field: Field,
) -> Result<(), RecordError> {
    let too_large = |detail| RecordError::ItemTooLarge {
        key: short_key(key),
        field,
        detail,
    };
    if text.as_bytes().contains(&0) {
        return Err(too_large("it contains a NUL byte"));
    }
    if text.len() >= size {
        return Err(too_large("too long"));
    }
    out.extend_from_slice(text.as_bytes());
    out.resize(out.len() + size - text.len(), 0);
    Ok(())
}

/// Appends one record (`key` and `value`, NUL-padded) to `out`.
///
/// # Errors
///
/// [`RecordError::ItemTooLarge`] if the key has [`KEY_BYTES`] bytes or more, the value
/// [`VALUE_BYTES`] bytes or more (the NUL terminator must fit), or either contains a NUL
/// byte; `out` is then unchanged.
pub fn encode_record(out: &mut Vec<u8>, key: &str, value: &str) -> Result<(), RecordError> {
    let start = out.len();
    let result = put_field(out, key, KEY_BYTES, key, Field::Key)
        .and_then(|()| put_field(out, value, VALUE_BYTES, key, Field::Value));
    if result.is_err() {
        out.truncate(start);
    }
    result
}

/// Encodes items as a whole pool file.
///
/// # Errors
///
/// As [`encode_record`].
pub fn encode_records<'a>(
    items: impl IntoIterator<Item = (&'a str, &'a str)>,
) -> Result<Vec<u8>, RecordError> {
    let mut out = Vec::new();
    for (key, value) in items {
        encode_record(&mut out, key, value)?;
    }
    Ok(out)
}

/// One pool file, read and rewritten under the daemon's lock.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvpPool {
    path: PathBuf,
}

/// An open pool file holding the daemon's lock; the lock is released on drop (closing the
/// descriptor releases a process's record locks).
struct Locked {
    file: File,
}

impl KvpPool {
    /// The pool file at `path`.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The host-to-guest pool in `dir`.
    pub fn host_to_guest(dir: &Path) -> Self {
        Self::new(dir.join(HOST_TO_GUEST))
    }

    /// The guest-to-host pool in `dir`.
    pub fn guest_to_host(dir: &Path) -> Self {
        Self::new(dir.join(GUEST_TO_HOST))
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, operation: &'static str) -> impl FnOnce(std::io::Error) -> PoolError + '_ {
        move |source| PoolError::Io {
            path: self.path.clone(),
            operation,
            source,
        }
    }

    fn lock(&self, create: bool) -> Result<Option<Locked>, PoolError> {
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .create(create)
            .truncate(false)
            .open(&self.path);
        let file = match opened {
            Ok(file) => file,
            Err(e) if !create && e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(self.io("open")(e)),
        };
        fcntl_lock(&file, FlockOperation::LockExclusive)
            .map_err(|e| self.io("lock")(std::io::Error::from(e)))?;
        Ok(Some(Locked { file }))
    }

    fn read_locked(&self, locked: &mut Locked) -> Result<Vec<(String, String)>, PoolError> {
        let size = locked.file.metadata().map_err(self.io("stat"))?.len();
        if size > MAX_POOL_BYTES as u64 {
            return Err(PoolError::Format {
                path: self.path.clone(),
                source: RecordError::TooLarge { bytes: size },
            });
        }
        let mut bytes = Vec::new();
        locked
            .file
            .seek(SeekFrom::Start(0))
            .map_err(self.io("seek"))?;
        (&locked.file)
            .take(MAX_POOL_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(self.io("read"))?;
        parse_records(&bytes).map_err(|source| PoolError::Format {
            path: self.path.clone(),
            source,
        })
    }

    /// Reads every item (a later record with the same key wins). A missing file is an empty
    /// pool (the daemon has not created it yet).
    ///
    /// # Errors
    ///
    /// [`PoolError`] for I/O, locking or format errors.
    pub fn read(&self) -> Result<BTreeMap<String, String>, PoolError> {
        let Some(mut locked) = self.lock(false)? else {
            return Ok(BTreeMap::new());
        };
        Ok(self.read_locked(&mut locked)?.into_iter().collect())
    }

    /// Under one lock: reads the pool, replaces or appends the `write` items (in order) and
    /// drops the `remove` keys, and rewrites the file. Records keep their order; the file is
    /// created (mode 0644 under the usual umask) when missing.
    ///
    /// # Errors
    ///
    /// [`PoolError`] for I/O, locking or format errors, or an item too large for a record
    /// (the file is then unchanged).
    pub fn update<'a>(
        &self,
        write: impl IntoIterator<Item = (&'a str, &'a str)>,
        remove: &[&str],
    ) -> Result<(), PoolError> {
        let Some(mut locked) = self.lock(true)? else {
            return Err(self.io("open")(std::io::ErrorKind::NotFound.into()));
        };
        let mut records = self.read_locked(&mut locked)?;
        records.retain(|(k, _)| !remove.contains(&k.as_str()));
        for (key, value) in write {
            match records.iter_mut().find(|(k, _)| k == key) {
                Some(slot) => value.clone_into(&mut slot.1),
                None => records.push((key.to_owned(), value.to_owned())),
            }
        }
        let bytes = encode_records(records.iter().map(|(k, v)| (k.as_str(), v.as_str()))).map_err(
            |source| PoolError::Format {
                path: self.path.clone(),
                source,
            },
        )?;
        if bytes.len() > MAX_POOL_BYTES {
            return Err(PoolError::Format {
                path: self.path.clone(),
                source: RecordError::TooLarge {
                    bytes: bytes.len() as u64,
                },
            });
        }
        locked.file.set_len(0).map_err(self.io("truncate"))?;
        locked
            .file
            .seek(SeekFrom::Start(0))
            .map_err(self.io("seek"))?;
        locked.file.write_all(&bytes).map_err(self.io("write"))?;
        locked.file.flush().map_err(self.io("flush"))?;
        fcntl_lock(&locked.file, FlockOperation::Unlock)
            .map_err(|e| self.io("unlock")(std::io::Error::from(e)))?;
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn records_round_trip_and_keep_order() {
        let bytes = encode_records([("b", "2"), ("a", "1"), ("", "unused")]).unwrap();
        assert_eq!(bytes.len(), 3 * RECORD_BYTES);
        assert_eq!(&bytes[..2], b"b\0");
        assert_eq!(bytes[KEY_BYTES], b'2');
        assert_eq!(
            parse_records(&bytes).unwrap(),
            [("b".into(), "2".into()), ("a".into(), "1".into())]
        );
    }

    #[test]
    fn malformed_files_give_typed_errors() {
        let good = encode_records([("k", "v")]).unwrap();
        assert_eq!(
            parse_records(&good[..100]),
            Err(RecordError::ShortRecord { trailing: 100 })
        );
        let mut no_nul = good.clone();
        no_nul[..KEY_BYTES].fill(b'x');
        assert_eq!(
            parse_records(&no_nul),
            Err(RecordError::MissingNul {
                record: 0,
                field: Field::Key
            })
        );
        let mut no_nul = good.clone();
        no_nul[KEY_BYTES..].fill(b'y');
        assert_eq!(
            parse_records(&no_nul),
            Err(RecordError::MissingNul {
                record: 0,
                field: Field::Value
            })
        );
        let mut bad = good.clone();
        bad.extend_from_slice(&good);
        bad[RECORD_BYTES + KEY_BYTES] = 0xff;
        assert_eq!(
            parse_records(&bad),
            Err(RecordError::NotUtf8 {
                record: 1,
                field: Field::Value
            })
        );
        let huge = vec![0u8; MAX_POOL_BYTES + RECORD_BYTES];
        assert!(matches!(
            parse_records(&huge),
            Err(RecordError::TooLarge { .. })
        ));
    }

    #[test]
    fn items_that_do_not_fit_are_refused() {
        let mut out = Vec::new();
        let long_key = "k".repeat(KEY_BYTES);
        let err = encode_record(&mut out, &long_key, "v").unwrap_err();
        assert!(matches!(
            err,
            RecordError::ItemTooLarge {
                field: Field::Key,
                ..
            }
        ));
        let err = encode_record(&mut out, "k", &"v".repeat(VALUE_BYTES)).unwrap_err();
        assert!(err.to_string().contains("value"), "{err}");
        assert!(!err.to_string().contains("vvvv"), "{err}");
        assert!(encode_record(&mut out, "k\0", "v").is_err());
        assert!(out.is_empty());
        // The longest that fits.
        encode_record(
            &mut out,
            &"k".repeat(KEY_BYTES - 1),
            &"v".repeat(VALUE_BYTES - 1),
        )
        .unwrap();
        assert_eq!(out.len(), RECORD_BYTES);
    }

    #[test]
    fn update_rewrites_under_the_lock() {
        let dir = tempfile::tempdir().unwrap();
        let pool = KvpPool::guest_to_host(dir.path());
        assert!(pool.read().unwrap().is_empty());
        pool.update([("a", "1"), ("b", "2")], &[]).unwrap();
        pool.update([("a", "3"), ("c", "4")], &["b"]).unwrap();
        let bytes = std::fs::read(pool.path()).unwrap();
        assert_eq!(
            parse_records(&bytes).unwrap(),
            [("a".into(), "3".into()), ("c".into(), "4".into())]
        );
        assert_eq!(pool.read().unwrap().len(), 2);
        // A refused item leaves the file as it was.
        let long = "x".repeat(VALUE_BYTES);
        assert!(pool.update([("d", long.as_str())], &[]).is_err());
        assert_eq!(std::fs::read(pool.path()).unwrap(), bytes);
        // A malformed file is reported, not rewritten.
        std::fs::write(pool.path(), b"short").unwrap();
        let err = pool.update([("a", "1")], &[]).unwrap_err();
        assert!(err.to_string().contains("short record"), "{err}");
        assert_eq!(std::fs::read(pool.path()).unwrap(), b"short");
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..3 * RECORD_BYTES)) {
            let _ = parse_records(&bytes);
        }

        #[test]
        fn arbitrary_records_never_panic(
            fill in proptest::collection::vec((any::<u8>(), 0usize..RECORD_BYTES), 0..40),
            records in 1usize..3,
        ) {
            let mut bytes = vec![0u8; records * RECORD_BYTES];
            for (byte, at) in fill {
                let at = at % bytes.len();
                bytes[at] = byte;
            }
            let _ = parse_records(&bytes);
        }

        #[test]
        fn encoded_items_parse_back(items in proptest::collection::btree_map("[^\0]{1,40}", "[^\0]{0,200}", 0..8)) {
            let bytes = encode_records(items.iter().map(|(k, v)| (k.as_str(), v.as_str()))).unwrap();
            let parsed: BTreeMap<String, String> = parse_records(&bytes).unwrap().into_iter().collect();
            prop_assert_eq!(parsed, items);
        }
    }
}
