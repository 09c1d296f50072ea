//! Trace context that travels with the events (W3C `traceparent`).
//!
//! With the `opentelemetry` feature and a `tracing-opentelemetry` layer in the application's
//! subscriber, a command stores the span context it runs in as its events' metadata
//! [`traceparent`](crate::Metadata::traceparent); the runner's batch span continues the trace
//! of its first event and links to the traces of the others; the broker bridges carry the value in a `traceparent` header, and
//! a consumer handles each message in a span whose parent is that context. So one trace runs
//! from the request that issued the command to every service that handled its events. Without
//! the feature (or without such a layer) nothing is stored and these calls do nothing.
//!
//! ```
//! // A handler of messages from elsewhere continues the sender's trace:
//! let span = tracing::info_span!("handle");
//! cqrs_core::trace::continue_from(&span, Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"));
//! ```

use tracing::Span;

use crate::event::RecordedEvent;

/// At most this many distinct traces are linked from one batch span.
const MAX_LINKS: usize = 32;

/// The W3C `traceparent` of the current span, if it belongs to a sampled or unsampled
/// OpenTelemetry trace.
pub fn current() -> Option<String> {
    imp::traceparent(&Span::current())
}

/// Makes `span` a child of the trace context `traceparent` (from an event's metadata or a
/// message header), so that it joins the trace of whoever caused the event. A missing or
/// malformed value leaves the span as it is.
pub fn continue_from(span: &Span, traceparent: Option<&str>) {
    if let Some(tp) = traceparent {
        imp::set_parent(span, tp);
    }
}

/// Makes `span` (a batch's) continue the trace of the first event in `events` that carries one,
/// and links it to the traces of the others, the first [`MAX_LINKS`] distinct ones.
pub(crate) fn follow_events(span: &Span, events: &[RecordedEvent]) {
    if span.is_disabled() || !imp::ENABLED {
        return;
    }
    let mut seen: Vec<&str> = Vec::new();
    for tp in events
        .iter()
        .filter_map(|e| e.metadata.traceparent.as_deref())
    {
        if seen.len() == MAX_LINKS {
            break;
        }
        if seen.contains(&tp) {
            continue;
        }
        if seen.is_empty() {
            imp::set_parent(span, tp);
        } else {
            imp::link(span, tp);
        }
        seen.push(tp);
    }
}

/// The parts of a W3C `traceparent`: version 00, trace id, parent span id, flags.
#[cfg_attr(not(feature = "opentelemetry"), allow(dead_code))]
fn parse(traceparent: &str) -> Option<(u128, u64, u8)> {
    let mut parts = traceparent.trim().split('-');
    let (version, trace, span, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if parts.next().is_some() || version != "00" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let trace = u128::from_str_radix(trace, 16).ok().filter(|t| *t != 0)?;
    let span = u64::from_str_radix(span, 16).ok().filter(|s| *s != 0)?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    Some((trace, span, flags))
}

#[cfg(feature = "opentelemetry")]
mod imp {
    use opentelemetry::trace::{
        SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState,
    };
    use tracing::Span;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    pub(super) const ENABLED: bool = true;

    pub(super) fn traceparent(span: &Span) -> Option<String> {
        if span.is_disabled() {
            return None;
        }
        let cx = span.context();
        let sc = cx.span().span_context().clone();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    fn remote(traceparent: &str) -> Option<SpanContext> {
        let (trace, span, flags) = super::parse(traceparent)?;
        Some(SpanContext::new(
            TraceId::from(trace),
            SpanId::from(span),
            TraceFlags::new(flags),
            true,
            TraceState::default(),
        ))
    }

    pub(super) fn set_parent(span: &Span, traceparent: &str) {
        if let Some(sc) = remote(traceparent) {
            let cx = opentelemetry::Context::new().with_remote_span_context(sc);
            // NOTE: fails only for a span already started under another parent; it keeps it.
            let _ = span.set_parent(cx);
        }
    }

    pub(super) fn link(span: &Span, traceparent: &str) {
        if let Some(sc) = remote(traceparent) {
            span.add_link(sc);
        }
    }
}

#[cfg(not(feature = "opentelemetry"))]
mod imp {
    use tracing::Span;

    pub(super) const ENABLED: bool = false;

    pub(super) fn traceparent(_: &Span) -> Option<String> {
        None
    }
    pub(super) fn set_parent(_: &Span, _: &str) {}
    pub(super) fn link(_: &Span, _: &str) {}
}

#[cfg(test)]
mod tests {
    use super::parse;

    #[test]
    fn a_traceparent_is_read_only_when_well_formed() {
        let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            parse(tp),
            Some((0x4bf92f3577b34da6a3ce929d0e0e4736, 0x00f067aa0ba902b7, 1))
        );
        for bad in [
            "",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-zzf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse(bad), None, "{bad}");
        }
    }
}
