//! Every byte offset of the file format, in one place.
//!
//! This module is the code form of `format-spec.md`: the header and field
//! record layouts, the kind and unit codes, and the pure (safe, allocation
//! free) encoders and decoders over byte slices. Nothing here touches a
//! mapping; the private `sys` module does that.
//!
//! All integers are little-endian. Offsets are from the start of the file.

use std::fmt;

/// The eight bytes every stats file starts with.
pub const MAGIC: [u8; 8] = *b"MMSTATS\0";
/// Major version: a reader refuses a file whose major version it does not know.
pub const VERSION_MAJOR: u16 = 1;
/// Minor version: additions a reader of a lower minor version can skip safely.
pub const VERSION_MINOR: u16 = 0;
/// Written as a `u32`; reads back as this value only if the file is little-endian.
pub const BYTE_ORDER_MARK: u32 = 0x0A0B_0C0D;

// ---------------------------------------------------------------- header --

/// `[u8; 8]` magic.
pub const H_MAGIC: usize = 0;
/// `u16` major version.
pub const H_MAJOR: usize = H_MAGIC + 8;
/// `u16` minor version.
pub const H_MINOR: usize = H_MAJOR + 2;
/// `u32` byte-order mark, [`BYTE_ORDER_MARK`].
pub const H_BOM: usize = H_MINOR + 2;
/// `u32` header length in bytes ([`HEADER_LEN`] in this version).
pub const H_HEADER_LEN: usize = H_BOM + 4;
/// `u32` length of one field record ([`RECORD_LEN`] in this version).
pub const H_RECORD_LEN: usize = H_HEADER_LEN + 4;
/// `u64` total file length in bytes.
pub const H_FILE_LEN: usize = H_RECORD_LEN + 4;
/// `u64` writer state word, see [`WriterState`]. Changed while live.
pub const H_STATE: usize = H_FILE_LEN + 8;
/// `u64` published number of field records. Grows while live (release store).
pub const H_FIELD_COUNT: usize = H_STATE + 8;
/// `u32` number of field records the table has room for.
pub const H_FIELD_CAPACITY: usize = H_FIELD_COUNT + 8;
/// `u32` offset of the field table.
pub const H_FIELD_TABLE_OFF: usize = H_FIELD_CAPACITY + 4;
/// `u32` offset of the string table.
pub const H_STRINGS_OFF: usize = H_FIELD_TABLE_OFF + 4;
/// `u32` length of the string table (its capacity, used or not).
pub const H_STRINGS_LEN: usize = H_STRINGS_OFF + 4;
/// `u32` offset of the value area (8-byte aligned).
pub const H_VALUES_OFF: usize = H_STRINGS_LEN + 4;
/// `u32` length of the value area (its capacity, used or not).
pub const H_VALUES_LEN: usize = H_VALUES_OFF + 4;
/// `u32` process id of the writer.
pub const H_PID: usize = H_VALUES_LEN + 4;
/// `u32` kernel thread id of the writer.
pub const H_TID: usize = H_PID + 4;
/// `u64` process start time, in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), to tell a reused pid apart.
pub const H_PROC_START: usize = H_TID + 4;
/// `u64` file creation time, nanoseconds since the Unix epoch.
pub const H_CREATED_NS: usize = H_PROC_START + 8;
/// String reference: the command name of the writing process.
pub const H_COMMAND: usize = H_CREATED_NS + 8;
/// String reference: the model name (the stats struct).
pub const H_MODEL: usize = H_COMMAND + 8;
/// Reserved, zero. Readers ignore it.
pub const H_RESERVED: usize = H_MODEL + 8;
/// Length of the header in this version.
pub const HEADER_LEN: usize = H_RESERVED + 16;
const _: () = assert!(HEADER_LEN == 128);
const _: () = assert!(H_STATE.is_multiple_of(8) && H_FIELD_COUNT.is_multiple_of(8));

// ---------------------------------------------------------- field record --

