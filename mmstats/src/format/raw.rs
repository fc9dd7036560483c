//! The byte layout of the header and the field record, declared once as
//! `#[repr(C)]` structs of little-endian integers, and every offset derived
//! from them.
//!
//! Not part of the public API: readers and writers use the crate's types.
//! It is reachable (hidden) so that the format tests can build damaged files
//! byte by byte.
//!
//! The structs use `zerocopy`'s byte-order types, which have alignment 1: a
//! struct has no padding (the derives prove it at compile time), decodes
//! from any `&[u8]` of its size and encodes to exactly the bytes the spec
//! lists. Encode and decode are one declaration, so they cannot drift.

use std::mem::{offset_of, size_of};

use zerocopy::little_endian::{U16, U32, U64};
use zerocopy::{FromBytes, Immutable, IntoBytes, KnownLayout};

/// A reference into the string table: absolute offset and byte length.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable,
)]
#[repr(C)]
pub struct StrRef {
    /// Offset from the start of the file.
    pub off: U32,
    /// Length in bytes.
    pub len: U32,
}

impl StrRef {
    /// A reference to `len` bytes at `off`.
    pub fn new(off: u32, len: u32) -> StrRef {
        StrRef {
            off: off.into(),
            len: len.into(),
        }
    }
}

/// The 128-byte file header (spec §3.1). Each field is documented at its
/// offset constant below.
#[allow(missing_docs)]
#[derive(Clone, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Header {
    pub magic: [u8; 8],
    pub major: U16,
    pub minor: U16,
    pub bom: U32,
    pub header_len: U32,
    pub record_len: U32,
    pub file_len: U64,
    pub state: U64,
    pub field_count: U64,
    pub field_capacity: U32,
    pub field_table_off: U32,
    pub strings_off: U32,
    pub strings_len: U32,
    pub values_off: U32,
    pub values_len: U32,
    pub pid: U32,
    pub tid: U32,
    pub proc_start: U64,
    pub created_ns: U64,
    pub command: StrRef,
    pub model: StrRef,
    pub lock_token: U64,
    pub fallbacks: U64,
}

/// The 64-byte field record (spec §3.2). Each field is documented at its
/// offset constant below.
#[allow(missing_docs)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, FromBytes, IntoBytes, KnownLayout, Immutable)]
#[repr(C)]
pub struct Record {
    pub label: StrRef,
    pub help: StrRef,
    pub unit_text: StrRef,
    pub static_labels: StrRef,
    pub kind: U16,
    pub unit: U16,
    pub flags: U32,
    pub value_off: U32,
    pub value_len: U32,
    pub param0: U64,
    pub param1: U64,
}

impl Header {
    /// Decodes the first [`HEADER_LEN`] bytes of `b`. Panics if `b` is
    /// shorter: callers map at least a header.
    pub fn decode(b: &[u8]) -> Header {
        Header::read_from_bytes(&b[..HEADER_LEN]).expect("header-sized slice")
    }
}

impl Record {
    /// Decodes the first [`RECORD_LEN`] bytes of `b`. Panics if shorter.
    pub fn decode(b: &[u8]) -> Record {
        Record::read_from_bytes(&b[..RECORD_LEN]).expect("record-sized slice")
    }
}

// ---------------------------------------------------------------- header --

