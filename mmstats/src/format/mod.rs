//! The file format's public vocabulary: version constants, size limits,
//! and the codes of kinds, units and writer states.
//!
//! This module is the code form of `format-spec.md`. Each [`Kind`] has one
//! description here (its code, name, value shape and the rule for its value
//! length), used by the writer, the reader and the printers alike. Byte
//! offsets live in one hidden submodule, [`raw`], declared as `#[repr(C)]`
//! structs of little-endian integers. Nothing here touches a mapping.
//!
//! All integers are little-endian. Offsets are from the start of the file.

use std::fmt;

use crate::hist::Layout;

#[doc(hidden)]
pub mod raw;

/// The eight bytes every stats file starts with.
pub const MAGIC: [u8; 8] = *b"MMSTATS\0";
/// Major version: a reader refuses a file whose major version it does not know.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version: additions a reader of a lower minor version can skip safely.
pub const VERSION_MINOR: u16 = 2;
/// Written as a `u32`; reads back as this value only if the file is little-endian.
pub const BYTE_ORDER_MARK: u32 = 0x0A0B_0C0D;

/// Largest capacity a text or constant field may declare, in bytes.
pub const MAX_TEXT_CAPACITY: u64 = 1 << 20;
/// Largest file a writer makes and a reader maps.
pub const MAX_FILE_LEN: u64 = 1 << 30;
/// Longest field label the readers read, in bytes (format-spec.md §7.4):
/// the writer refuses a longer one, which they would skip.
pub const MAX_LABEL_LEN: usize = 16 * 1024;
/// Longest encoded static labels of a field the readers read, in bytes
/// (format-spec.md §7.4): the writer refuses longer ones.
pub const MAX_STATIC_LABELS_LEN: usize = 4096;

/// What a field measures, and so how its value bytes are laid out.
///
/// Codes are stable: a new kind gets a new code and a minor version bump.
/// A reader skips a field whose code it does not know (its value length
/// says how big it is).
///
/// Adding a kind means: a variant and a row in `KINDS` here, a handle type
/// in `metrics`, a `Value` variant and its decoding in the
/// reader, and its JSON form in `mmstats-read`'s `json`. The compiler points
/// at each, since those matches are exhaustive. (So `Kind` is not
/// `#[non_exhaustive]`: a new kind is a format change, and every reader's
/// match must learn it.)
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    /// `u64` that only goes up.
    Counter,
    /// `i64` that goes up and down.
    Gauge,
    /// `f64` stored as its IEEE-754 bits in a `u64`.
    GaugeF64,
    /// UTF-8 text of fixed capacity, guarded by a sequence word.
    Text,
    /// UTF-8 text written once.
    Constant,
    /// Log-linear histogram of `u64` values.
    Histogram,
    /// A histogram of durations in nanoseconds.
    Timer,
}

/// How a kind's value bytes are laid out (spec §4.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Shape {
    /// One 8-byte word; both parameters unused.
    Word,
    /// A sequence word and two buffers of `param0` bytes of UTF-8.
    Text,
    /// A sum word and the bucket counts of layout (`param0`, `param1`).
    Histogram,
}

/// One kind's description: everything kind-specific about the format.
struct KindSpec {
    kind: Kind,
    code: u16,
    name: &'static str,
    shape: Shape,
}

/// Every kind, in code order. `Kind::spec` indexes it by discriminant.
const KINDS: [KindSpec; 7] = [
    KindSpec {
        kind: Kind::Counter,
        code: 1,
        name: "counter",
        shape: Shape::Word,
    },
    KindSpec {
        kind: Kind::Gauge,
        code: 2,
        name: "gauge",
        shape: Shape::Word,
    },
    KindSpec {
        kind: Kind::GaugeF64,
        code: 3,
        name: "gauge_f64",
        shape: Shape::Word,
    },
    KindSpec {
        kind: Kind::Text,
        code: 4,
        name: "text",
        shape: Shape::Text,
    },
    KindSpec {
        kind: Kind::Constant,
        code: 5,
        name: "constant",
        shape: Shape::Text,
    },
    KindSpec {
        kind: Kind::Histogram,
        code: 6,
        name: "histogram",
        shape: Shape::Histogram,
    },
    KindSpec {
        kind: Kind::Timer,
        code: 7,
        name: "timer",
        shape: Shape::Histogram,
    },
];

// The table is in discriminant order, which `Kind::spec` relies on.
const _: () = {
    let mut i = 0;
    while i < KINDS.len() {
        assert!(KINDS[i].kind as usize == i);
        i += 1;
    }
};

impl Kind {
    /// Every kind this version knows, in code order.
    pub const ALL: [Kind; 7] = [
        Kind::Counter,
        Kind::Gauge,
        Kind::GaugeF64,
        Kind::Text,
        Kind::Constant,
        Kind::Histogram,
        Kind::Timer,
    ];

