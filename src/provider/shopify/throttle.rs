//! Pacing requests to Shopify's cost-based rate limit.
//!
//! The GraphQL Admin API limits an app on a shop with a leaky bucket of query
//! cost points: a request needs its *requested* cost available in the bucket,
//! the bucket refills at `restoreRate` points per second up to
//! `maximumAvailable`, and every response reports the bucket in
//! `extensions.cost.throttleStatus`. A request sent without enough points is
//! refused with a `THROTTLED` error. [`Bucket`] keeps the last reported state,
//! refills it with elapsed time and says how long to wait before a request of a
//! given cost, so a paced client is throttled at most once (before it has seen
//! the bucket at all).

use std::time::{Duration, Instant};

/// `extensions.cost.throttleStatus` of a response.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ThrottleStatus {
    pub maximum_available: f64,
    pub currently_available: f64,
    pub restore_rate: f64,
}

impl ThrottleStatus {
    /// Reads `throttleStatus` out of a response's `extensions.cost`; `None` when
    /// any of the three numbers is missing or not a finite number.
    pub fn from_cost(cost: &serde_json::Value) -> Option<ThrottleStatus> {
        let t = cost.get("throttleStatus")?;
        let num = |k: &str| t.get(k).and_then(serde_json::Value::as_f64).filter(|v| v.is_finite());
        let s = ThrottleStatus {
            maximum_available: num("maximumAvailable")?,
            currently_available: num("currentlyAvailable")?,
            restore_rate: num("restoreRate")?,
        };
        (s.maximum_available > 0.0 && s.restore_rate > 0.0).then_some(s)
    }
}

/// Extra wait on top of the exact refill time, so rounding on either side
/// never leaves the bucket a fraction of a point short.
const MARGIN: Duration = Duration::from_millis(2);

/// How long to wait until `cost` points are available, given `available` now,
/// the refill `rate` (points/s) and the bucket size `max`. A cost above the
/// bucket size can never be met in full; it waits for a full bucket instead.
pub fn delay_for(cost: f64, available: f64, rate: f64, max: f64) -> Duration {
    let cost = cost.min(max);
    let missing = cost - available;
    if missing <= 0.0 {
        return Duration::ZERO;
    }
    if rate <= 0.0 || !rate.is_finite() || !missing.is_finite() {
        return Duration::from_secs(1);
    }
    Duration::from_secs_f64(missing / rate) + MARGIN
}

/// The least time a bucket allows for `total_cost` points, starting full:
/// the first `bucket` points are free, the rest come at `rate` points/s.
pub fn minimum_time(total_cost: f64, bucket: f64, rate: f64) -> Duration {
    if rate <= 0.0 {
        return Duration::ZERO;
    }
    Duration::from_secs_f64(((total_cost - bucket).max(0.0)) / rate)
}

/// The client's view of the shop's bucket.
#[derive(Debug, Default, Clone)]
pub struct Bucket {
    /// The last reported status and when it was seen.
    last: Option<(ThrottleStatus, Instant)>,
}

impl Bucket {
    /// Points available at `now`, by the last report refilled with the elapsed
    /// time; `None` before the first report.
    pub fn available_at(&self, now: Instant) -> Option<f64> {
        let (s, at) = self.last?;
        let elapsed = now.saturating_duration_since(at).as_secs_f64();
        Some((s.currently_available + elapsed * s.restore_rate).min(s.maximum_available))
    }

    /// How long to wait before sending a request of `cost` points. Zero while
    /// the bucket is unknown: the first response tells.
    pub fn delay(&self, cost: f64, now: Instant) -> Duration {
        match (self.last, self.available_at(now)) {
            (Some((s, _)), Some(avail)) => delay_for(cost, avail, s.restore_rate, s.maximum_available),
            _ => Duration::ZERO,
        }
    }

    /// Takes `cost` points out right when a request is sent, so a second request
    /// sent before the first one's response is paced too.
    pub fn spend(&mut self, cost: f64, now: Instant) {
        if let Some(avail) = self.available_at(now)
            && let Some((s, _)) = self.last
        {
            self.last = Some((ThrottleStatus { currently_available: avail - cost, ..s }, now));
        }
    }

    /// Records the status a response reported, seen at `now`.
    pub fn observe(&mut self, status: ThrottleStatus, now: Instant) {
        self.last = Some((status, now));
    }

