//! [`FieldLayout`]: which labels and kinds a snapshot's fields have, shared
//! by every snapshot with the same list, so that the aggregation layer can
//! tell two files' layouts are the same with one pointer comparison instead
//! of comparing every label.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::{Arc, Mutex, Weak};

use super::Field;
use mmstats::format::Kind;

/// The labels and kinds of a list of fields, interned: equal lists alive
/// at the same time share one.
#[derive(Clone)]
pub(crate) struct FieldLayout(Arc<Key>);

#[derive(PartialEq, Eq, Hash)]
struct Key(Box<[(Box<str>, Kind)]>);

impl std::fmt::Debug for FieldLayout {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FieldLayout({} fields)", self.0 .0.len())
    }
}

/// Every layout alive, by hash; dead entries are swept as the table grows.
struct Interner {
    layouts: HashMap<u64, Vec<Weak<Key>>>,
    entries: usize,
    sweep_at: usize,
}

static INTERNER: Mutex<Option<Interner>> = Mutex::new(None);

impl FieldLayout {
    /// The layout of `fields`.
    pub(crate) fn of(fields: &[Field]) -> FieldLayout {
        let key = Key(fields
            .iter()
            .map(|f| (Box::from(f.label.as_str()), f.kind))
            .collect());
        let mut h = DefaultHasher::new();
        key.hash(&mut h);
        let hash = h.finish();
        // Poisoning: the table only ever holds weak references; whatever
        // panicked, it is still usable.
        let mut guard = INTERNER.lock().unwrap_or_else(|e| e.into_inner());
        let interner = guard.get_or_insert_with(|| Interner {
            layouts: HashMap::new(),
            entries: 0,
            sweep_at: 64,
        });
        let bucket = interner.layouts.entry(hash).or_default();
        if let Some(same) = bucket.iter().filter_map(Weak::upgrade).find(|k| **k == key) {
            return FieldLayout(same);
        }
        let key = Arc::new(key);
        bucket.push(Arc::downgrade(&key));
        interner.entries += 1;
        if interner.entries >= interner.sweep_at {
            interner.layouts.retain(|_, v| {
                v.retain(|w| w.strong_count() > 0);
                !v.is_empty()
            });
            interner.entries = interner.layouts.values().map(Vec::len).sum();
            interner.sweep_at = (2 * interner.entries).max(64);
        }
        FieldLayout(key)
    }

    /// Number of fields.
    pub(crate) fn len(&self) -> usize {
        self.0 .0.len()
    }

    /// Whether both are the same layout.
    pub(crate) fn same(&self, other: &FieldLayout) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// Whether `fields` still look like this layout: as many, of the same
    /// kinds and label lengths. (Snapshots drop their layout when cloned,
    /// so fields changed by hand after a clone never carry one; this is a
    /// cheap check against changes to a snapshot held alone.)
    pub(crate) fn fits(&self, fields: &[Field]) -> bool {
        self.0 .0.len() == fields.len()
            && self
                .0
                 .0
                .iter()
                .zip(fields)
                .all(|((l, k), f)| *k == f.kind && l.len() == f.label.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reader::Value;

    #[test]
    fn equal_lists_share_one_layout() {
        let a = vec![
            Field::new("a.b", Kind::Counter, Value::Counter(1)),
            Field::new("c", Kind::Gauge, Value::Gauge(2)),
        ];
        let mut b = a.clone();
        b[0].value = Value::Counter(5);
        let (la, lb) = (FieldLayout::of(&a), FieldLayout::of(&b));
        assert!(la.same(&lb), "values do not matter");
        b[1].kind = Kind::GaugeF64;
        assert!(!FieldLayout::of(&b).same(&la), "kinds do");
        assert!(!la.fits(&b));
        b[1].kind = Kind::Gauge;
        b[0].label = "a.bc".into();
        assert!(!FieldLayout::of(&b).same(&la), "labels do");
        assert!(!la.fits(&b));
        assert!(la.fits(&a));
    }
}
