//! Percentiles over a small sample (nearest rank, as latency reports usually state them).

use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Summary {
    pub n: usize,
    pub p50_ms: f64,
    pub p95_ms: f64,
    pub max_ms: f64,
}

pub fn summarize(samples: &[Duration]) -> Summary {
    let mut ms: Vec<f64> = samples.iter().map(|d| d.as_secs_f64() * 1000.0).collect();
    ms.sort_by(f64::total_cmp);
    let rank = |p: f64| (nearest_rank(&ms, p) * 10.0).round() / 10.0;
    Summary {
        n: ms.len(),
        p50_ms: rank(0.50),
        p95_ms: rank(0.95),
        max_ms: rank(1.0),
    }
}

/// The `p` (0–1) percentile of `sorted` (ascending) by nearest rank; 0 if empty.
pub fn nearest_rank(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=20).map(Duration::from_millis).collect();
        let sum = summarize(&s);
        assert_eq!(
            (sum.n, sum.p50_ms, sum.p95_ms, sum.max_ms),
            (20, 10.0, 19.0, 20.0)
        );
        assert_eq!(summarize(&[]).n, 0);
        let v: Vec<f64> = (1..=200).map(f64::from).collect();
        assert_eq!(
            (nearest_rank(&v, 0.5), nearest_rank(&v, 0.99)),
            (100.0, 198.0)
        );
        assert_eq!(nearest_rank(&[], 0.5), 0.0);
    }
}
