//! Runtime counters and gauges of one billd process, the health heartbeat, and their Prometheus text exposition.

use std::fmt::Write;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// Gateway latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// Shared, lock-free metrics of one billd process.
pub struct Metrics {
    started: Instant,
    pub paid: AtomicU64,
    pub declined: AtomicU64,
    pub rejected: AtomicU64,
    pub unresolved: AtomicU64,
    pub in_flight: AtomicI64,
    /// Charge requests sent (first sends and resends alike), for `limits.max_charges_per_pass`.
    pub charges_sent: AtomicU64,
    /// Periods due now and not yet charged (set after each pass).
    pub due_backlog: AtomicI64,
    /// Unix seconds of the last pass that completed.
    pub last_success: AtomicI64,
    /// The gateway refused the credentials at the last try (`/healthz` is 503 meanwhile).
    pub unauthorized: AtomicBool,
    /// The config on disk is refused (its sync failed): nothing is charged (`/healthz` is 503 meanwhile).
    pub config_refused: AtomicBool,
    /// The last pass stopped on a mass rejection (`/healthz` is 503 until a pass ends without one).
    pub mass_rejection: AtomicBool,
    /// Billing is stopped by a safety rail until an operator acts (`/healthz` is 503 meanwhile).
    pub safety_stop: AtomicBool,
    /// `[metrics] listen` could not be bound (billd tries again; systemd STATUS says so meanwhile).
    pub listener_down: AtomicBool,
    /// Webhook deliveries by result (2xx; failed and tried again; failed and given up).
    pub webhooks_delivered: AtomicU64,
    pub webhooks_retried: AtomicU64,
    pub webhooks_failed: AtomicU64,
    /// Events not delivered yet (set by the delivery service).
    pub webhook_backlog: AtomicI64,
    /// Age of the oldest event not delivered yet (0: none).
    pub webhook_oldest_pending_seconds: AtomicI64,
    /// Milliseconds since start of the last sign of life of the scheduler loop.
    heartbeat_ms: AtomicU64,
    latency_buckets: [AtomicU64; BUCKETS.len()],
    latency_count: AtomicU64,
    latency_sum_us: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            paid: AtomicU64::new(0),
            declined: AtomicU64::new(0),
            rejected: AtomicU64::new(0),
            unresolved: AtomicU64::new(0),
            in_flight: AtomicI64::new(0),
            charges_sent: AtomicU64::new(0),
            due_backlog: AtomicI64::new(0),
            last_success: AtomicI64::new(0),
            unauthorized: AtomicBool::new(false),
            config_refused: AtomicBool::new(false),
            mass_rejection: AtomicBool::new(false),
            safety_stop: AtomicBool::new(false),
            listener_down: AtomicBool::new(false),
            webhooks_delivered: AtomicU64::new(0),
            webhooks_retried: AtomicU64::new(0),
            webhooks_failed: AtomicU64::new(0),
            webhook_backlog: AtomicI64::new(0),
            webhook_oldest_pending_seconds: AtomicI64::new(0),
            heartbeat_ms: AtomicU64::new(0),
            latency_buckets: Default::default(),
            latency_count: AtomicU64::new(0),
            latency_sum_us: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    /// Records that the scheduler loop is making progress.
    pub fn beat(&self) {
        self.heartbeat_ms.store(self.started.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the loop last made progress.
    pub fn since_beat(&self) -> Duration {
        let now = self.started.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.heartbeat_ms.load(Ordering::Relaxed)))
    }

    pub fn observe_latency(&self, d: Duration) {
        let secs = d.as_secs_f64();
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                self.latency_buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.latency_count.fetch_add(1, Ordering::Relaxed);
        self.latency_sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
    }