/// `[u8; 8]` magic, [`MAGIC`](super::MAGIC).
pub const H_MAGIC: usize = offset_of!(Header, magic);
/// `u16` major version.
pub const H_MAJOR: usize = offset_of!(Header, major);
/// `u16` minor version.
pub const H_MINOR: usize = offset_of!(Header, minor);
/// `u32` byte-order mark, [`BYTE_ORDER_MARK`](super::BYTE_ORDER_MARK).
pub const H_BOM: usize = offset_of!(Header, bom);
/// `u32` header length in bytes ([`HEADER_LEN`] in this version).
pub const H_HEADER_LEN: usize = offset_of!(Header, header_len);
/// `u32` length of one field record ([`RECORD_LEN`] in this version).
pub const H_RECORD_LEN: usize = offset_of!(Header, record_len);
/// `u64` total file length in bytes.
pub const H_FILE_LEN: usize = offset_of!(Header, file_len);
/// `u64` writer state word, see [`WriterState`](super::WriterState). Changed while live.
pub const H_STATE: usize = offset_of!(Header, state);
/// `u64` published number of field records. Grows while live (release store).
pub const H_FIELD_COUNT: usize = offset_of!(Header, field_count);
/// `u32` number of field records the table has room for.
pub const H_FIELD_CAPACITY: usize = offset_of!(Header, field_capacity);
/// `u32` offset of the field table.
pub const H_FIELD_TABLE_OFF: usize = offset_of!(Header, field_table_off);
/// `u32` offset of the string table.
pub const H_STRINGS_OFF: usize = offset_of!(Header, strings_off);
/// `u32` length of the string table (its capacity, used or not).
pub const H_STRINGS_LEN: usize = offset_of!(Header, strings_len);
/// `u32` offset of the value area (8-byte aligned).
pub const H_VALUES_OFF: usize = offset_of!(Header, values_off);
/// `u32` length of the value area (its capacity, used or not).
pub const H_VALUES_LEN: usize = offset_of!(Header, values_len);
/// `u32` process id of the writer.
pub const H_PID: usize = offset_of!(Header, pid);
/// `u32` kernel thread id of the writer.
pub const H_TID: usize = offset_of!(Header, tid);
/// `u64` process start time, in clock ticks since boot (field 22 of
/// `/proc/PID/stat`), to tell a reused pid apart.
pub const H_PROC_START: usize = offset_of!(Header, proc_start);
/// `u64` file creation time, nanoseconds since the Unix epoch.
pub const H_CREATED_NS: usize = offset_of!(Header, created_ns);
/// String reference: the command name of the writing process.
pub const H_COMMAND: usize = offset_of!(Header, command);
/// String reference: the model name (the stats struct).
pub const H_MODEL: usize = offset_of!(Header, model);
/// `u64` since 1.1: the token naming the writing process's lock file
/// (spec §2.4); 0 in a 1.0 file, whose own `flock` is probed instead.
pub const H_LOCK_TOKEN: usize = offset_of!(Header, lock_token);
/// `u64` since 1.1: how many of the writing process's stats instances fell
/// back to private memory. Only grows; may be stored by any thread of the
/// process (atomic `fetch_max`). 0 in a 1.0 file.
pub const H_FALLBACKS: usize = offset_of!(Header, fallbacks);
/// The 16 bytes that 1.0 reserved (zero there): since 1.1,
/// [`H_LOCK_TOKEN`] and [`H_FALLBACKS`].
pub const H_RESERVED: usize = H_LOCK_TOKEN;
/// Length of the header in this version.
pub const HEADER_LEN: usize = size_of::<Header>();

// The spec's table (§3.1), checked against the declaration.
const _: () = assert!(HEADER_LEN == 128);
const _: () = assert!(H_MAJOR == 0x08 && H_BOM == 0x0C && H_FILE_LEN == 0x18);
const _: () = assert!(H_STATE == 0x20 && H_FIELD_COUNT == 0x28 && H_FIELD_CAPACITY == 0x30);
const _: () = assert!(H_VALUES_OFF == 0x40 && H_PID == 0x48 && H_PROC_START == 0x50);
const _: () = assert!(H_COMMAND == 0x60 && H_MODEL == 0x68 && H_RESERVED == 0x70);
const _: () = assert!(H_LOCK_TOKEN == 0x70 && H_FALLBACKS == 0x78);
// Words that change while live must be 8-byte aligned.
const _: () = assert!(H_STATE.is_multiple_of(8) && H_FIELD_COUNT.is_multiple_of(8));

