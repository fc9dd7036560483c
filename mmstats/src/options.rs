//! Where and how a stats file is made: [`Options`] (and [`Builder`], the
//! same type bound to a model), the default directory, and file name
//! templates.

use std::marker::PhantomData;
use std::path::PathBuf;

use crate::error::Error;
use crate::procfs::command_name;

use crate::sys;

/// The default file name template.
pub const DEFAULT_TEMPLATE: &str = "{cmd}.{model}.{pid}.{tid}.mmstats";

/// Where and how a stats file is made: directory, file name template,
/// command name, label prefix and reserved room.
///
/// `Options` (with no model type) is what [`StatsFile::create`](crate::StatsFile::create) takes.
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
    /// the per-user default under `/dev/shm` and it is not ours, a private
    /// [`fallback_dir`](crate::fallback_dir)).
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
    /// `bytes` of values, for [`StatsFile::add`](crate::StatsFile::add) on the live file.
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

/// Sanitises `{cmd}` or `{model}` for a file name (format-spec.md §2.2):
/// ASCII letters, digits, `_` and `-` are kept, every other code point
/// becomes one `_`, and an empty result becomes `_`.
pub fn sanitize(s: &str) -> String {
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
