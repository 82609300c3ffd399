//! An on-disk cache of compiled policies.
//!
//! Loading a compiled component runs machine code that was written to disk, so an entry is only
//! trusted when it carries a MAC made with a key that this host generated and that only its
//! user can read. An entry written elsewhere, truncated, or edited fails the MAC and is compiled
//! again; it is never deserialized.

use std::fs::{self, File, OpenOptions};
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use hmac::{Hmac, Mac as _};
use rand::RngCore as _;
use sha2::Sha256;

const MAGIC: &[u8] = b"model-pusher compiled policy v1\n";
const KEY_FILE: &str = "cache.key";
// HMAC-SHA256's block size: a key of this length is used as it is.
const KEY_LEN: usize = 64;
const MAC_LEN: usize = 32;

/// How a policy's compiled code was obtained.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CacheOutcome {
    /// Loaded from the cache; nothing was compiled.
    Hit,
    /// Not in the cache: compiled, then stored when `stored` is true.
    Compiled { stored: bool },
    /// An entry existed but was not trusted (for the reason given), so it was compiled again.
    Recompiled { reason: String },
    /// No cache is configured: compiled.
    Disabled,
}

impl CacheOutcome {
    /// Whether the policy was compiled during this load.
    pub fn compiled(&self) -> bool {
        !matches!(self, CacheOutcome::Hit)
    }
}

/// A directory of compiled policies, keyed by the policy's sha256 and the engine's settings.
#[derive(Debug)]
pub struct CompiledCache {
    dir: PathBuf,
    key: [u8; KEY_LEN],
}

/// The cache directory could not be opened.
#[derive(Debug, thiserror::Error)]
#[error("cannot use policy cache directory {dir}: {message}")]
pub struct CacheError {
    dir: PathBuf,
    message: String,
}

impl CompiledCache {
    /// Opens (creating when needed) a cache directory readable only by the current user.
    ///
    /// # Errors
    ///
    /// When the directory or its key cannot be created or read, or when the key file is readable
    /// by other users (then its entries cannot be trusted).
    pub fn open(dir: &Path) -> Result<Self, CacheError> {
        let fail = |message: String| CacheError {
            dir: dir.to_owned(),
            message,
        };
        fs::create_dir_all(dir).map_err(|error| fail(error.to_string()))?;
        let _ = fs::set_permissions(dir, fs::Permissions::from_mode(0o700));

        let key_path = dir.join(KEY_FILE);
        let key = match read_key(&key_path) {
            Ok(key) => key,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => {
                create_key(&key_path).map_err(|error| fail(format!("{KEY_FILE}: {error}")))?
            }
            Err(error) => return Err(fail(format!("{KEY_FILE}: {error}"))),
        };
        Ok(Self {
            dir: dir.to_owned(),
            key,
        })
    }

