//! Field definitions and schemas: what a stats model declares, before any
//! file is laid out.

use crate::error::Error;
use crate::format::{Kind, Unit, MAX_LABEL_LEN, MAX_STATIC_LABELS_LEN};
use crate::hist::Layout;

/// One field of a schema: label, help, kind, unit and layout.
///
/// Made by the field types' [`StatField::def`](crate::StatField::def) and
/// refined with the builder-style methods.
#[derive(Clone, Debug, PartialEq)]
pub struct FieldDef {
    pub(crate) label: String,
    pub(crate) help: String,
    pub(crate) kind: Kind,
    pub(crate) unit: Unit,
    pub(crate) unit_text: String,
    pub(crate) static_labels: Vec<(String, String)>,
    pub(crate) param0: u64,
    pub(crate) param1: u64,
    /// A builder call that does not fit the kind, reported by `validate`.
    pub(crate) misuse: Option<String>,
}

impl FieldDef {
    pub(crate) fn new(kind: Kind, label: &str) -> FieldDef {
        FieldDef {
            label: label.to_owned(),
            help: String::new(),
            kind,
            unit: Unit::Other,
            unit_text: String::new(),
            static_labels: Vec::new(),
            param0: 0,
            param1: 0,
            misuse: None,
        }
    }

    /// A `u64` counter.
    pub fn counter(label: &str) -> FieldDef {
        FieldDef::new(Kind::Counter, label)
    }

    /// An `i64` gauge.
    pub fn gauge(label: &str) -> FieldDef {
        FieldDef::new(Kind::Gauge, label)
    }

    /// An `f64` gauge.
    pub fn gauge_f64(label: &str) -> FieldDef {
        FieldDef::new(Kind::GaugeF64, label)
    }

    /// A text field of `capacity` bytes.
    pub fn text(label: &str, capacity: usize) -> FieldDef {
        let mut d = FieldDef::new(Kind::Text, label);
        d.param0 = capacity as u64;
        d
    }

    /// A constant (write-once text) of `capacity` bytes.
    pub fn constant(label: &str, capacity: usize) -> FieldDef {
        let mut d = FieldDef::new(Kind::Constant, label);
        d.param0 = capacity as u64;
        d
    }

    /// A histogram of `u64` values.
    pub fn histogram(label: &str, layout: Layout) -> FieldDef {
        let mut d = FieldDef::new(Kind::Histogram, label);
        d.param0 = layout.precision().into();
        d.param1 = layout.max_bits().into();
        d
    }

    /// A timer: a histogram of nanoseconds.
    pub fn timer(label: &str, layout: Layout) -> FieldDef {
        let mut d = FieldDef::new(Kind::Timer, label);
        d.param0 = layout.precision().into();
        d.param1 = layout.max_bits().into();
        d.unit = Unit::Nanoseconds;
        d.unit_text = "ns".into();
        d
    }

    /// Sets the help text.
    #[must_use]
    pub fn help(mut self, help: &str) -> FieldDef {
        self.help = help.trim().to_owned();
        self
    }

    /// Sets the unit, e.g. `"bytes"`, `"ms"` or `"rows"`. A timer's unit is
    /// always nanoseconds; giving it another makes the file fail.
    #[must_use]
    pub fn unit(mut self, unit: &str) -> FieldDef {
        if self.kind == Kind::Timer && Unit::from_text(unit) != Unit::Nanoseconds {
            self.misuse = Some(format!(
                "a timer records nanoseconds; unit {unit:?} would mislabel them (use a histogram)"
            ));
        }
        self.unit = Unit::from_text(unit);
        self.unit_text = unit.to_owned();
        self
    }