/// String reference: the label, e.g. `web.status.2xx`.
pub const R_LABEL: usize = 0;
/// String reference: the help text (may be empty).
pub const R_HELP: usize = R_LABEL + 8;
/// String reference: the unit as text, e.g. `ns`, `rows` (may be empty).
pub const R_UNIT_TEXT: usize = R_HELP + 8;
/// String reference: static labels, `key=value` lines joined by `\n` (may be empty).
pub const R_STATIC_LABELS: usize = R_UNIT_TEXT + 8;
/// `u16` kind code, see [`Kind`].
pub const R_KIND: usize = R_STATIC_LABELS + 8;
/// `u16` unit code, see [`Unit`].
pub const R_UNIT: usize = R_KIND + 2;
/// `u32` flags, zero in this version.
pub const R_FLAGS: usize = R_UNIT + 2;
/// `u32` offset of the value (8-byte aligned, inside the value area).
pub const R_VALUE_OFF: usize = R_FLAGS + 4;
/// `u32` length of the value in bytes (a multiple of 8).
pub const R_VALUE_LEN: usize = R_VALUE_OFF + 4;
/// `u64` first kind-specific parameter.
pub const R_PARAM0: usize = R_VALUE_LEN + 4;
/// `u64` second kind-specific parameter.
pub const R_PARAM1: usize = R_PARAM0 + 8;
/// Length of one field record in this version.
pub const RECORD_LEN: usize = R_PARAM1 + 8;
const _: () = assert!(RECORD_LEN == 64);

// ---------------------------------------------------------------- values --

/// Text and constant values: `u64` sequence word, `2w` once write `w` is
/// complete and `2w + 1` while write `w + 1` is under way; 0 if never
/// written. Write `w` goes to buffer `w % 2`, so readers read the last
/// complete write while the next one fills the other buffer.
pub const TEXT_SEQ: usize = 0;
/// Text values: the first of two buffers (see [`text_buffer`]).
pub const TEXT_BUFFERS: usize = TEXT_SEQ + 8;
/// Within a text buffer: `u64` byte length of its string.
pub const TEXT_BUF_LEN: usize = 0;
/// Within a text buffer: the UTF-8 bytes, `capacity` of them, padded to 8.
pub const TEXT_BUF_BYTES: usize = TEXT_BUF_LEN + 8;
/// Histogram values: `u64` exact sum of every recorded value (wrapping).
pub const HIST_SUM: usize = 0;
/// Histogram values: the bucket counts, `u64` each.
pub const HIST_BUCKETS: usize = HIST_SUM + 8;

/// Largest capacity a text or constant field may declare, in bytes.
pub const MAX_TEXT_CAPACITY: u64 = 1 << 20;
/// Largest file a reader will map. Anything larger is treated as hostile.
pub const MAX_FILE_LEN: u64 = 1 << 30;

/// Rounds `n` up to a multiple of 8.
pub const fn align8(n: usize) -> usize {
    (n + 7) & !7
}

/// Length of one text buffer of `capacity` bytes.
pub const fn text_buffer_len(capacity: usize) -> usize {
    TEXT_BUF_BYTES + align8(capacity)
}

/// Offset, within a text value, of buffer `b` (0 or 1).
pub const fn text_buffer(capacity: usize, b: usize) -> usize {
    TEXT_BUFFERS + b * text_buffer_len(capacity)
}

/// Value length of a text or constant field of `capacity` bytes: the
/// sequence word and two buffers.
pub const fn text_value_len(capacity: usize) -> usize {
    text_buffer(capacity, 2)
}

// ------------------------------------------------------------------ enums --

/// What a field measures, and so how its value bytes are laid out.
///
/// Codes are stable: a new kind gets a new code and a minor version bump.
/// A reader skips a field whose code it does not know (its value length
/// says how big it is).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
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

impl Kind {
    /// The kind's code in the file.
    pub const fn code(self) -> u16 {
        match self {
            Kind::Counter => 1,
            Kind::Gauge => 2,
            Kind::GaugeF64 => 3,
            Kind::Text => 4,
            Kind::Constant => 5,
            Kind::Histogram => 6,
            Kind::Timer => 7,
        }
    }

    /// The kind for a code, if this version knows it.
    pub const fn from_code(code: u16) -> Option<Kind> {
        Some(match code {
            1 => Kind::Counter,
            2 => Kind::Gauge,
            3 => Kind::GaugeF64,
            4 => Kind::Text,
            5 => Kind::Constant,
            6 => Kind::Histogram,
            7 => Kind::Timer,
            _ => return None,
        })
    }

    /// Lower-case name, as used in JSON output.
    pub const fn name(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::GaugeF64 => "gauge_f64",
            Kind::Text => "text",
            Kind::Constant => "constant",
            Kind::Histogram => "histogram",
            Kind::Timer => "timer",
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

/// The writer state word at [`H_STATE`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WriterState {
    /// The writer has the file open.
    Active,
    /// The writer closed the file; values are final.
    Exited,
    /// A value this version does not know.
    Unknown(u64),
}

impl WriterState {
    /// Code of [`WriterState::Active`].
    pub const ACTIVE: u64 = 1;
    /// Code of [`WriterState::Exited`].
    pub const EXITED: u64 = 2;