    /// The last reported status.
    pub fn status(&self) -> Option<ThrottleStatus> {
        self.last.map(|(s, _)| s)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(max: f64, avail: f64, rate: f64) -> ThrottleStatus {
        ThrottleStatus { maximum_available: max, currently_available: avail, restore_rate: rate }
    }

    #[test]
    fn delay_is_the_refill_time_of_the_missing_points() {
        assert_eq!(delay_for(10.0, 50.0, 100.0, 1000.0), Duration::ZERO);
        assert_eq!(delay_for(10.0, 10.0, 100.0, 1000.0), Duration::ZERO);
        assert_eq!(delay_for(10.0, 0.0, 100.0, 1000.0), Duration::from_millis(100) + MARGIN);
        assert_eq!(delay_for(752.0, 2.0, 50.0, 1000.0), Duration::from_secs(15) + MARGIN);
        // A cost above the bucket waits for a full bucket, not forever.
        assert_eq!(delay_for(5000.0, 0.0, 100.0, 1000.0), Duration::from_secs(10) + MARGIN);
        // Nonsense rates never divide by zero.
        assert_eq!(delay_for(10.0, 0.0, 0.0, 1000.0), Duration::from_secs(1));
    }

    #[test]
    fn minimum_time_counts_the_full_bucket_as_free() {
        // 400 mutations of 10 points at 100 points/s with a 1,000-point bucket.
        assert_eq!(minimum_time(4000.0, 1000.0, 100.0), Duration::from_secs(30));
        assert_eq!(minimum_time(500.0, 1000.0, 100.0), Duration::ZERO);
    }

    #[test]
    fn the_bucket_refills_with_time_and_is_capped() {
        let t0 = Instant::now();
        let mut b = Bucket::default();
        assert_eq!(b.delay(10.0, t0), Duration::ZERO, "unknown bucket: send and learn");
        b.observe(status(1000.0, 5.0, 100.0), t0);
        assert_eq!(b.available_at(t0), Some(5.0));
        assert_eq!(b.available_at(t0 + Duration::from_secs(1)), Some(105.0));
        assert_eq!(b.available_at(t0 + Duration::from_secs(60)), Some(1000.0));
        assert_eq!(b.delay(10.0, t0), Duration::from_millis(50) + MARGIN);
        b.spend(5.0, t0);
        assert_eq!(b.available_at(t0), Some(0.0));
        assert_eq!(b.delay(10.0, t0), Duration::from_millis(100) + MARGIN);
    }

    /// A simulated server bucket and a client pacing with [`Bucket`]: 400
    /// mutations of 10 points at 100 points/s and a 1,000-point bucket finish in
    /// the minimum time (plus the margins) and are never throttled.
    #[test]
    fn paced_client_is_never_throttled_and_near_the_minimum() {
        let rate = 100.0;
        let max = 1000.0;
        let start = Instant::now();
        let mut clock = start;
        let mut server_avail = max;
        let mut server_at = start;
        let mut client = Bucket::default();
        let mut throttled = 0;
        let latency = Duration::from_millis(3);
        for _ in 0..400 {
            loop {
                clock += client.delay(10.0, clock);
                client.spend(10.0, clock);
                // The server sees the request a bit later.
                let arrive = clock + latency;
                server_avail = (server_avail + (arrive - server_at).as_secs_f64() * rate).min(max);
                server_at = arrive;
                let ok = server_avail >= 10.0;
                if ok {
                    server_avail -= 10.0;
                } else {
                    throttled += 1;
                }
                clock = arrive + latency;
                client.observe(status(max, server_avail, rate), clock);
                if ok {
                    break;
                }
            }
        }
        assert_eq!(throttled, 0);
        let took = (clock - start).as_secs_f64();
        let min = minimum_time(4000.0, max, rate).as_secs_f64();
        assert!(took >= min && took < min * 1.05, "took {took} s, minimum {min} s");
    }

    #[test]
    fn status_is_read_from_the_cost_extension() {
        let v = serde_json::json!({"requestedQueryCost": 10, "actualQueryCost": 10,
            "throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 990, "restoreRate": 50.0}});
        assert_eq!(ThrottleStatus::from_cost(&v), Some(status(1000.0, 990.0, 50.0)));
        for bad in [
            serde_json::json!({}),
            serde_json::json!({"throttleStatus": "x"}),
            serde_json::json!({"throttleStatus": {"maximumAvailable": 1000.0, "currentlyAvailable": 1}}),
            serde_json::json!({"throttleStatus": {"maximumAvailable": 0, "currentlyAvailable": 1, "restoreRate": 1}}),
        ] {
            assert_eq!(ThrottleStatus::from_cost(&bad), None, "{bad}");
        }
    }
}