    /// Adds a static label, such as `method="GET"` in Prometheus terms.
    #[must_use]
    pub fn static_label(mut self, key: &str, value: &str) -> FieldDef {
        self.static_labels.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Sets a histogram or timer's bucket layout: `precision` bits (relative
    /// error `2^-precision`) and values up to `2^max_bits`. Checked when the
    /// file is made; on any other kind, making the file fails.
    #[must_use]
    pub fn layout(mut self, precision: u8, max_bits: u8) -> FieldDef {
        if matches!(self.kind, Kind::Histogram | Kind::Timer) {
            self.param0 = precision.into();
            self.param1 = max_bits.into();
        } else {
            self.misuse = Some(format!("a {} has no bucket layout", self.kind));
        }
        self
    }

    /// The histogram range bits this definition has (its kind's default
    /// until [`layout`](FieldDef::layout) changes it).
    pub fn default_max_bits(&self) -> u8 {
        self.param1 as u8
    }

    /// The label.
    pub fn label(&self) -> &str {
        &self.label
    }

    /// The kind.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The text capacity of a text or constant field, in bytes (else 0).
    pub fn capacity(&self) -> usize {
        match self.kind {
            Kind::Text | Kind::Constant => self.param0 as usize,
            _ => 0,
        }
    }

    /// Grows a text or constant field's capacity to at least `capacity`
    /// bytes (a fold keeps the longest value it has seen). Other kinds are
    /// unchanged.
    pub fn grow_capacity(&mut self, capacity: usize) {
        if matches!(self.kind, Kind::Text | Kind::Constant) {
            self.param0 = self.param0.max(capacity as u64);
        }
    }

    /// Copies metadata as a reader found it in a file: help text, unit
    /// code and unit text, and static labels. A fold uses it to keep an
    /// archive's fields described as their writers described them. Static
    /// labels that break the writers' rules (format-spec.md §3.2: a `\r`
    /// that a reader keeps as data, say) are left out, so that a damaged
    /// description never stops a fold.
    pub fn with_metadata(
        mut self,
        help: &str,
        unit: Unit,
        unit_text: &str,
        static_labels: &[(String, String)],
    ) -> FieldDef {
        self.help = help.to_owned();
        self.unit = unit;
        self.unit_text = unit_text.to_owned();
        self.static_labels = static_labels
            .iter()
            .filter(|(k, v)| static_label_ok(k, v))
            .cloned()
            .collect();
        self
    }

    pub(crate) fn with_prefix(&self, prefix: &str) -> FieldDef {
        let mut d = self.clone();
        d.label = format!("{prefix}{}", self.label);
        d
    }

    /// Checks the definition and returns the length of its value in bytes.
    /// Checks the definition and returns its value length in bytes (the
    /// rule of [`Kind::value_len`]), as a writer does before laying it out.
    ///
    /// # Errors
    ///
    /// [`Error::Field`] naming the label and what is wrong.
    pub fn validate(&self) -> Result<usize, Error> {
        let bad = |reason: String| Error::Field {
            label: self.label.clone(),
            reason,
        };
        if self.label.is_empty() {
            return Err(bad("empty label".into()));
        }
        if let Some(misuse) = &self.misuse {
            return Err(bad(misuse.clone()));
        }
        if self.label.chars().any(char::is_control) {
            return Err(bad("label contains a control character".into()));
        }
        if self.label.len() > MAX_LABEL_LEN {
            return Err(bad(format!(
                "label of {} bytes, over the readers' {MAX_LABEL_LEN}: they would skip the field",
                self.label.len()
            )));
        }
        let statics = self.encode_static_labels().len();
        if statics > MAX_STATIC_LABELS_LEN {
            return Err(bad(format!(
                "static labels of {statics} bytes, over the readers' {MAX_STATIC_LABELS_LEN}: they would skip the field"
            )));
        }
        for (k, v) in &self.static_labels {
            if !static_label_ok(k, v) {
                return Err(bad(format!(
                    "static label {k:?}={v:?}: keys must be non-empty without '=', CR or LF, values without CR or LF"
                )));
            }
        }
        self.kind.value_len(self.param0, self.param1).map_err(bad)
    }

    /// Bytes this field puts in the string table.
    /// The string table bytes this field takes: its label, help, unit
    /// text and encoded static labels.
    pub fn string_bytes(&self) -> usize {
        self.label.len()
            + self.help.len()
            + self.unit_text.len()
            + self.encode_static_labels().len()
    }

    pub(crate) fn encode_static_labels(&self) -> String {
        let pairs: Vec<String> = self
            .static_labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        pairs.join("\n")
    }
}

/// The label of a field keyed by labels, as the adapters write it:
/// `name{k=v,k2=v2}`, the labels in the order given, with `\`, `,`, `}` and
/// `=` inside keys and values escaped by a backslash, a newline written as
/// `\n` and any other control character as `\xHH`; with no labels, `name`
/// alone. Give the same pairs to
/// [`FieldDef::static_label`]: readers such as mmash then export the field
/// as `name` with those labels (format-spec.md §3.2, "Keyed labels").
///
/// ```
/// assert_eq!(mmstats::keyed_label("http.requests", &[("route", "/a")]), "http.requests{route=/a}");
/// assert_eq!(mmstats::keyed_label("n", &[("k", "a,b}")]), r"n{k=a\,b\}}");
/// ```
pub fn keyed_label(name: &str, labels: &[(&str, &str)]) -> String {
    let mut s = name.to_owned();
    if labels.is_empty() {
        return s;
    }
    s.push('{');
    for (i, (k, v)) in labels.iter().enumerate() {
        if i > 0 {
            s.push(',');
        }
        escape_into(&mut s, k);
        s.push('=');
        escape_into(&mut s, v);
    }
    s.push('}');
    s
}

fn escape_into(out: &mut String, s: &str) {
    for c in s.chars() {
        match c {
            '\\' | ',' | '}' | '=' => {
                out.push('\\');
                out.push(c);
            }
            '\n' => out.push_str("\\n"),
            // Labels may hold no control character (§3.2): every one is
            // written `\xHH` (they are all below U+00A0).
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\x{:02X}", c as u32);
            }
            c => out.push(c),
        }
    }
}

