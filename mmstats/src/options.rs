//! Where and how a stats file is made: [`Options`] (and [`Builder`], the
//! same type bound to a model), the default directory, and file name
//! templates.

use std::marker::PhantomData;
use std::path::PathBuf;

use crate::error::Error;
use crate::file::{Slots, StatsFile};
use crate::procfs::command_name;
use crate::schema::Schema;
use crate::sys;

/// The default file name template.
pub const DEFAULT_TEMPLATE: &str = "{cmd}.{model}.{pid}.{tid}.mmstats";

/// Where and how a stats file is made: directory, file name template,
/// command name, label prefix and reserved room.
///
/// `Options` (with no model type) is what [`StatsFile::create`] takes.
/// [`Builder<T>`], what [`Stats::builder`](crate::Stats::builder) returns, is
/// the same type bound to the model `T`, which adds `open` and
/// `open_or_private`: one set of setters serves both.
pub struct Options<M = ()> {
    pub(crate) dir: Option<PathBuf>,
    pub(crate) template: Option<String>,
    pub(crate) command: Option<String>,
    pub(crate) prefix: String,
    pub(crate) reserve_fields: usize,
    pub(crate) reserve_bytes: usize,
    _model: PhantomData<fn() -> M>,
}

/// Opens a stats model with options. Made by
/// [`Stats::builder`](crate::Stats::builder); the setters are [`Options`]'.
pub type Builder<T> = Options<T>;

impl Options {
    /// Default options: the default directory and template, no prefix, no
    /// room reserved for appended fields.
    pub fn new() -> Options {
        Options::default()
    }
}

impl<M> Default for Options<M> {
    fn default() -> Self {
        Options {
            dir: None,
            template: None,
            command: None,
            prefix: String::new(),
            reserve_fields: 0,
            reserve_bytes: 0,
            _model: PhantomData,
        }
    }
}

impl<M> Clone for Options<M> {
    fn clone(&self) -> Self {
        Options {
            dir: self.dir.clone(),
            template: self.template.clone(),
            command: self.command.clone(),
            prefix: self.prefix.clone(),
            reserve_fields: self.reserve_fields,
            reserve_bytes: self.reserve_bytes,
            _model: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for Options<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("model", &std::any::type_name::<M>())
            .field("dir", &self.dir)
            .field("template", &self.template)
            .field("command", &self.command)
            .field("prefix", &self.prefix)
            .field("reserve_fields", &self.reserve_fields)
            .field("reserve_bytes", &self.reserve_bytes)
            .finish()
    }
}

impl<M> Options<M> {
    /// The directory for the file (default: [`default_dir`](crate::default_dir), or, if that is
    /// the per-user default under `/dev/shm` and it is not ours,
    /// `$XDG_RUNTIME_DIR/mmstats`).
    #[must_use]
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// The file name template (default: [`DEFAULT_TEMPLATE`]). Placeholders:
    /// `{cmd}`, `{model}`, `{pid}`, `{tid}`. It must end in `.mmstats`.
    #[must_use]
    pub fn template(mut self, template: &str) -> Self {
        self.template = Some(template.to_owned());
        self
    }

    /// The command name stored in the file and used for `{cmd}` (default:
    /// the base name of `argv[0]`). For workers whose `argv[0]` says little,
    /// such as pre-forked children or embedded interpreters.
    #[must_use]
    pub fn command(mut self, command: &str) -> Self {
        self.command = Some(command.to_owned());
        self
    }

    /// A prefix put before every label (before the model's own prefix).
    #[must_use]
    pub fn prefix(mut self, prefix: &str) -> Self {
        self.prefix = prefix.to_owned();
        self
    }

    /// Room for `fields` more fields using up to `bytes` of strings and
    /// `bytes` of values, for [`StatsFile::add`] on the live file.
    #[must_use]
    pub fn reserve(mut self, fields: usize, bytes: usize) -> Self {
        self.reserve_fields = fields;
        self.reserve_bytes = bytes;
        self
    }

