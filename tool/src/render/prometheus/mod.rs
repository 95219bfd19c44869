//! `/metrics`: the exporter state encoded by prometheus-client (OpenMetrics or the classic
//! text format), through a custom collector so series come and go with the processes.
//! `families` holds the per-process families, `own` the machine's and proclens's own.

mod families;
mod own;

use std::sync::{Arc, Mutex};

use prometheus_client::{
    collector::Collector,
    encoding::{
        DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric,
        text::{encode_eof, encode_registry},
    },
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use crate::model::exporter::{ExporterState, ScrapeDurations, SelfGauges};

/// The state shared between the collector task and the HTTP side.
#[derive(Debug, Clone, Default)]
pub struct Shared {
    pub state: Arc<Mutex<ExporterState>>,
    /// How long the scrapes served so far took to encode and send.
    pub scrapes: Arc<Mutex<ScrapeDurations>>,
    /// The per-process families as last encoded, per format, with the collection they
    /// show: they change once per collection (5 s by default), and scraped every second
    /// `serve` had encoded the same ones five times over (~5 ms each with pod labels).
    encoded: Arc<Mutex<[Option<Encoded>; 2]>>,
}

/// Encoded families and the collection (`ExporterState::collections`) they show.
type Encoded = (u64, Arc<String>);

/// The per-process families of the shared state.
#[derive(Debug)]
struct Families(Shared);

impl Collector for Families {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.0.state.lock().map_err(|_| std::fmt::Error)?;
        families::encode(&st, &mut enc)
    }
}

/// The machine's and proclens's own families: the shared state, proclens's own figures
/// read for this scrape, and the scrape durations so far.
#[derive(Debug)]
struct Own {
    shared: Shared,
    me: SelfGauges,
    scrapes: ScrapeDurations,
}

impl Collector for Own {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let st = self.shared.state.lock().map_err(|_| std::fmt::Error)?;
        own::encode(&st, &self.me, &self.scrapes, &mut enc)
    }
}

/// Labels of a series: (name, value) pairs.
type LabelVec = Vec<(&'static str, String)>;

/// A family of one metric type, a series per (labels, metric).
fn family<M: EncodeMetric>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    series: impl Iterator<Item = (LabelVec, M)>,
) -> Result<(), std::fmt::Error> {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in series {
        v.encode(m.encode_family(&labels)?)?;
    }
    Ok(())
}

fn counter_family<N: EncodeCounterValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (LabelVec, N)>,
) -> Result<(), std::fmt::Error> {
    let series = series.map(|(l, v)| (l, ConstCounter::new(v)));
    family(enc, name, help, MetricType::Counter, series)
}

/// A counter of nanoseconds, shown in seconds (the base unit).
fn seconds_family(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (LabelVec, u64)>,
) -> Result<(), std::fmt::Error> {
    counter_family(enc, name, help, series.map(|(l, ns)| (l, ns as f64 / 1e9)))
}

fn gauge_family<N: EncodeGaugeValue>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    series: impl Iterator<Item = (LabelVec, N)>,
) -> Result<(), std::fmt::Error> {
    let series = series.map(|(l, v)| (l, ConstGauge::new(v)));
    family(enc, name, help, MetricType::Gauge, series)
}

/// One unlabelled gauge.
fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> Result<(), std::fmt::Error> {
    gauge_family(enc, name, help, std::iter::once((vec![], v as i64)))
}

/// Exposition formats, chosen from the scraper's `Accept` header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `application/openmetrics-text; version=1.0.0` (what Prometheus asks for first).
    OpenMetrics,
    /// The classic `text/plain; version=0.0.4` (curl, promtool, older scrapers).
    Text,
}

impl Format {
    pub fn from_accept(accept: Option<&str>) -> Self {
        if accept.is_some_and(|a| a.contains("application/openmetrics-text")) {
            Format::OpenMetrics
        } else {
            Format::Text
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Format::OpenMetrics => "application/openmetrics-text; version=1.0.0; charset=utf-8",
            Format::Text => "text/plain; version=0.0.4; charset=utf-8",
        }
    }
}

/// The whole exposition, with proclens's own figures `me` as read for this scrape: the
/// per-process families encoded once per collection and format, then the rest.
pub fn exposition(
    shared: &Shared,
    format: Format,
    me: SelfGauges,
) -> Result<String, std::fmt::Error> {
    let scrapes = shared.scrapes.lock().map_err(|_| std::fmt::Error)?.clone();
    let collection = shared
        .state
        .lock()
        .map_err(|_| std::fmt::Error)?
        .collections;
    let slot = format as usize;
    let cached = shared.encoded.lock().map_err(|_| std::fmt::Error)?[slot]
        .as_ref()
        .filter(|(c, _)| *c == collection)
        .map(|(_, text)| Arc::clone(text));
    let families = if let Some(text) = cached {
        text
    } else {
        // A collection that ends meanwhile only costs one more encoding later.
        let text = Arc::new(encode_part(format, Families(shared.clone()))?);
        shared.encoded.lock().map_err(|_| std::fmt::Error)?[slot] =
            Some((collection, Arc::clone(&text)));
        text
    };
    let own = encode_part(
        format,
        Own {
            shared: shared.clone(),
            me,
            scrapes,
        },
    )?;
    let mut out = String::with_capacity(families.len() + own.len() + 6);
    out.push_str(&families);
    out.push_str(&own);
    if format == Format::OpenMetrics {
        encode_eof(&mut out)?;
    }
    Ok(out)
}

/// One collector's families, without OpenMetrics' closing `# EOF`.
fn encode_part(format: Format, c: impl Collector + 'static) -> Result<String, std::fmt::Error> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(c));
    let mut out = String::new();
    match format {
        Format::OpenMetrics => encode_registry(&mut out, &registry)?,
        Format::Text => prometheus_client::encoding::prometheus_text::encode(&mut out, &registry)?,
    }
    Ok(out)
}

#[cfg(test)]
mod tests;