    const fn spec(self) -> &'static KindSpec {
        &KINDS[self as usize]
    }

    /// The kind's code in the file.
    pub const fn code(self) -> u16 {
        self.spec().code
    }

    /// The kind for a code, if this version knows it.
    pub fn from_code(code: u16) -> Option<Kind> {
        KINDS.iter().find(|s| s.code == code).map(|s| s.kind)
    }

    /// Lower-case name, as used in JSON output.
    pub const fn name(self) -> &'static str {
        self.spec().name
    }

    /// The kind with this [`name`](Kind::name), if any.
    pub fn from_name(name: &str) -> Option<Kind> {
        KINDS.iter().find(|s| s.name == name).map(|s| s.kind)
    }

    /// Whether values of this kind are histograms (histograms and timers).
    pub const fn is_histogram(self) -> bool {
        matches!(self.spec().shape, Shape::Histogram)
    }

    pub(crate) const fn shape(self) -> Shape {
        self.spec().shape
    }

    /// The length in bytes of a value of this kind with these parameters:
    /// the one rule writers lay values out by and readers check them with.
    /// The error says which parameter is out of range.
    pub fn value_len(self, param0: u64, param1: u64) -> Result<usize, String> {
        match self.shape() {
            Shape::Word => Ok(8),
            Shape::Text => {
                if param0 > MAX_TEXT_CAPACITY {
                    return Err(format!(
                        "text capacity {param0} is over the limit of {MAX_TEXT_CAPACITY} bytes"
                    ));
                }
                Ok(raw::text_value_len(param0 as usize))
            }
            Shape::Histogram => {
                let layout = Layout::from_params(param0, param1).map_err(|e| e.to_string())?;
                Ok(raw::histogram_value_len(layout.buckets()))
            }
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The unit of a field's values, for tools that convert or scale them.
///
/// The field record also carries the unit as free text, which is what a
/// tool shows; the code is what it computes with. Unknown codes read as
/// [`Unit::Other`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Default)]
#[non_exhaustive]
pub enum Unit {
    /// No unit, or one only the unit text names (`rows`, `requests`).
    #[default]
    Other,
    /// Nanoseconds.
    Nanoseconds,
    /// Microseconds.
    Microseconds,
    /// Milliseconds.
    Milliseconds,
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// The unit's code in the file.
    pub const fn code(self) -> u16 {
        match self {
            Unit::Other => 0,
            Unit::Nanoseconds => 1,
            Unit::Microseconds => 2,
            Unit::Milliseconds => 3,
            Unit::Seconds => 4,
            Unit::Bytes => 5,
        }
    }

    /// The unit for a code; unknown codes are [`Unit::Other`].
    pub const fn from_code(code: u16) -> Unit {
        match code {
            1 => Unit::Nanoseconds,
            2 => Unit::Microseconds,
            3 => Unit::Milliseconds,
            4 => Unit::Seconds,
            5 => Unit::Bytes,
            _ => Unit::Other,
        }
    }

    /// The canonical text of the unit (`ns`, `us`, `ms`, `s`, `bytes`;
    /// empty for [`Unit::Other`]): what a reader shows when the field's own
    /// unit text is empty.
    pub const fn text(self) -> &'static str {
        match self {
            Unit::Other => "",
            Unit::Nanoseconds => "ns",
            Unit::Microseconds => "us",
            Unit::Milliseconds => "ms",
            Unit::Seconds => "s",
            Unit::Bytes => "bytes",
        }
    }

    /// The unit for its usual abbreviation (`ns`, `us`, `ms`, `s`, `bytes`);
    /// anything else is [`Unit::Other`].
    pub fn from_text(text: &str) -> Unit {
        match text {
            "ns" => Unit::Nanoseconds,
            "us" | "µs" => Unit::Microseconds,
            "ms" => Unit::Milliseconds,
            "s" => Unit::Seconds,
            "bytes" | "B" => Unit::Bytes,
            _ => Unit::Other,
        }
    }
}

/// The writer state word (header offset 0x20). Exhaustive, as [`Kind`]:
/// a new state is a format change every reader must learn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterState {
    /// The writer has the file open.
    Active,
    /// The writer closed the file; values are final.
    Exited,
    /// An archive (since 1.2): the folded totals of dead writers, written
    /// by a fold, never by a writer (`mmstats-read`'s `retire`).
    Archive,
    /// A value this version does not know.
    Unknown(u64),
}

impl WriterState {
    /// Code of [`WriterState::Active`].
    pub const ACTIVE: u64 = 1;
    /// Code of [`WriterState::Exited`].
    pub const EXITED: u64 = 2;
    /// Code of [`WriterState::Archive`].
    pub const ARCHIVE: u64 = 3;

    /// The state for a word read from the file.
    pub const fn from_word(word: u64) -> WriterState {
        match word {
            Self::ACTIVE => WriterState::Active,
            Self::EXITED => WriterState::Exited,
            Self::ARCHIVE => WriterState::Archive,
            other => WriterState::Unknown(other),
        }
    }
}

/// The name of the lock file for `token`, in the stats file's directory
/// (format-spec.md §2.4): `.lock.TOKEN.mmstats-lock`, the token as 16
/// lowercase hex digits.
pub fn lock_file_name(token: u64) -> String {
    format!(".lock.{token:016x}.mmstats-lock")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_and_names_round_trip() {
        for k in Kind::ALL {
            assert_eq!(Kind::from_code(k.code()), Some(k));
            assert_eq!(Kind::from_name(k.name()), Some(k));
        }
        assert_eq!(Kind::from_code(0), None);
        assert_eq!(Kind::from_code(999), None);
        for u in [
            Unit::Other,
            Unit::Nanoseconds,
            Unit::Microseconds,
            Unit::Milliseconds,
            Unit::Seconds,
            Unit::Bytes,
        ] {
            assert_eq!(Unit::from_code(u.code()), u);
            assert_eq!(Unit::from_text(u.text()), u);
        }
        assert_eq!(Unit::from_code(4242), Unit::Other);
    }

    #[test]
    fn value_lengths_follow_the_parameters() {
        assert_eq!(Kind::Counter.value_len(0, 0), Ok(8));
        assert_eq!(Kind::Text.value_len(64, 0), Ok(152));
        assert!(Kind::Constant
            .value_len(MAX_TEXT_CAPACITY + 1, 0)
            .unwrap_err()
            .contains("capacity"));
        let timer = Layout::timer();
        assert_eq!(
            Kind::Timer.value_len(timer.precision().into(), timer.max_bits().into()),
            Ok(8 + 8 * timer.buckets())
        );
        assert!(Kind::Histogram.value_len(6, 99).is_err());
    }
}