/// Whether a static label follows format-spec.md §3.2: a non-empty key
/// without `=`, `\n` or `\r`, a value without `\n` or `\r`.
fn static_label_ok(k: &str, v: &str) -> bool {
    !k.is_empty() && !k.contains(['=', '\n', '\r']) && !v.contains(['\n', '\r'])
}

/// The fields of a stats model, in order, with the model's name.
#[derive(Clone, Debug, PartialEq)]
pub struct Schema {
    pub(crate) model: String,
    pub(crate) fields: Vec<FieldDef>,
}

impl Schema {
    /// An empty schema for the model called `model`.
    pub fn new(model: &str) -> Schema {
        Schema {
            model: model.to_owned(),
            fields: Vec::new(),
        }
    }

    /// Appends a field.
    pub fn push(&mut self, field: FieldDef) {
        self.fields.push(field);
    }

    /// The model name.
    pub fn model(&self) -> &str {
        &self.model
    }

    /// The fields, in order.
    pub fn fields(&self) -> &[FieldDef] {
        &self.fields
    }
}

/// Checks that a handle of type `F` fits a field defined as `def`: same kind,
/// and for text the same capacity `N`.
pub(crate) fn check_handle_type<F: crate::StatField>(
    def: &FieldDef,
    verb: &str,
) -> Result<(), String> {
    let want = F::def(&def.label);
    if want.kind != def.kind {
        return Err(format!(
            "defined as {} but {verb} as {}",
            def.kind, want.kind
        ));
    }
    if matches!(def.kind, Kind::Text | Kind::Constant) && want.param0 != def.param0 {
        return Err(format!(
            "capacity is {} bytes but {verb} with a handle of {}",
            def.param0, want.param0
        ));
    }
    Ok(())
}

#[cfg(test)]
mod static_label_tests {
    use super::*;

    #[test]
    fn static_labels_with_cr_lf_or_bad_keys_are_refused() {
        for (k, v) in [
            ("", "v"),
            ("a=b", "v"),
            ("a\r", "v"),
            ("a\n", "v"),
            ("k", "x\ry"),
            ("k", "x\ny"),
        ] {
            let err = FieldDef::counter("c").static_label(k, v).validate();
            assert!(err.is_err(), "{k:?}={v:?} accepted");
        }
        assert!(FieldDef::counter("c")
            .static_label("k", "v=w")
            .validate()
            .is_ok());
    }

    #[test]
    fn what_readers_would_skip_is_refused() {
        let long = "x".repeat(MAX_LABEL_LEN + 1);
        let err = FieldDef::counter(&long).validate().unwrap_err().to_string();
        assert!(err.contains("16384"), "{err}");
        assert!(FieldDef::counter(&long[1..]).validate().is_ok());
        let value = "v".repeat(MAX_STATIC_LABELS_LEN);
        let err = FieldDef::counter("c").static_label("k", &value).validate();
        assert!(err
            .unwrap_err()
            .to_string()
            .contains("static labels of 4098 bytes"));
    }

    #[test]
    fn copied_metadata_leaves_out_bad_static_labels() {
        let found = vec![
            ("route".to_owned(), "/a".to_owned()),
            ("bad\r".to_owned(), "x".to_owned()),
            ("k".to_owned(), "y\r".to_owned()),
        ];
        let def = FieldDef::counter("c").with_metadata("", Unit::Other, "", &found);
        assert!(def.validate().is_ok());
        assert_eq!(def.static_labels, [("route".to_owned(), "/a".to_owned())]);
    }
}
