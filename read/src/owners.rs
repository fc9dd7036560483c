//! Owners' names: the user a file or directory belongs to, by uid, as
//! `/etc/passwd` names it (the numeric uid when it has no entry).
//!
//! Readers attribute a file to its owner as `lstat` gives it, never to a
//! uid found in a name: this is only how that owner is spelled.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often `/etc/passwd` is read again at most, when a uid is not in it.
const REFRESH: Duration = Duration::from_secs(10);

struct Names {
    by_uid: BTreeMap<u32, String>,
    read_at: Option<Instant>,
}

static NAMES: Mutex<Names> = Mutex::new(Names {
    by_uid: BTreeMap::new(),
    read_at: None,
});

/// The user name of `uid`, or the uid in decimal if `/etc/passwd` has no
/// entry for it.
pub fn user_name(uid: u32) -> String {
    // Poisoning: a map of names is consistent whatever panicked.
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(name) = names.by_uid.get(&uid) {
        return name.clone();
    }
    if names.read_at.is_none_or(|t| t.elapsed() >= REFRESH) {
        names.by_uid = std::fs::read_to_string("/etc/passwd")
            .map(|text| parse_passwd(&text))
            .unwrap_or_default();
        names.read_at = Some(Instant::now());
    }
    names
        .by_uid
        .get(&uid)
        .cloned()
        .unwrap_or_else(|| uid.to_string())
}

/// The uid of user `name`, or `name` itself if it is a number.
pub fn uid_of(name: &str) -> Option<u32> {
    if let Ok(uid) = name.parse() {
        return Some(uid);
    }
    let text = std::fs::read_to_string("/etc/passwd").ok()?;
    parse_passwd(&text)
        .into_iter()
        .find(|(_, n)| n == name)
        .map(|(uid, _)| uid)
}

fn parse_passwd(text: &str) -> BTreeMap<u32, String> {
    let mut out = BTreeMap::new();
    for line in text.lines() {
        let mut parts = line.split(':');
        let (Some(name), Some(_), Some(uid)) = (parts.next(), parts.next(), parts.next()) else {
            continue;
        };
        if let Ok(uid) = uid.parse::<u32>() {
            // The first entry of a uid names it, as getpwuid does.
            out.entry(uid).or_insert_with(|| name.to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwd_lines_map_uids_to_names() {
        let m = parse_passwd("root:x:0:0:root:/root:/bin/bash\nbad line\nwww-data:x:33:33::/:/bin/false\ntoor:x:0:0::/:\n");
        assert_eq!(m.get(&0).map(String::as_str), Some("root"));
        assert_eq!(m.get(&33).map(String::as_str), Some("www-data"));
        assert_eq!(user_name(0), "root");
        assert_eq!(user_name(4_000_000_000), "4000000000");
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(uid_of("1234"), Some(1234));
    }
}