    /// The default location: `$MODEL_PUSHER_CACHE_DIR`, else `$XDG_CACHE_HOME/model-pusher`, else
    /// `~/.cache/model-pusher`.
    pub fn default_dir() -> Option<PathBuf> {
        if let Some(dir) = std::env::var_os("MODEL_PUSHER_CACHE_DIR") {
            return Some(PathBuf::from(dir));
        }
        if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
            return Some(PathBuf::from(dir).join("model-pusher"));
        }
        std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/model-pusher"))
    }

    fn entry_path(&self, sha256: &str, engine: &str) -> PathBuf {
        self.dir.join(format!("{sha256}-{engine}.cwasm"))
    }

    fn mac(&self, sha256: &str, engine: &str, payload: &[u8]) -> Hmac<Sha256> {
        let mut mac = <Hmac<Sha256> as hmac::digest::KeyInit>::new(&self.key.into());
        mac.update(sha256.as_bytes());
        mac.update(b"\0");
        mac.update(engine.as_bytes());
        mac.update(b"\0");
        mac.update(payload);
        mac
    }

    /// Reads the entry for a policy, returning its compiled bytes only when its MAC verifies.
    ///
    /// `Ok(None)` means there is no entry; `Err` gives the reason an entry was not trusted.
    pub(crate) fn read(&self, sha256: &str, engine: &str) -> Result<Option<Vec<u8>>, String> {
        let path = self.entry_path(sha256, engine);
        let mut bytes = Vec::new();
        match File::open(&path) {
            Ok(mut file) => file
                .read_to_end(&mut bytes)
                .map_err(|error| format!("cannot read {}: {error}", path.display()))?,
            Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(error) => return Err(format!("cannot open {}: {error}", path.display())),
        };
        let rest = bytes
            .strip_prefix(MAGIC)
            .ok_or_else(|| format!("{} is not a model-pusher cache entry", path.display()))?;
        if rest.len() < MAC_LEN {
            return Err(format!("{} is truncated", path.display()));
        }
        let (tag, payload) = rest.split_at(MAC_LEN);
        self.mac(sha256, engine, payload)
            .verify_slice(tag)
            .map_err(|_| {
                format!(
                    "{} was not written by this host or was altered",
                    path.display()
                )
            })?;
        Ok(Some(payload.to_vec()))
    }

    /// Stores compiled bytes, atomically: readers see the old entry or the whole new one.
    pub(crate) fn write(&self, sha256: &str, engine: &str, payload: &[u8]) -> std::io::Result<()> {
        let tag = self.mac(sha256, engine, payload).finalize().into_bytes();
        let path = self.entry_path(sha256, engine);
        let temporary = self
            .dir
            .join(format!(".{sha256}-{}.tmp", std::process::id()));
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temporary)?;
        file.write_all(MAGIC)?;
        file.write_all(&tag)?;
        file.write_all(payload)?;
        file.sync_all()?;
        fs::rename(&temporary, &path)
    }
}

fn read_key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    let mut file = File::open(path)?;
    let mode = file.metadata()?.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(std::io::Error::other(format!(
            "mode {:o} lets other users read the key; remove the file to make a new one",
            mode & 0o777
        )));
    }
    let mut key = [0; KEY_LEN];
    file.read_exact(&mut key)?;
    Ok(key)
}

fn create_key(path: &Path) -> std::io::Result<[u8; KEY_LEN]> {
    let mut key = [0; KEY_LEN];
    rand::rng().fill_bytes(&mut key);
    let created = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path);
    match created {
        Ok(mut file) => {
            file.write_all(&key)?;
            file.sync_all()?;
            Ok(key)
        }
        // Another process created the key first: use theirs so both share entries.
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => read_key(path),
        Err(error) => Err(error),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entry_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        cache.write("abc", "e1", b"machine code").unwrap();
        assert_eq!(
            cache.read("abc", "e1").unwrap(),
            Some(b"machine code".to_vec())
        );
        assert_eq!(cache.read("abc", "e2").unwrap(), None);
    }

    #[test]
    fn altered_entry_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        cache.write("abc", "e1", b"machine code").unwrap();
        let path = cache.entry_path("abc", "e1");
        let mut bytes = fs::read(&path).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        fs::write(&path, bytes).unwrap();
        let reason = cache.read("abc", "e1").unwrap_err();
        assert!(reason.contains("not written by this host"), "{reason}");
    }

    #[test]
    fn entry_from_another_host_is_not_trusted() {
        let ours = tempfile::tempdir().unwrap();
        let theirs = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(ours.path()).unwrap();
        let foreign = CompiledCache::open(theirs.path()).unwrap();
        foreign.write("abc", "e1", b"their code").unwrap();
        fs::copy(
            foreign.entry_path("abc", "e1"),
            cache.entry_path("abc", "e1"),
        )
        .unwrap();
        assert!(cache.read("abc", "e1").is_err());
    }

    #[test]
    fn entry_renamed_to_another_policy_is_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let cache = CompiledCache::open(dir.path()).unwrap();
        cache.write("abc", "e1", b"machine code").unwrap();
        fs::rename(cache.entry_path("abc", "e1"), cache.entry_path("def", "e1")).unwrap();
        assert!(cache.read("def", "e1").is_err());
    }

    #[test]
    fn key_readable_by_others_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        CompiledCache::open(dir.path()).unwrap();
        fs::set_permissions(dir.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        let error = CompiledCache::open(dir.path()).unwrap_err();
        assert!(error.to_string().contains("other users"), "{error}");
    }
}