    /// The Prometheus text exposition format.
    pub fn render(&self) -> String {
        let mut o = String::new();
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let _ =
            writeln!(o, "# HELP billd_charges_total Charge attempts by outcome.\n# TYPE billd_charges_total counter");
        for (outcome, v) in [
            ("paid", g(&self.paid)),
            ("declined", g(&self.declined)),
            ("rejected", g(&self.rejected)),
            ("unresolved", g(&self.unresolved)),
        ] {
            let _ = writeln!(o, "billd_charges_total{{outcome=\"{outcome}\"}} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP billd_charges_in_flight Charges sent and not yet answered.\n# TYPE billd_charges_in_flight gauge\n\
             billd_charges_in_flight {}",
            self.in_flight.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP billd_due_backlog Periods due and not yet charged, as of the last pass.\n\
             # TYPE billd_due_backlog gauge\nbilld_due_backlog {}",
            self.due_backlog.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP billd_last_successful_pass_timestamp_seconds When the last pass completed.\n\
             # TYPE billd_last_successful_pass_timestamp_seconds gauge\n\
             billd_last_successful_pass_timestamp_seconds {}",
            self.last_success.load(Ordering::Relaxed)
        );
        let flag = |a: &AtomicBool| u8::from(a.load(Ordering::Relaxed));
        let _ = writeln!(
            o,
            "# HELP billd_config_refused 1 while the config on disk is refused (nothing is charged).\n\
             # TYPE billd_config_refused gauge\nbilld_config_refused {}\n\
             # HELP billd_gateway_unauthorized 1 while the gateway refuses billd's credentials (nothing is charged).\n\
             # TYPE billd_gateway_unauthorized gauge\nbilld_gateway_unauthorized {}\n\
             # HELP billd_mass_rejection 1 while the last pass stopped on a mass rejection (nothing more was sent).\n\
             # TYPE billd_mass_rejection gauge\nbilld_mass_rejection {}\n\
             # HELP billd_safety_stop 1 while a safety rail stops billing until an operator acts.\n\
             # TYPE billd_safety_stop gauge\nbilld_safety_stop {}",
            flag(&self.config_refused),
            flag(&self.unauthorized),
            flag(&self.mass_rejection),
            flag(&self.safety_stop)
        );
        let _ = writeln!(
            o,
            "# HELP billd_webhook_deliveries_total Webhook delivery attempts by result.\n\
             # TYPE billd_webhook_deliveries_total counter"
        );
        for (result, v) in [
            ("delivered", g(&self.webhooks_delivered)),
            ("retry", g(&self.webhooks_retried)),
            ("failed", g(&self.webhooks_failed)),
        ] {
            let _ = writeln!(o, "billd_webhook_deliveries_total{{result=\"{result}\"}} {v}");
        }
        let _ = writeln!(
            o,
            "# HELP billd_webhook_backlog Webhook events not delivered yet.\n# TYPE billd_webhook_backlog gauge\n\
             billd_webhook_backlog {}\n\
             # HELP billd_webhook_oldest_pending_seconds Age of the oldest webhook event not delivered yet.\n\
             # TYPE billd_webhook_oldest_pending_seconds gauge\nbilld_webhook_oldest_pending_seconds {}",
            self.webhook_backlog.load(Ordering::Relaxed),
            self.webhook_oldest_pending_seconds.load(Ordering::Relaxed)
        );
        let _ = writeln!(
            o,
            "# HELP billd_gateway_latency_seconds Latency of charge requests to the gateway.\n\
             # TYPE billd_gateway_latency_seconds histogram"
        );
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ = writeln!(o, "billd_gateway_latency_seconds_bucket{{le=\"{b}\"}} {}", g(&self.latency_buckets[i]));
        }
        let count = g(&self.latency_count);
        let _ = writeln!(o, "billd_gateway_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(o, "billd_gateway_latency_seconds_sum {}", g(&self.latency_sum_us) as f64 / 1e6);
        let _ = writeln!(o, "billd_gateway_latency_seconds_count {count}");
        o
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_histogram() {
        let m = Metrics::default();
        m.paid.fetch_add(3, Ordering::Relaxed);
        m.observe_latency(Duration::from_millis(40));
        m.observe_latency(Duration::from_millis(400));
        let text = m.render();
        assert!(text.contains("billd_charges_total{outcome=\"paid\"} 3"));
        assert!(text.contains("billd_gateway_latency_seconds_bucket{le=\"0.05\"} 1"));
        assert!(text.contains("billd_gateway_latency_seconds_bucket{le=\"0.5\"} 2"));
        assert!(text.contains("billd_gateway_latency_seconds_count 2"));
    }
}
