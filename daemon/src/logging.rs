//! Logs to stderr; `RUST_LOG` sets the level (default `info`), `LOG_FORMAT=json` switches to
//! JSON lines. No ANSI colours unless stderr is a terminal (they cost a formatting pass and
//! garble log files).
//!
//! Plain-text fields go through [`PlainFields`]: the fmt layer's own format, with integers,
//! booleans and plain strings written directly. The layer formats a span's fields when the
//! span is made, logged or not, and each daemon makes one per request: through `write!`, the
//! fields of one request's span cost ~5,000 instructions, a tenth of an edge node's cache hit.

use std::fmt;

use crate::text::decimal;
use tracing::field::{Field, Visit};
use tracing_subscriber::field::{RecordFields, VisitOutput};
use tracing_subscriber::fmt::format::{DefaultVisitor, Writer};
use tracing_subscriber::fmt::FormatFields;

pub fn init_tracing() {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    if std::env::var("LOG_FORMAT").as_deref() == Ok("json") {
        builder.json().init();
    } else if ansi {
        // A terminal: the default fields, names in italics.
        builder.init();
    } else {
        builder.fmt_fields(PlainFields).init();
    }
}

/// The fmt layer's default field format without colours (`name=value` separated by spaces,
/// values as `{:?}`, the message bare), where integers, booleans and strings that need no
/// escaping skip `write!`. Anything else is written by the layer's own visitor, so the output
/// is the same byte for byte.
#[derive(Debug, Default, Clone, Copy)]
pub struct PlainFields;

impl<'writer> FormatFields<'writer> for PlainFields {
    fn format_fields<R: RecordFields>(
        &self,
        mut writer: Writer<'writer>,
        fields: R,
    ) -> fmt::Result {
        if writer.has_ansi_escapes() || !writer.sanitizes_ansi_escapes() {
            return record(writer, fields);
        }
        // Gathered, then written at once: a span's buffer starts empty, and written field by
        // field it grew (reallocated) three or four times per span.
        let mut text = String::with_capacity(128);
        record(Writer::new(&mut text), fields)?;
        writer.write_str(&text)
    }
}

fn record<R: RecordFields>(writer: Writer<'_>, fields: R) -> fmt::Result {
    let mut v = PlainVisitor {
        writer,
        empty: true,
        result: Ok(()),
    };
    fields.record(&mut v);
    v.result
}

struct PlainVisitor<'a> {
    writer: Writer<'a>,
    /// Nothing written yet: the next field needs no separating space.
    empty: bool,
    result: fmt::Result,
}

impl PlainVisitor<'_> {
    /// Whether `field` is written here (else by the layer's visitor): not the message, and not
    /// `log.` metadata, which the layer skips.
    fn plain(&self, field: &Field) -> bool {
        let name = field.name();
        self.result.is_ok() && name != "message" && !name.starts_with("log.")
    }

    /// `name=` then `parts`, as the layer writes a field.
    fn write(&mut self, field: &Field, parts: &[&str]) {
        let name = field.name();
        let name = name.strip_prefix("r#").unwrap_or(name);
        let w = &mut self.writer;
        let pad = if self.empty { "" } else { " " };
        self.empty = false;
        self.result = [pad, name, "="]
            .iter()
            .chain(parts)
            .try_for_each(|p| w.write_str(p));
    }

    /// The field as the layer's own visitor writes it; `log.` metadata is skipped, as the
    /// layer skips it.
    fn fallback(&mut self, field: &Field, record: impl FnOnce(&mut DefaultVisitor<'_>)) {
        if self.result.is_err() || field.name().starts_with("log.") {
            return;
        }
        let mut v = DefaultVisitor::new(self.writer.by_ref(), self.empty);
        record(&mut v);
        self.result = v.finish();
        self.empty = false;
    }
}

