//! Media bytes on disk: content-addressed files under `{data_dir}/media/`, each written
//! atomically.
//!
//! ```text
//! media/blobs/ab/ab12…ef      one file per distinct content, named by its SHA-256
//! media/thumbnails/ab12…ef/   thumbnails of that content: `{w}x{h}-{method}.{png|jpg}`
//! media/tmp/                  files being written; emptied when the server starts
//! ```
//!
//! A file reaches its name only through [`TempFile::commit`]: written in `tmp/`, fsynced,
//! renamed, and the directory fsynced. A `kill -9` at any point leaves either no file at the
//! name or the whole file, never a part; a media record is written only after its file is
//! committed, so no stored media ID ever names a half-written file. All of this is blocking
//! file I/O: callers run it on the blocking pool.

use std::{
    fs::{self, File},
    io::{self, Write},
    path::{Path, PathBuf},
};

use sha2::{Digest, Sha256};

/// The media directory.
pub struct Blobs {
    root: PathBuf,
}

/// A file written and fsynced in `tmp/` that has no name yet. Dropped without
/// [`TempFile::commit`], it is removed (and a crash leaves it in `tmp/`, which the next start
/// empties).
pub struct TempFile {
    path: PathBuf,
    committed: bool,
}

impl TempFile {
    /// Writes `bytes` to a new file in `dir` and fsyncs it.
    fn write(dir: &Path, bytes: &[u8]) -> io::Result<Self> {
        let path = dir.join(crate::service::core::random_token(12));
        let temp = Self {
            path,
            committed: false,
        };
        let mut file = File::options()
            .write(true)
            .create_new(true)
            .open(&temp.path)?;
        file.write_all(bytes)?;
        file.sync_all()?;
        Ok(temp)
    }

    /// Gives the file its name: rename (atomic on POSIX file systems), then fsync the directory
    /// so that the rename itself survives a power cut.
    pub fn commit(mut self, target: &Path) -> io::Result<()> {
        let dir = target
            .parent()
            .ok_or_else(|| io::Error::other("no parent"))?;
        fs::create_dir_all(dir)?;
        fs::rename(&self.path, target)?;
        self.committed = true;
        sync_dir(dir)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.path);
        }
    }
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The SHA-256 of `bytes`, lowercase hex: a content's address.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let digest = Sha256::digest(bytes);
    let mut out = String::with_capacity(64);
    for b in digest {
        out.push_str(&format!("{b:02x}"));
    }
    out
}