    /// The state for a word read from the file.
    pub const fn from_word(word: u64) -> WriterState {
        match word {
            Self::ACTIVE => WriterState::Active,
            Self::EXITED => WriterState::Exited,
            other => WriterState::Unknown(other),
        }
    }
}

// ----------------------------------------------------------- byte access --

/// Reads a little-endian `u16` at `off`. Panics if out of range: callers
/// check ranges first (the reader validates before it decodes).
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian `u32` at `off`.
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Reads a little-endian `u64` at `off`.
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Writes a little-endian `u16` at `off`.
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u32` at `off`.
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u64` at `off`.
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

/// A reference into the string table: absolute offset and byte length.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StrRef {
    /// Offset from the start of the file.
    pub off: u32,
    /// Length in bytes.
    pub len: u32,
}

impl StrRef {
    /// Decodes the reference stored at `off`.
    pub fn get(b: &[u8], off: usize) -> StrRef {
        StrRef {
            off: get_u32(b, off),
            len: get_u32(b, off + 4),
        }
    }

    /// Encodes the reference at `off`.
    pub fn put(self, b: &mut [u8], off: usize) {
        put_u32(b, off, self.off);
        put_u32(b, off + 4, self.len);
    }
}

/// The decoded header, before validation against the file. Each field is
/// documented at its offset constant (`magic` at [`H_MAGIC`], ...).
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawHeader {
    pub magic: [u8; 8],
    pub major: u16,
    pub minor: u16,
    pub bom: u32,
    pub header_len: u32,
    pub record_len: u32,
    pub file_len: u64,
    pub state: u64,
    pub field_count: u64,
    pub field_capacity: u32,
    pub field_table_off: u32,
    pub strings_off: u32,
    pub strings_len: u32,
    pub values_off: u32,
    pub values_len: u32,
    pub pid: u32,
    pub tid: u32,
    pub proc_start: u64,
    pub created_ns: u64,
    pub command: StrRef,
    pub model: StrRef,
}

impl RawHeader {
    /// Decodes a header from the first [`HEADER_LEN`] bytes of `b`.
    pub fn decode(b: &[u8]) -> RawHeader {
        RawHeader {
            magic: b[H_MAGIC..H_MAGIC + 8].try_into().expect("8 bytes"),
            major: get_u16(b, H_MAJOR),
            minor: get_u16(b, H_MINOR),
            bom: get_u32(b, H_BOM),
            header_len: get_u32(b, H_HEADER_LEN),
            record_len: get_u32(b, H_RECORD_LEN),
            file_len: get_u64(b, H_FILE_LEN),
            state: get_u64(b, H_STATE),
            field_count: get_u64(b, H_FIELD_COUNT),
            field_capacity: get_u32(b, H_FIELD_CAPACITY),
            field_table_off: get_u32(b, H_FIELD_TABLE_OFF),
            strings_off: get_u32(b, H_STRINGS_OFF),
            strings_len: get_u32(b, H_STRINGS_LEN),
            values_off: get_u32(b, H_VALUES_OFF),
            values_len: get_u32(b, H_VALUES_LEN),
            pid: get_u32(b, H_PID),
            tid: get_u32(b, H_TID),
            proc_start: get_u64(b, H_PROC_START),
            created_ns: get_u64(b, H_CREATED_NS),
            command: StrRef::get(b, H_COMMAND),
            model: StrRef::get(b, H_MODEL),
        }
    }

    /// Encodes the header into the first [`HEADER_LEN`] bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) {
        b[H_MAGIC..H_MAGIC + 8].copy_from_slice(&self.magic);
        put_u16(b, H_MAJOR, self.major);
        put_u16(b, H_MINOR, self.minor);
        put_u32(b, H_BOM, self.bom);
        put_u32(b, H_HEADER_LEN, self.header_len);
        put_u32(b, H_RECORD_LEN, self.record_len);
        put_u64(b, H_FILE_LEN, self.file_len);
        put_u64(b, H_STATE, self.state);
        put_u64(b, H_FIELD_COUNT, self.field_count);
        put_u32(b, H_FIELD_CAPACITY, self.field_capacity);
        put_u32(b, H_FIELD_TABLE_OFF, self.field_table_off);
        put_u32(b, H_STRINGS_OFF, self.strings_off);
        put_u32(b, H_STRINGS_LEN, self.strings_len);
        put_u32(b, H_VALUES_OFF, self.values_off);
        put_u32(b, H_VALUES_LEN, self.values_len);
        put_u32(b, H_PID, self.pid);
        put_u32(b, H_TID, self.tid);
        put_u64(b, H_PROC_START, self.proc_start);
        put_u64(b, H_CREATED_NS, self.created_ns);
        self.command.put(b, H_COMMAND);
        self.model.put(b, H_MODEL);
        b[H_RESERVED..HEADER_LEN].fill(0);
    }
}

