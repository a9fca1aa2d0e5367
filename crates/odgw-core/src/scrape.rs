//! Metrics read at scrape time: values a component counts anyway (or a
//! component replaced on reload), turned into Prometheus samples only when
//! `/metrics` is scraped. Every crate registers its own through
//! [`register_scraped`], so none repeats prometheus-client's collector
//! plumbing.

use std::fmt;

use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric},
    metrics::{counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

/// Registers `read`, called at every scrape to write the current values
/// through [`Scrape`]. `what` names it in `Debug` output.
pub fn register_scraped<F>(registry: &mut Registry, what: &'static str, read: F)
where
    F: Fn(&mut Scrape<'_>) -> fmt::Result + Send + Sync + 'static,
{
    registry.register_collector(Box::new(Scraped { what, read }));
}

/// Writes one scrape's samples.
#[derive(Debug)]
pub struct Scrape<'a> {
    encoder: DescriptorEncoder<'a>,
}

impl Scrape<'_> {
    /// A counter; prometheus-client appends `_total` to `name`.
    pub fn counter<N>(&mut self, name: &str, help: &str, value: N) -> fmt::Result
    where
        N: EncodeCounterValue + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let counter = ConstCounter::new(value);
        counter.encode(
            self.encoder
                .encode_descriptor(name, help, None, counter.metric_type())?,
        )
    }

    /// A gauge.
    pub fn gauge<N>(&mut self, name: &str, help: &str, value: N) -> fmt::Result
    where
        N: EncodeGaugeValue + Clone + fmt::Debug + Send + Sync + 'static,
    {
        let gauge = ConstGauge::new(value);
        gauge.encode(
            self.encoder
                .encode_descriptor(name, help, None, gauge.metric_type())?,
        )
    }
}

/// The registry in the Prometheus text format (what a scraper that does not
/// ask for OpenMetrics gets): for tests and tools.
pub fn prometheus_text(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a String cannot fail; a metric that fails to encode
    // leaves what came before it.
    let _ = prometheus_client::encoding::prometheus_text::encode(&mut text, registry);
    text
}

struct Scraped<F> {
    what: &'static str,
    read: F,
}

impl<F> fmt::Debug for Scraped<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Scraped")
            .field("what", &self.what)
            .finish_non_exhaustive()
    }
}

impl<F> Collector for Scraped<F>
where
    F: Fn(&mut Scrape<'_>) -> fmt::Result + Send + Sync + 'static,
{
    fn encode(&self, encoder: DescriptorEncoder) -> fmt::Result {
        (self.read)(&mut Scrape { encoder })
    }
}