/// Whether `s` is a content address (64 lowercase hex digits): names from the disk or the
/// store are checked before they become paths.
pub fn is_address(s: &str) -> bool {
    s.len() == 64 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

impl Blobs {
    /// Opens (creating) the media directory and removes what interrupted writes left in `tmp/`.
    pub fn open(root: PathBuf) -> io::Result<Self> {
        for dir in ["blobs", "thumbnails", "tmp"] {
            fs::create_dir_all(root.join(dir))?;
        }
        for entry in fs::read_dir(root.join("tmp"))? {
            let _ = fs::remove_file(entry?.path());
        }
        Ok(Self { root })
    }

    /// The file of a content address.
    pub fn path(&self, sha256: &str) -> PathBuf {
        let fan = sha256.get(..2).unwrap_or("00");
        self.root.join("blobs").join(fan).join(sha256)
    }

    /// The folder of a content's thumbnails.
    pub fn thumbnail_dir(&self, sha256: &str) -> PathBuf {
        self.root.join("thumbnails").join(sha256)
    }

    /// Writes `bytes` to `tmp/` (fsynced); [`TempFile::commit`] gives it its name.
    pub fn temp(&self, bytes: &[u8]) -> io::Result<TempFile> {
        TempFile::write(&self.root.join("tmp"), bytes)
    }

    /// Stores a content under its address and returns the address. Identical content shares
    /// one file: when the file exists, it is complete (it got its name by a rename).
    pub fn store(&self, bytes: &[u8]) -> io::Result<String> {
        let sha = sha256_hex(bytes);
        let path = self.path(&sha);
        if !path.exists() {
            self.temp(bytes)?.commit(&path)?;
        }
        Ok(sha)
    }

    /// Writes a file atomically (thumbnails).
    pub fn write_atomically(&self, target: &Path, bytes: &[u8]) -> io::Result<()> {
        self.temp(bytes)?.commit(target)
    }

    /// Every content address with a file.
    pub fn addresses(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for fan in fs::read_dir(self.root.join("blobs"))? {
            let fan = fan?;
            if !fan.file_type()?.is_dir() {
                continue;
            }
            for file in fs::read_dir(fan.path())? {
                if let Some(name) = file?.file_name().to_str().filter(|n| is_address(n)) {
                    out.push(name.to_owned());
                }
            }
        }
        Ok(out)
    }

    /// Every content address with a thumbnail folder.
    pub fn thumbnail_addresses(&self) -> io::Result<Vec<String>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(self.root.join("thumbnails"))? {
            if let Some(name) = entry?.file_name().to_str().filter(|n| is_address(n)) {
                out.push(name.to_owned());
            }
        }
        Ok(out)
    }

    /// Removes a content's file and its thumbnails; returns the bytes freed.
    pub fn remove(&self, sha256: &str) -> io::Result<u64> {
        let path = self.path(sha256);
        let mut freed = fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let thumbs = self.thumbnail_dir(sha256);
        if let Ok(entries) = fs::read_dir(&thumbs) {
            for entry in entries.flatten() {
                freed += entry.metadata().map(|m| m.len()).unwrap_or(0);
            }
            fs::remove_dir_all(&thumbs)?;
        }
        Ok(freed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files_in(dir: &Path) -> usize {
        fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
    }

    /// What a `kill -9` between writing and renaming leaves: a file in `tmp/`, nothing at the
    /// content address, and the next start removes the leftover.
    #[test]
    fn a_temp_file_never_becomes_a_media_file_without_its_rename() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().join("media")).unwrap();
        let bytes = b"half of a holiday photo";
        let sha = sha256_hex(bytes);
        let temp = blobs.temp(bytes).unwrap();
        assert_eq!(files_in(&dir.path().join("media/tmp")), 1);
        // The process dies here: the temp file stays behind, unnamed.
        std::mem::forget(temp);
        assert!(!blobs.path(&sha).exists(), "no file at the content address");
        assert!(blobs.addresses().unwrap().is_empty());
        // The next start empties tmp/.
        let blobs = Blobs::open(dir.path().join("media")).unwrap();
        assert_eq!(files_in(&dir.path().join("media/tmp")), 0);
        assert!(!blobs.path(&sha).exists());
        // Dropped without a commit (an error before the rename), the temp file goes at once.
        drop(blobs.temp(bytes).unwrap());
        assert_eq!(files_in(&dir.path().join("media/tmp")), 0);
        // Committed, the whole content is at its address and tmp/ is empty.
        assert_eq!(blobs.store(bytes).unwrap(), sha);
        assert_eq!(fs::read(blobs.path(&sha)).unwrap(), bytes);
        assert_eq!(files_in(&dir.path().join("media/tmp")), 0);
    }

    #[test]
    fn identical_content_shares_one_file() {
        let dir = tempfile::tempdir().unwrap();
        let blobs = Blobs::open(dir.path().to_owned()).unwrap();
        let a = blobs.store(b"same").unwrap();
        let b = blobs.store(b"same").unwrap();
        let c = blobs.store(b"other").unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        let mut all = blobs.addresses().unwrap();
        all.sort();
        let mut want = vec![a.clone(), c];
        want.sort();
        assert_eq!(all, want);
        assert_eq!(blobs.remove(&a).unwrap(), 4);
        assert!(!blobs.path(&a).exists());
        assert_eq!(blobs.addresses().unwrap().len(), 1);
    }
}