    pub(crate) fn resolved_command(&self) -> String {
        self.command.clone().unwrap_or_else(command_name)
    }
}

impl<T: crate::Stats> Options<T> {
    /// Creates this thread's stats file and returns the model bound to it.
    /// A model needs at least one field: its handles are what keep the
    /// file open.
    ///
    /// When the model is dropped (a `per_thread!` instance when its thread
    /// ends), its file is marked exited and parked; the next open of the
    /// same model, with the same options, in this process takes it over
    /// instead of making a new file. Its counters and histograms continue
    /// from where they were, so sums over files stay exact; gauges restart
    /// at zero; text and constants keep their last value until set again.
    /// Files per process are thus bounded by the instances alive at once.
    pub fn open(self) -> Result<T, Error> {
        let mut file = StatsFile::create_file(&model_schema::<T>()?, &self, true)?;
        Ok(T::bind(&mut Slots(file.take_slots().into_iter())))
    }

    /// Like [`open`](Options::open), but never fails: if the file cannot
    /// be made, the model lives in process-private memory (the application
    /// runs the same, nobody can read its stats) and the reason is returned
    /// beside it. A definition error in the model itself still panics,
    /// since it is a bug in the program.
    pub fn open_or_private(self) -> (T, Option<Error>) {
        let schema = model_schema::<T>().unwrap_or_else(|e| panic!("invalid stats model: {e}"));
        let (mut file, err) = match StatsFile::create_file(&schema, &self, true) {
            Ok(file) => (file, None),
            Err(err @ Error::Field { .. }) => panic!("invalid stats model: {err}"),
            Err(err) => {
                crate::registry::note_fallback(&err);
                let file = StatsFile::private(&schema, &self)
                    .unwrap_or_else(|e| panic!("invalid stats model: {e}"));
                (file, Some(err))
            }
        };
        (T::bind(&mut Slots(file.take_slots().into_iter())), err)
    }
}

/// A model's schema, refused if it has no field: nothing would hold the
/// file open.
fn model_schema<T: crate::Stats>() -> Result<Schema, Error> {
    let schema = T::schema();
    if schema.fields.is_empty() {
        return Err(Error::Field {
            label: schema.model,
            reason: "a stats model needs at least one field".into(),
        });
    }
    Ok(schema)
}

/// Keeps file names portable and free of separators.
pub(crate) fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() {
        "_".into()
    } else {
        out
    }
}

/// Fills in a file name template.
pub(crate) fn render_template(template: &str, command: &str, model: &str) -> Result<String, Error> {
    render_template_for(template, command, model, sys::gettid())
}

/// Fills in a file name template for thread `tid` of this process.
pub(crate) fn render_template_for(
    template: &str,
    command: &str,
    model: &str,
    tid: u32,
) -> Result<String, Error> {
    let bad = |reason: &str| Error::Template {
        template: template.to_owned(),
        reason: reason.to_owned(),
    };
    if template.contains('/') || template.contains('\0') {
        return Err(bad("must not contain '/' or NUL"));
    }
    if !template.ends_with(".mmstats") || template.starts_with('.') {
        return Err(bad("must end in \".mmstats\" and not start with '.'"));
    }
    if !template.contains("{pid}") || !template.contains("{tid}") {
        // Without them, two threads or processes would race for one name.
        return Err(bad("must contain {pid} and {tid}"));
    }
    let mut out = String::new();
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        out.push_str(&rest[..open]);
        let close = rest[open..].find('}').ok_or_else(|| bad("unclosed '{'"))?;
        let key = &rest[open + 1..open + close];
        match key {
            "cmd" => out.push_str(&sanitize(command)),
            "model" => out.push_str(&sanitize(model)),
            "pid" => out.push_str(&std::process::id().to_string()),
            "tid" => out.push_str(&tid.to_string()),
            other => {
                return Err(bad(&format!(
                    "unknown placeholder {{{other}}}; known: {{cmd}} {{model}} {{pid}} {{tid}}"
                )))
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn templates() {
        let name = render_template("{cmd}.{model}.{pid}.{tid}.mmstats", "my app", "Web").unwrap();
        assert!(name.starts_with("my_app.Web."), "{name}");
        assert!(name.ends_with(".mmstats"));
        for bad in [
            "{pid}{tid}x.txt",
            "a/{pid}{tid}.mmstats",
            "{nope}{pid}{tid}.mmstats",
            "{cmd.mmstats",
            ".x{pid}{tid}.mmstats",
            "{cmd}.{model}.{pid}.mmstats",
        ] {
            let err = render_template(bad, "c", "m").unwrap_err();
            assert!(err.to_string().contains(bad), "{err}");
        }
    }
}
