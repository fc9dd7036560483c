//! Man pages and shell completions for the mmstats binaries (`slurpstats`,
//! `pollstats`, `mmash`, `check_mmash`), made from the very clap
//! definitions that parse their command lines, so they cannot drift.
//!
//! Each binary answers a hidden first argument, `--generate-docs DIR`,
//! before parsing anything else, by calling [`generate`]:
//!
//! ```text
//! DIR/man/man1/NAME.1                      one page per command (mmash-retire.1 too)
//! DIR/completions/bash/NAME                bash-completion
//! DIR/completions/zsh/_NAME                zsh
//! DIR/completions/fish/NAME.fish           fish
//! ```
//!
//! `scripts/package.sh` runs it for the Debian package; `./test.sh` renders
//! each page with `man -l`. A hidden flag rather than a build script or an
//! xtask: the definitions live in each binary's `main.rs`, and only the
//! binary itself can hand them out without moving them into libraries.
#![forbid(unsafe_code)]

use std::ffi::OsString;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use clap::Command;
use clap_complete::Shell;

/// The hidden argument that asks a binary for its docs.
pub const FLAG: &str = "--generate-docs";

/// The output directory if `argv` (program name first) is
/// `PROGRAM --generate-docs DIR`.
pub fn requested(argv: &[OsString]) -> Option<PathBuf> {
    match argv {
        [_, flag, dir] if flag == FLAG => Some(PathBuf::from(dir)),
        _ => None,
    }
}

/// Writes a man page for each of `pages` (named by [`Command::get_name`])
/// and the bash, zsh and fish completions of `completion` under `dir`.
pub fn generate(dir: &Path, pages: &[Command], completion: Command) -> io::Result<()> {
    let man = dir.join("man/man1");
    fs::create_dir_all(&man)?;
    for page in pages {
        let mut cmd = page.clone();
        cmd.build();
        let name = cmd.get_name().to_owned();
        let mut out = Vec::new();
        clap_mangen::Man::new(cmd).render(&mut out)?;
        fs::write(man.join(format!("{name}.1")), out)?;
    }
    let mut cmd = completion;
    let bin = cmd.get_name().to_owned();
    for (shell, sub) in [
        (Shell::Bash, "bash"),
        (Shell::Zsh, "zsh"),
        (Shell::Fish, "fish"),
    ] {
        let to = dir.join("completions").join(sub);
        fs::create_dir_all(&to)?;
        clap_complete::generate_to(shell, &mut cmd, &bin, &to)?;
    }
    // bash-completion looks a command up by its bare name.
    let bash = dir.join("completions/bash");
    fs::rename(bash.join(format!("{bin}.bash")), bash.join(&bin))?;
    Ok(())
}

/// [`generate`], for a binary's `main`: exit status 0, or 1 with a line on
/// stderr naming the directory.
pub fn run(dir: &Path, pages: &[Command], completion: Command) -> std::process::ExitCode {
    let bin = completion.get_name().to_owned();
    match generate(dir, pages, completion) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{bin}: cannot write docs under {}: {e}", dir.display());
            std::process::ExitCode::from(1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_pages_and_completions() {
        let dir = std::env::temp_dir().join(format!("docgen-test-{}", std::process::id()));
        let cmd = Command::new("tool").about("Does things.").arg(
            clap::Arg::new("verbose")
                .long("verbose")
                .action(clap::ArgAction::SetTrue),
        );
        generate(&dir, &[cmd.clone(), Command::new("tool-sub")], cmd).unwrap();
        let page = fs::read_to_string(dir.join("man/man1/tool.1")).unwrap();
        assert!(page.contains(".TH tool 1"), "{page}");
        assert!(page.contains("verbose"));
        assert!(dir.join("man/man1/tool-sub.1").exists());
        assert!(fs::read_to_string(dir.join("completions/bash/tool"))
            .unwrap()
            .contains("--verbose"));
        assert!(dir.join("completions/zsh/_tool").exists());
        assert!(dir.join("completions/fish/tool.fish").exists());
        fs::remove_dir_all(&dir).unwrap();
        let argv = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            requested(&argv(&["x", FLAG, "d"])),
            Some(PathBuf::from("d"))
        );
        assert_eq!(requested(&argv(&["x", FLAG])), None);
        assert_eq!(requested(&argv(&["x", "d"])), None);
    }
}