/// A decoded field record, before validation against the file. Each field
/// is documented at its offset constant (`label` at [`R_LABEL`], ...).
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RawRecord {
    pub label: StrRef,
    pub help: StrRef,
    pub unit_text: StrRef,
    pub static_labels: StrRef,
    pub kind: u16,
    pub unit: u16,
    pub flags: u32,
    pub value_off: u32,
    pub value_len: u32,
    pub param0: u64,
    pub param1: u64,
}

impl RawRecord {
    /// Decodes a record from the first [`RECORD_LEN`] bytes of `b`.
    pub fn decode(b: &[u8]) -> RawRecord {
        RawRecord {
            label: StrRef::get(b, R_LABEL),
            help: StrRef::get(b, R_HELP),
            unit_text: StrRef::get(b, R_UNIT_TEXT),
            static_labels: StrRef::get(b, R_STATIC_LABELS),
            kind: get_u16(b, R_KIND),
            unit: get_u16(b, R_UNIT),
            flags: get_u32(b, R_FLAGS),
            value_off: get_u32(b, R_VALUE_OFF),
            value_len: get_u32(b, R_VALUE_LEN),
            param0: get_u64(b, R_PARAM0),
            param1: get_u64(b, R_PARAM1),
        }
    }

    /// Encodes the record into the first [`RECORD_LEN`] bytes of `b`.
    pub fn encode(&self, b: &mut [u8]) {
        self.label.put(b, R_LABEL);
        self.help.put(b, R_HELP);
        self.unit_text.put(b, R_UNIT_TEXT);
        self.static_labels.put(b, R_STATIC_LABELS);
        put_u16(b, R_KIND, self.kind);
        put_u16(b, R_UNIT, self.unit);
        put_u32(b, R_FLAGS, self.flags);
        put_u32(b, R_VALUE_OFF, self.value_off);
        put_u32(b, R_VALUE_LEN, self.value_len);
        put_u64(b, R_PARAM0, self.param0);
        put_u64(b, R_PARAM1, self.param1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_round_trips() {
        let h = RawHeader {
            magic: MAGIC,
            major: 1,
            minor: 2,
            bom: BYTE_ORDER_MARK,
            header_len: 128,
            record_len: 64,
            file_len: 4096,
            state: 1,
            field_count: 3,
            field_capacity: 19,
            field_table_off: 128,
            strings_off: 1344,
            strings_len: 512,
            values_off: 1856,
            values_len: 2240,
            pid: 77,
            tid: 78,
            proc_start: 9,
            created_ns: 10,
            command: StrRef { off: 1344, len: 4 },
            model: StrRef { off: 1348, len: 8 },
        };
        let mut b = [0xffu8; HEADER_LEN];
        h.encode(&mut b);
        assert_eq!(RawHeader::decode(&b), h);
        assert_eq!(&b[..8], b"MMSTATS\0");
        // Little-endian on the wire whatever the host.
        assert_eq!(&b[H_BOM..H_BOM + 4], &[0x0D, 0x0C, 0x0B, 0x0A]);
        assert_eq!(&b[H_RESERVED..], &[0u8; 16]);
    }

    #[test]
    fn record_round_trips() {
        let r = RawRecord {
            label: StrRef { off: 1, len: 2 },
            help: StrRef { off: 3, len: 4 },
            unit_text: StrRef { off: 5, len: 6 },
            static_labels: StrRef { off: 7, len: 8 },
            kind: Kind::Timer.code(),
            unit: Unit::Nanoseconds.code(),
            flags: 0,
            value_off: 4096,
            value_len: 8,
            param0: 6,
            param1: 42,
        };
        let mut b = [0u8; RECORD_LEN];
        r.encode(&mut b);
        assert_eq!(RawRecord::decode(&b), r);
    }

    #[test]
    fn codes_round_trip() {
        for k in [
            Kind::Counter,
            Kind::Gauge,
            Kind::GaugeF64,
            Kind::Text,
            Kind::Constant,
            Kind::Histogram,
            Kind::Timer,
        ] {
            assert_eq!(Kind::from_code(k.code()), Some(k));
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
        }
        assert_eq!(Unit::from_code(4242), Unit::Other);
    }

    #[test]
    fn text_lengths_are_word_multiples() {
        assert_eq!(text_value_len(0), 24);
        assert_eq!(text_value_len(1), 40);
        assert_eq!(text_value_len(64), 152);
        assert_eq!(text_buffer(64, 1), 80);
    }
}
