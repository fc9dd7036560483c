//! Which owner, command and model a check is about: `user=`, `command=`
//! and `model=` (`--user`, `--command`, `--model` of `check_mmash`).
//!
//! Without a scope a check sees every file it reads, whoever wrote it; on
//! a host where other users can write stats files, scope the checks you
//! alert on to the owner they are about (`user=www-data`): then another
//! user's files can neither add to the value nor satisfy the check.

use mmstats_read::aggregate::{FileSample, Sample};
use mmstats_read::owners::{uid_of, user_name};
use mmstats_read::FileInfo;

/// The files a check is about.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Scope {
    /// Only files of this owner (a user name, as mmash's `user` label
    /// spells it).
    pub user: Option<String>,
    /// Only files of this writer command.
    pub command: Option<String>,
    /// Only files of this stats model.
    pub model: Option<String>,
}

/// Separates a label from its scope in a [`Scope::key`].
const SEP: char = '\u{0}';

impl Scope {
    /// Whether it selects every file.
    pub fn is_empty(&self) -> bool {
        self.user.is_none() && self.command.is_none() && self.model.is_none()
    }

    /// Sets `user`, `command` or `model`, as given: a user is a name or a
    /// uid, resolved by [`Scope::resolve`] on the host that reads the
    /// files (check_mmash asking a remote mmash passes it on as given).
    pub fn set(&mut self, key: &str, value: &str) -> Result<(), String> {
        if value.is_empty() || value.contains('\u{0}') {
            return Err(format!("{key}={value:?}: empty, or holds a NUL"));
        }
        match key {
            "user" => self.user = Some(value.to_owned()),
            "command" => self.command = Some(value.to_owned()),
            "model" => self.model = Some(value.to_owned()),
            _ => return Err(format!("{key:?} is not a scope (user, command, model)")),
        }
        Ok(())
    }

    /// Spells the user as this host's `/etc/passwd` does (a uid becomes its
    /// name), as mmash's `user` label does. The error names a user that
    /// does not exist here.
    pub fn resolve(&mut self) -> Result<(), String> {
        if let Some(u) = &self.user {
            let uid = uid_of(u).ok_or_else(|| format!("user={u:?}: no such user"))?;
            self.user = Some(user_name(uid));
        }
        Ok(())
    }

    /// Whether the file `info` describes is in scope (after
    /// [`Scope::resolve`]).
    pub fn matches(&self, info: &FileInfo) -> bool {
        self.user
            .as_ref()
            .is_none_or(|u| *u == user_name(info.owner))
            && self.command.as_ref().is_none_or(|c| *c == info.command)
            && self.model.as_ref().is_none_or(|m| *m == info.model)
    }

    /// Whether a series with `labels` (mmash's `user`, `command`, `model`,
    /// ...) is in scope; `None` if a scoped key is not among its labels
    /// (mmash was not told to split by it).
    pub fn matches_labels(&self, labels: &[(&str, String)]) -> Option<bool> {
        let mut all = true;
        for (key, want) in self.pairs() {
            let have = labels.iter().find(|(k, _)| *k == key)?;
            all &= have.1 == *want;
        }
        Some(all)
    }

    /// The same sample with only the files in scope.
    pub fn filter(&self, sample: &Sample) -> Sample {
        filtered(sample, |f| self.matches(&f.snapshot.info))
    }

    /// The scope's query parameters.
    pub fn params(&self) -> Vec<(&'static str, String)> {
        self.pairs().map(|(k, v)| (k, v.clone())).collect()
    }

    fn pairs(&self) -> impl Iterator<Item = (&'static str, &String)> {
        [
            ("user", &self.user),
            ("command", &self.command),
            ("model", &self.model),
        ]
        .into_iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| (k, v)))
    }

    /// A key for `label` in this scope: the label itself without a scope.
    pub fn key(&self, label: &str) -> String {
        let mut key = label.to_owned();
        for (k, v) in self.pairs() {
            key.push(SEP);
            key.push_str(k);
            key.push('=');
            key.push_str(v);
        }
        key
    }

    /// The label and scope of a [`Scope::key`].
    pub fn split_key(key: &str) -> (&str, Scope) {
        let mut parts = key.split(SEP);
        let label = parts.next().unwrap_or_default();
        let mut scope = Scope::default();
        for p in parts {
            if let Some((k, v)) = p.split_once('=') {
                match k {
                    "user" => scope.user = Some(v.to_owned()),
                    "command" => scope.command = Some(v.to_owned()),
                    "model" => scope.model = Some(v.to_owned()),
                    _ => {}
                }
            }
        }
        (label, scope)
    }

    /// ` (user=www-data command=web)`, or nothing without a scope: for the
    /// plugin output.
    pub fn describe(&self) -> String {
        if self.is_empty() {
            return String::new();
        }
        let parts: Vec<String> = self.pairs().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" ({})", parts.join(" "))
    }
}

/// The same sample with only the files `keep` keeps (and no warnings).
pub fn filtered(sample: &Sample, keep: impl Fn(&FileSample) -> bool) -> Sample {
    Sample {
        time: sample.time,
        instant: sample.instant,
        files: sample.files.iter().filter(|f| keep(f)).cloned().collect(),
        warnings: Vec::new(),
        foreign_skipped: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_round_trip_and_labels_match() {
        let mut s = Scope::default();
        s.set("user", "0").unwrap();
        s.set("command", "web").unwrap();
        assert_eq!(s.user.as_deref(), Some("0"), "as given until resolved");
        s.resolve().unwrap();
        assert_eq!(s.user.as_deref(), Some("root"));
        let key = s.key("web.ok");
        assert_eq!(Scope::split_key(&key), ("web.ok", s.clone()));
        assert_eq!(Scope::split_key("web.ok"), ("web.ok", Scope::default()));
        let labels = [("user", "root".to_owned()), ("command", "web".to_owned())];
        assert_eq!(s.matches_labels(&labels), Some(true));
        let other = [
            ("user", "www-data".to_owned()),
            ("command", "web".to_owned()),
        ];
        assert_eq!(s.matches_labels(&other), Some(false));
        assert_eq!(s.matches_labels(&labels[..1]), None);
        s.set("user", "no-such-user-here").unwrap();
        assert!(s.resolve().unwrap_err().contains("no such user"));
        assert!(s.set("command", "a\u{0}b").is_err());
    }
}
