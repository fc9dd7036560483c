//! Putting a laid-out image in place: the stats directory's checks and the
//! publication of a file under its final name.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::dirs::{default_dir, fallback_dir, shm_root, DIR_ENV};
use crate::error::Error;
use crate::sys::{self, FileMap};

/// The checked directory for a new file: `chosen` (the builder's `dir`),
/// else `$MMSTATS_DIR`, else the default directory, or the fallback
/// ([`fallback_dir`]) if the default cannot be used.
pub(crate) fn usable_dir(chosen: Option<&Path>) -> Result<PathBuf, Error> {
    let explicit = chosen.map(Path::to_owned).or_else(|| {
        std::env::var_os(DIR_ENV)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    });
    if let Some(dir) = explicit {
        ensure_private_dir(&dir)?;
        return Ok(dir);
    }
    default_or_fallback(&default_dir(), fallback_dir)
}

/// `primary` if it is usable, else `fallback`, else an error naming both.
fn default_or_fallback(
    primary: &Path,
    fallback: impl FnOnce() -> std::io::Result<PathBuf>,
) -> Result<PathBuf, Error> {
    let default = match ensure_private_dir(primary) {
        Ok(()) => return Ok(primary.to_owned()),
        Err(e) => Box::new(e),
    };
    let fallback = match fallback() {
        Ok(dir) => dir,
        Err(e) => {
            return Err(Error::NoUsableDir {
                default,
                fallback: Some((
                    shm_root().join(format!("mmstats-{}-*", crate::sys::geteuid())),
                    Box::new(Error::Dir {
                        path: shm_root(),
                        source: e,
                    }),
                )),
            })
        }
    };
    match ensure_private_dir(&fallback) {
        Ok(()) => Ok(fallback),
        Err(e) => Err(Error::NoUsableDir {
            default,
            fallback: Some((fallback, Box::new(e))),
        }),
    }
}

/// Creates `dir` (mode 0755) if missing and checks that it belongs to us
/// and only we can write to it: otherwise another user could plant or
/// remove files in it.
pub(crate) fn ensure_private_dir(dir: &Path) -> Result<(), Error> {
    let err = |source| Error::Dir {
        path: dir.to_owned(),
        source,
    };
    match fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(dir)
    {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(err(e)),
    }
    let euid = sys::geteuid();
    // In a sticky, world-writable parent such as /dev/shm, another user may
    // have planted our directory's name as a link to a place of theirs.
    let link = fs::symlink_metadata(dir).map_err(err)?;
    if link.file_type().is_symlink() && link.uid() != euid && link.uid() != 0 {
        return Err(Error::ForeignDir {
            path: dir.to_owned(),
            owner: link.uid(),
            euid,
        });
    }
    let meta = fs::metadata(dir).map_err(err)?;
    if !meta.is_dir() {
        return Err(err(io::Error::new(
            io::ErrorKind::NotADirectory,
            "not a directory",
        )));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(Error::UnsafeDir {
            path: dir.to_owned(),
            mode: meta.mode(),
        });
    }
    if meta.uid() != euid {
        return Err(Error::ForeignDir {
            path: dir.to_owned(),
            owner: meta.uid(),
            euid,
        });
    }
    Ok(())
}

/// Writes `image` to a new file under a temporary name, maps it, and links
/// it into place under `name`, or, if that name is taken, `name` with the
/// first free `.N` suffix. A file that exists is never replaced, whoever
/// wrote it: it may hold counts. The descriptor is closed before returning;
/// the mapping lives on. Returns the mapping and the final path.
pub(crate) fn publish(dir: &Path, name: &str, image: &[u8]) -> Result<(FileMap, PathBuf), Error> {
    publish_with(dir, name, image, |file| FileMap::new(file, image.len()))
}

/// As [`publish`], with `map` mapping the new file (open read-write,
/// holding `image`) before it gets its name.
pub(crate) fn publish_with<T>(
    dir: &Path,
    name: &str,
    image: &[u8],
    map: impl FnOnce(&fs::File) -> io::Result<T>,
) -> Result<(T, PathBuf), Error> {
    let stem = name.strip_suffix(".mmstats").unwrap_or(name);
    let tmp = dir.join(format!(".{stem}.tmp"));
    let create_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Create { path, source }
    };
    // A leftover temporary file of ours (same pid and thread) is from a
    // crash or a reused pid; the name is ours to take.
    let _ = fs::remove_file(&tmp);
    // Mode 0600 until it is complete: nobody else can open it half-made.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true) // O_EXCL: always a new inode, never a link's target
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .map_err(create_err(&tmp))?;
    let result = (|| {
        // Writing every byte allocates every page now, so a full tmpfs is an
        // error here and never a SIGBUS on a later store.
        file.write_all(image)?;
        // Readers of other users need 0644 (whatever the umask made of it).
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        map(&file)
    })();
    drop(file);
    let map = match result {
        Ok(m) => m,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(Error::Create {
                path: tmp,
                source: e,
            });
        }
    };
    for n in 1..1000 {
        let path = if n == 1 {
            dir.join(name)
        } else {
            dir.join(format!("{stem}.{n}.mmstats"))
        };
        match fs::hard_link(&tmp, &path) {
            Ok(()) => {
                let _ = fs::remove_file(&tmp);
                return Ok((map, path));
            }
            // Taken, by a live writer or a dead one whose counts a reader
            // may still want: take the next name.
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                let _ = fs::remove_file(&tmp);
                return Err(create_err(&path)(e));
            }
        }
    }
    let _ = fs::remove_file(&tmp);
    Err(Error::Create {
        path: dir.join(name),
        source: io::Error::new(
            io::ErrorKind::AlreadyExists,
            "999 files with this name and its .N variants exist",
        ),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unsafe_directories_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o777)).unwrap();
        let err = ensure_private_dir(dir.path()).unwrap_err();
        assert!(matches!(err, Error::UnsafeDir { .. }));
        assert!(err.to_string().contains(&dir.path().display().to_string()));
        let nested = dir.path().join("a/b");
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        ensure_private_dir(&nested).unwrap();
        assert!(nested.is_dir());
    }

    #[test]
    fn a_default_dir_that_is_not_ours_falls_back() {
        let root = tempfile::tempdir().unwrap();
        // Squatted: writable by others, as a directory another user made
        // for us might be. (A foreign owner needs a second user; no test
        // here makes one.)
        let primary = root.path().join("mmstats-squatted");
        fs::create_dir(&primary).unwrap();
        fs::set_permissions(&primary, fs::Permissions::from_mode(0o777)).unwrap();
        let fallback = root.path().join("run/mmstats");
        let given = fallback.clone();
        assert_eq!(
            default_or_fallback(&primary, move || Ok(given)).unwrap(),
            fallback
        );
        // Both unusable: the message names both and says what to do.
        let blocker = root.path().join("not-a-dir");
        fs::write(&blocker, b"").unwrap();
        let bad_fallback = blocker.join("mmstats");
        let given = bad_fallback.clone();
        let err = default_or_fallback(&primary, move || Ok(given)).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains(&primary.display().to_string()), "{msg}");
        assert!(msg.contains(&bad_fallback.display().to_string()), "{msg}");
        assert!(
            msg.contains("MMSTATS_DIR") && !msg.contains("remove it"),
            "{msg}"
        );
        let err =
            default_or_fallback(&primary, || Err(std::io::Error::other("no room"))).unwrap_err();
        assert!(err.to_string().contains("no room"), "{err}");
    }
}
