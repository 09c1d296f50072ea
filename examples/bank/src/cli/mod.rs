//! The subcommands.

mod demo;
mod ops;

pub(crate) use demo::demo;
pub(crate) use ops::{
    dead_letter_retry, dead_letter_skip, dead_letters_list, notices, notifier, projections, replay,
    serve,
};

/// What a subcommand fails with.
pub(crate) type CliResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// An error and its sources, joined by ": ".
pub(crate) fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut src = e.source();
    while let Some(s) = src {
        out.push_str(": ");
        out.push_str(&s.to_string());
        src = s.source();
    }
    out
}
