//! Per-owner budgets: what one owner's files may cost a reader, so that no
//! user's files (however many, however large) can crowd out another's.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::Warning;
use crate::reader::{Reader, Snapshot};

/// What one owner's files may cost a reader ([`Sources::set_budget`](super::Sources::set_budget)).
/// Files past an owner's budget are not read, counted per owner
/// ([`Sources::over_budget`](super::Sources::over_budget)) and reported in one warning per owner and
/// rescan; no other owner is affected.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct OwnerBudget {
    /// Most files read. Default 50 000.
    pub files: usize,
    /// Most bytes mapped (the files' sizes; address space, not memory:
    /// only the pages read are touched). Default 16 GiB.
    pub mapped_bytes: u64,
    /// Most distinct labels over the owner's files. Default 100 000.
    pub series: usize,
    /// Most bytes decoded from the owner's files per reading: their
    /// strings (labels, help, units, static labels), text values and
    /// histogram buckets, as read when each file was opened. Default
    /// 1 GiB.
    pub decoded_bytes: u64,
}

impl Default for OwnerBudget {
    fn default() -> OwnerBudget {
        OwnerBudget {
            files: 50_000,
            mapped_bytes: 16 << 30,
            series: 100_000,
            decoded_bytes: 1 << 30,
        }
    }
}

/// What one owner's files cost now.
#[derive(Debug, Default)]
struct Usage {
    files: usize,
    mapped_bytes: u64,
    decoded_bytes: u64,
    /// Each label with the number of files that have it.
    labels: HashMap<String, usize>,
}

/// Every owner's usage, and the budget.
#[derive(Debug, Default)]
pub(super) struct Budgets {
    pub(super) budget: OwnerBudget,
    /// What each owner's files cost now.
    usage: HashMap<u32, Usage>,
    /// Files not read because their owner was over budget, since the
    /// last report, by owner.
    pub(super) over: BTreeMap<u32, usize>,
}

impl Budgets {
    /// One warning per owner over budget since the last rescan.
    pub(super) fn report(&mut self) -> Vec<Warning> {
        let mut out = Vec::new();
        for (owner, n) in std::mem::take(&mut self.over) {
            out.push(Warning {
                path: PathBuf::from(format!("(files of uid {owner})")),
                reason: format!(
                    "{n} files not read: over the owner's budget of {} files, {} mapped bytes, {} labels, {} decoded bytes",
                    self.budget.files,
                    self.budget.mapped_bytes,
                    self.budget.series,
                    self.budget.decoded_bytes
                ),
            });
        }
        out
    }

    /// Whether a file of `owner` of `size` bytes would put it over its
    /// files or mapped bytes before it is even opened (counted as over).
    pub(super) fn full(&mut self, owner: u32, size: u64) -> bool {
        let usage = self.usage.get(&owner);
        let (files, mapped) = usage.map_or((0, 0), |u| (u.files, u.mapped_bytes));
        if files + 1 > self.budget.files || mapped.saturating_add(size) > self.budget.mapped_bytes {
            *self.over.entry(owner).or_default() += 1;
            return true;
        }
        false
    }

    /// Charges a newly opened file to its owner; `false` (and nothing
    /// charged) if that would put the owner over budget.
    pub(super) fn charge(&mut self, reader: &Reader, snap: &Snapshot) -> bool {
        let owner = snap.info.owner;
        let budget = self.budget;
        let usage = self.usage.entry(owner).or_default();
        let new_labels = snap
            .fields
            .iter()
            .filter(|f| !usage.labels.contains_key(&f.label))
            .count();
        let decoded = decoded(snap);
        if usage.files + 1 > budget.files
            || usage.mapped_bytes.saturating_add(reader.mapped_len()) > budget.mapped_bytes
            || usage.labels.len() + new_labels > budget.series
            || usage.decoded_bytes.saturating_add(decoded) > budget.decoded_bytes
        {
            *self.over.entry(owner).or_default() += 1;
            return false;
        }
        usage.files += 1;
        usage.mapped_bytes += reader.mapped_len();
        usage.decoded_bytes += decoded;
        for f in &snap.fields {
            *usage.labels.entry(f.label.clone()).or_default() += 1;
        }
        true
    }

    /// Gives back what `charge` took for a file.
    pub(super) fn refund(&mut self, reader: &Reader, snap: &Snapshot) {
        let owner = snap.info.owner;
        let Some(usage) = self.usage.get_mut(&owner) else {
            return;
        };
        usage.files = usage.files.saturating_sub(1);
        usage.mapped_bytes = usage.mapped_bytes.saturating_sub(reader.mapped_len());
        usage.decoded_bytes = usage.decoded_bytes.saturating_sub(decoded(snap));
        for f in &snap.fields {
            if let Some(n) = usage.labels.get_mut(&f.label) {
                *n -= 1;
                if *n == 0 {
                    usage.labels.remove(&f.label);
                }
            }
        }
        if usage.files == 0 {
            self.usage.remove(&owner);
        }
    }
}

/// What reading a file decodes: its strings, its text values and, for a
/// histogram or timer, every bucket word a full reading may copy.
fn decoded(snap: &Snapshot) -> u64 {
    snap.fields
        .iter()
        .map(|f| {
            let strings = f.label.len()
                + f.help.len()
                + f.unit_text.len()
                + f.static_labels
                    .iter()
                    .map(|(k, v)| k.len() + v.len() + 2)
                    .sum::<usize>();
            let value = match &f.value {
                crate::Value::Text(s) | crate::Value::Constant(s) => s.len() as u64,
                crate::Value::Histogram(h) => 8 * h.layout().buckets() as u64,
                _ => 8,
            };
            strings as u64 + value
        })
        .sum()
}
