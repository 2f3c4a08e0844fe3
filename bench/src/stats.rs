//! Small statistics over measured values: percentiles, min/median, and
//! exact 1-second job-rate windows from cumulative counter samples.
//!
//! Pure functions: nothing here measures or waits.

use std::time::Duration;

/// A counter reading: milliseconds on some clock, and the counter's total.
#[derive(Clone, Copy, Debug)]
pub struct Reading {
    pub t_ms: f64,
    pub total: u64,
}

/// Rates over consecutive, non-overlapping windows of about one second
/// (each from one reading to the first one at least 1 s later) between
/// `from_ms` and `to_ms`.
pub fn one_second_rates(readings: &[Reading], from_ms: f64, to_ms: f64) -> Vec<f64> {
    let inside: Vec<&Reading> = readings
        .iter()
        .filter(|r| r.t_ms >= from_ms && r.t_ms <= to_ms)
        .collect();
    let mut rates = Vec::new();
    let mut start = 0;
    for end in 1..inside.len() {
        let dt = inside[end].t_ms - inside[start].t_ms;
        if dt >= 999.0 {
            let jobs = inside[end].total.saturating_sub(inside[start].total);
            rates.push(jobs as f64 * 1000.0 / dt);
            start = end;
        }
    }
    rates
}

/// The value at percentile `p` (0–100) of `values`, nearest rank; 0 if empty.
pub fn percentile(values: &[f64], p: f64) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

pub fn min(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::min).unwrap_or(0.0)
}

pub fn max(values: &[f64]) -> f64 {
    values.iter().copied().reduce(f64::max).unwrap_or(0.0)
}

pub fn median(values: &[f64]) -> f64 {
    percentile(values, 50.0)
}

pub fn ms(duration: Duration) -> f64 {
    duration.as_secs_f64() * 1000.0
}

/// Rounds to `digits` decimals, for readable JSON.
pub fn round(value: f64, digits: i32) -> f64 {
    let scale = 10f64.powi(digits);
    (value * scale).round() / scale
}

/// Every value rounded to `digits` decimals.
pub fn round_all(values: &[f64], digits: i32) -> Vec<f64> {
    values.iter().map(|v| round(*v, digits)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn windows_are_exact_deltas() {
        let readings: Vec<Reading> = (0..=30)
            .map(|i| Reading {
                t_ms: f64::from(i) * 100.0,
                total: u64::from(i as u32) * 1000,
            })
            .collect();
        let rates = one_second_rates(&readings, 0.0, 3000.0);
        assert_eq!(rates, vec![10_000.0, 10_000.0, 10_000.0]);
    }

    #[test]
    fn percentiles_use_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }
}
