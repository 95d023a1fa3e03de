//! [`CursorStore`]: the client's position on disk, written atomically (temporary file,
//! sync, rename) only after the events before it were acknowledged by local Kafka.

use std::io::Write;
use std::path::{Path, PathBuf};

use shared::{Cursor, CursorError};

/// Why the saved position could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} does not hold a valid cursor ({source}); move it away to start over")]
    Invalid { path: PathBuf, source: CursorError },
}

/// A cursor kept in one file.
#[derive(Debug, Clone)]
pub struct CursorStore {
    path: PathBuf,
}

impl CursorStore {
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The saved cursor, or `None` when nothing was saved yet.
    pub fn load(&self) -> Result<Option<Cursor>, StoreError> {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => {
                Cursor::decode(text.trim())
                    .map(Some)
                    .map_err(|source| StoreError::Invalid {
                        path: self.path.clone(),
                        source,
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(StoreError::Read {
                path: self.path.clone(),
                source,
            }),
        }
    }

    /// Replaces the saved cursor; a crash leaves either the old or the new one whole.
    pub fn save(&self, cursor: &Cursor) -> Result<(), StoreError> {
        let write_err = |source| StoreError::Write {
            path: self.path.clone(),
            source,
        };
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = std::fs::File::create(&tmp).map_err(write_err)?;
        file.write_all(cursor.encode().as_bytes())
            .map_err(write_err)?;
        file.sync_all().map_err(write_err)?;
        drop(file);
        std::fs::rename(&tmp, &self.path).map_err(write_err)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = CursorStore::new(dir.path().join("state"));
        assert!(store.load().expect("load").is_none());
        let mut cursor = Cursor::new();
        cursor.set("t", 3, 99);
        store.save(&cursor).expect("save");
        assert_eq!(store.load().expect("load"), Some(cursor.clone()));
        cursor.set("t", 3, 100);
        store.save(&cursor).expect("save again");
        assert_eq!(store.load().expect("load"), Some(cursor));
    }

    #[test]
    fn a_damaged_file_is_an_error_not_a_fresh_start() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("state");
        std::fs::write(&path, "garbage").expect("write");
        assert!(matches!(
            CursorStore::new(path).load(),
            Err(StoreError::Invalid { .. })
        ));
    }
}
