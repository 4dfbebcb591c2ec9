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
    let rank = |p: f64| {
        if ms.is_empty() {
            return 0.0;
        }
        let i = ((p * ms.len() as f64).ceil() as usize).clamp(1, ms.len()) - 1;
        (ms[i] * 10.0).round() / 10.0
    };
    Summary {
        n: ms.len(),
        p50_ms: rank(0.50),
        p95_ms: rank(0.95),
        max_ms: rank(1.0),
    }
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
    }
}