impl Visit for PlainVisitor<'_> {
    fn record_u64(&mut self, field: &Field, value: u64) {
        if self.plain(field) {
            self.write(field, &[decimal(value, &mut [0; 20])]);
        } else {
            self.fallback(field, |v| v.record_u64(field, value));
        }
    }

    fn record_i64(&mut self, field: &Field, value: i64) {
        if self.plain(field) {
            let sign = if value < 0 { "-" } else { "" };
            self.write(field, &[sign, decimal(value.unsigned_abs(), &mut [0; 20])]);
        } else {
            self.fallback(field, |v| v.record_i64(field, value));
        }
    }

    fn record_bool(&mut self, field: &Field, value: bool) {
        if self.plain(field) {
            self.write(field, &[if value { "true" } else { "false" }]);
        } else {
            self.fallback(field, |v| v.record_bool(field, value));
        }
    }

    fn record_str(&mut self, field: &Field, value: &str) {
        // `{:?}` of a string with nothing to escape is the string in quotes.
        let plain = value
            .bytes()
            .all(|b| (b' '..=b'~').contains(&b) && b != b'"' && b != b'\\');
        if plain && self.plain(field) {
            self.write(field, &["\"", value, "\""]);
        } else {
            self.fallback(field, |v| v.record_str(field, value));
        }
    }

    fn record_error(&mut self, field: &Field, value: &(dyn std::error::Error + 'static)) {
        self.fallback(field, |v| v.record_error(field, value));
    }

    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.fallback(field, |v| v.record_debug(field, value));
    }
}

#[cfg(test)]
mod tests {
    use std::io;
    use std::sync::{Arc, Mutex};

    use tracing_subscriber::fmt::MakeWriter;

    use super::*;

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl io::Write for Buf {
        fn write(&mut self, b: &[u8]) -> io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    /// Logs the same spans and events through a subscriber and returns what it wrote.
    fn log_all<S: tracing::Subscriber + Send + Sync>(subscriber: S, buf: &Buf) -> String {
        tracing::subscriber::with_default(subscriber, || {
            let err = io::Error::other("disk on fire");
            let err: &(dyn std::error::Error + 'static) = &err;
            let span =
                tracing::info_span!("request", id = %"ab12", chain = 31337u64, calls = 2usize);
            let _in = span.enter();
            tracing::info!(
                n = 0u64,
                big = u64::MAX,
                neg = -42i64,
                min = i64::MIN,
                ok = true,
                "plain fields"
            );
            tracing::warn!(
                method = "eth_call",
                r#type = "x",
                quoted = "say \"hi\"",
                tab = "a\tb",
                "strings"
            );
            tracing::warn!(
                uni = "gr\u{fc}n",
                esc = "\u{1b}[31m",
                "non-ASCII and escapes"
            );
            tracing::warn!(n = 1u64, "a message with an escape: \u{1b}[31m red");
            tracing::error!(error = err, at = ?(1, 2), "errors and debug");
            tracing::info!(message = 7u64, other = 1u64);
            tracing::info!(first = 1u64);
            let inner = tracing::info_span!("inner", k = false);
            inner.record("k", true);
            inner.in_scope(|| tracing::info!("in a recorded span"));
        });
        String::from_utf8(buf.0.lock().unwrap().clone()).unwrap()
    }

    #[test]
    fn plain_fields_write_what_the_default_format_writes() {
        let build = |buf: &Buf| {
            tracing_subscriber::fmt()
                .with_writer(buf.clone())
                .with_ansi(false)
                .without_time()
                .with_max_level(tracing::Level::INFO)
        };
        let (a, b) = (Buf::default(), Buf::default());
        let default = log_all(build(&a).finish(), &a);
        let plain = log_all(build(&b).fmt_fields(PlainFields).finish(), &b);
        assert_eq!(plain, default);
        // The comparison saw every kind of field.
        for seen in [
            "chain=31337",
            "min=-9223372036854775808",
            "ok=true",
            r#"method="eth_call""#,
            r#"type="x""#,
            r#"quoted="say \"hi\"""#,
            "error=disk on fire",
            "k=true",
        ] {
            assert!(default.contains(seen), "{seen} in {default}");
        }
    }
}