// --------------------------------------------------- archive extension --
//
// An archive (state 3, spec §2.8) extends the header past 128 bytes:
// `header_len` = [`A_IDS`] + [`ID_LEN`] × id count. Readers of 1.1 and
// earlier ignore these bytes (§8).

/// `u64` archives: how many writer files were folded into it, ever.
pub const A_WRITERS: usize = HEADER_LEN;
/// `u64` archives: `created_ns` of the oldest writer file folded in.
pub const A_SINCE_NS: usize = A_WRITERS + 8;
/// `u64` archives: when the fold that wrote this archive ran (ns since the epoch).
pub const A_FOLDED_NS: usize = A_SINCE_NS + 8;
/// `u64` archives: how many folds wrote an archive of this name, this one included.
pub const A_FOLDS: usize = A_FOLDED_NS + 8;
/// `u64` archives: the number of source identities that follow at [`A_IDS`].
pub const A_ID_COUNT: usize = A_FOLDS + 8;
/// Archives: 24 reserved bytes, zero.
pub const A_RESERVED: usize = A_ID_COUNT + 8;
/// Archives: the first source identity, [`ID_LEN`] bytes each.
pub const A_IDS: usize = A_RESERVED + 24;
/// Within a source identity: `u64` the source's `lock_token`.
pub const ID_LOCK_TOKEN: usize = 0;
/// Within a source identity: `u64` the source's `created_ns`.
pub const ID_CREATED_NS: usize = ID_LOCK_TOKEN + 8;
/// Within a source identity: `u64` the source's `proc_start`.
pub const ID_PROC_START: usize = ID_CREATED_NS + 8;
/// Within a source identity: `u32` the source's `pid`.
pub const ID_PID: usize = ID_PROC_START + 8;
/// Within a source identity: `u32` FNV-1a (32-bit) of the source's file name.
pub const ID_NAME_HASH: usize = ID_PID + 4;
/// Within a source identity: `u64` 0 while the source file may still exist;
/// else when a fold found it gone (ns since the epoch).
pub const ID_ABSENT_NS: usize = ID_NAME_HASH + 4;
/// Length of one source identity.
pub const ID_LEN: usize = ID_ABSENT_NS + 8;

const _: () = assert!(A_WRITERS == 0x80 && A_ID_COUNT == 0xA0 && A_IDS == 0xC0);
const _: () =
    assert!(ID_PID == 0x18 && ID_NAME_HASH == 0x1C && ID_ABSENT_NS == 0x20 && ID_LEN == 40);

// ---------------------------------------------------------- field record --

/// String reference: the label, e.g. `web.status.2xx`.
pub const R_LABEL: usize = offset_of!(Record, label);
/// String reference: the help text (may be empty).
pub const R_HELP: usize = offset_of!(Record, help);
/// String reference: the unit as text, e.g. `ns`, `rows` (may be empty).
pub const R_UNIT_TEXT: usize = offset_of!(Record, unit_text);
/// String reference: static labels, `key=value` lines joined by `\n` (may be empty).
pub const R_STATIC_LABELS: usize = offset_of!(Record, static_labels);
/// `u16` kind code, see [`Kind`](super::Kind).
pub const R_KIND: usize = offset_of!(Record, kind);
/// `u16` unit code, see [`Unit`](super::Unit).
pub const R_UNIT: usize = offset_of!(Record, unit);
/// `u32` flags, zero in this version.
pub const R_FLAGS: usize = offset_of!(Record, flags);
/// `u32` offset of the value (8-byte aligned, inside the value area).
pub const R_VALUE_OFF: usize = offset_of!(Record, value_off);
/// `u32` length of the value in bytes (a multiple of 8).
pub const R_VALUE_LEN: usize = offset_of!(Record, value_len);
/// `u64` first kind-specific parameter.
pub const R_PARAM0: usize = offset_of!(Record, param0);
/// `u64` second kind-specific parameter.
pub const R_PARAM1: usize = offset_of!(Record, param1);
/// Length of one field record in this version.
pub const RECORD_LEN: usize = size_of::<Record>();

