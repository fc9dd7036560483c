//! Putting a laid-out image in place: the stats directory's checks and the
//! publication of a file under its final name.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::Error;
use crate::format::raw;
use crate::format::WriterState;
use crate::sys::{self, Backing};

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

/// Writes `image` to a new file under a temporary name, locks it, maps it,
/// and links it into place under `name` (or `name` with a `.N` suffix if a
/// live writer holds that name). Returns the backing and final path.
pub(crate) fn publish(dir: &Path, name: &str, image: &[u8]) -> Result<(Backing, PathBuf), Error> {
    let stem = name.strip_suffix(".mmstats").unwrap_or(name);
    let tmp = dir.join(format!(".{stem}.tmp"));
    let create_err = |path: &Path| {
        let path = path.to_owned();
        move |source| Error::Create { path, source }
    };
    // A leftover temporary file of ours (same pid and thread) is from a
    // crash or a reused pid; the name is ours to take.
    let _ = fs::remove_file(&tmp);
    // Mode 0600 until it is locked: nobody else can open it and take the
    // lock first.
    let mut file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true) // O_EXCL: always a new inode, never a link's target
        .custom_flags(libc::O_NOFOLLOW)
        .mode(0o600)
        .open(&tmp)
        .map_err(create_err(&tmp))?;
    let result = (|| {
        file.try_lock().map_err(io::Error::from)?;
        // Writing every byte allocates every page now, so a full tmpfs is an
        // error here and never a SIGBUS on a later store.
        file.write_all(image)?;
        // Readers of other users need 0644 (whatever the umask made of it).
        file.set_permissions(fs::Permissions::from_mode(0o644))?;
        Backing::map_file(file, image.len(), raw::H_STATE, WriterState::EXITED)
    })();
    let backing = match result {
        Ok(b) => b,
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
                return Ok((backing, path));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Only a file we could probe and found unlocked is dead;
                // if in doubt, take the next name.
                if crate::reader::probe_alive(&path) == Some(false) {
                    // A dead writer's file with our name (the pid was
                    // reused): replace it atomically with ours.
                    match fs::rename(&tmp, &path) {
                        Ok(()) => return Ok((backing, path)),
                        Err(e) => {
                            let _ = fs::remove_file(&tmp);
                            return Err(create_err(&path)(e));
                        }
                    }
                }
            }
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
            "999 live files with this name",
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
}
