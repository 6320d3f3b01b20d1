//! Figures every benchmark reports the same way: quantiles of latency
//! samples, medians across runs, and a process's resident memory.

/// The value at quantile `q` (0..=1) of `sorted` (nearest rank, rounding
/// down); NaN when there are no samples.
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 - 1.0) * q.clamp(0.0, 1.0)) as usize]
}

/// (p50, p99) of `samples`.
pub fn p50_p99(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(f64::total_cmp);
    (quantile(&samples, 0.5), quantile(&samples, 0.99))
}

/// The median of the runs' figures (the upper one of an even count); NaN
/// when there are none.
pub fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

/// Resident memory of process `pid` in MB (`VmRSS`), NaN when unreadable.
pub fn rss_mb(pid: u32) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_medians_and_memory() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(p50_p99(v.clone()), (50.0, 99.0));
        assert!(quantile(&[], 0.5).is_nan());
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 3.0, 2.0]), 3.0);
        assert!(median(vec![]).is_nan());
        let me = rss_mb(std::process::id());
        assert!(me > 0.5 && me < 100_000.0, "{me}");
        assert!(rss_mb(u32::MAX).is_nan());
    }
}