const _: () = assert!(RECORD_LEN == 64);
const _: () = assert!(R_KIND == 0x20 && R_VALUE_OFF == 0x28 && R_PARAM0 == 0x30);

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

/// Value length of a histogram with `buckets` buckets: the sum and the counts.
pub const fn histogram_value_len(buckets: usize) -> usize {
    HIST_BUCKETS + 8 * buckets
}

// ------------------------------------------------- byte access for tests --

/// Reads a little-endian `u16` at `off` of `b`.
pub fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}

/// Reads a little-endian `u32` at `off` of `b`.
pub fn get_u32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

/// Reads a little-endian `u64` at `off` of `b`.
pub fn get_u64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Writes a little-endian `u16` at `off` of `b`.
pub fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u32` at `off` of `b`.
pub fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}

/// Writes a little-endian `u64` at `off` of `b`.
pub fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::format::{Kind, Unit, BYTE_ORDER_MARK, MAGIC};

    #[test]
    fn header_encodes_little_endian_at_the_spec_offsets() {
        let h = Header {
            magic: MAGIC,
            major: 1.into(),
            minor: 2.into(),
            bom: BYTE_ORDER_MARK.into(),
            header_len: 128.into(),
            record_len: 64.into(),
            file_len: 4096.into(),
            state: 1.into(),
            field_count: 3.into(),
            field_capacity: 19.into(),
            field_table_off: 128.into(),
            strings_off: 1344.into(),
            strings_len: 512.into(),
            values_off: 1856.into(),
            values_len: 2240.into(),
            pid: 77.into(),
            tid: 78.into(),
            proc_start: 9.into(),
            created_ns: 10.into(),
            command: StrRef::new(1344, 4),
            model: StrRef::new(1348, 8),
            lock_token: 11.into(),
            fallbacks: 12.into(),
        };
        let b = h.as_bytes();
        assert_eq!(b.len(), HEADER_LEN);
        assert_eq!(Header::decode(b), h);
        assert_eq!(&b[..8], b"MMSTATS\0");
        // Little-endian on the wire whatever the host.
        assert_eq!(&b[H_BOM..H_BOM + 4], &[0x0D, 0x0C, 0x0B, 0x0A]);
        assert_eq!(get_u32(b, H_FIELD_CAPACITY), 19);
        assert_eq!(get_u64(b, H_CREATED_NS), 10);
        assert_eq!(get_u32(b, H_MODEL + 4), 8);
        assert_eq!(get_u64(b, H_LOCK_TOKEN), 11);
        assert_eq!(get_u64(b, H_FALLBACKS), 12);
    }

    #[test]
    fn record_encodes_at_the_spec_offsets() {
        let r = Record {
            label: StrRef::new(1, 2),
            help: StrRef::new(3, 4),
            unit_text: StrRef::new(5, 6),
            static_labels: StrRef::new(7, 8),
            kind: Kind::Timer.code().into(),
            unit: Unit::Nanoseconds.code().into(),
            flags: 0.into(),
            value_off: 4096.into(),
            value_len: 8.into(),
            param0: 6.into(),
            param1: 42.into(),
        };
        let b = r.as_bytes();
        assert_eq!(Record::decode(b), r);
        assert_eq!(get_u16(b, R_KIND), 7);
        assert_eq!(get_u32(b, R_STATIC_LABELS), 7);
        assert_eq!(get_u64(b, R_PARAM1), 42);
    }

    #[test]
    fn text_lengths_are_word_multiples() {
        assert_eq!(text_value_len(0), 24);
        assert_eq!(text_value_len(1), 40);
        assert_eq!(text_value_len(64), 152);
        assert_eq!(text_buffer(64, 1), 80);
    }
}
