//! Medians, percentiles and their printing.

use std::fmt;
use std::time::Duration;

/// Figures of several runs of one measure.
#[derive(Debug, Clone, Default)]
pub(crate) struct Runs(pub(crate) Vec<f64>);

impl Runs {
    pub(crate) fn push(&mut self, x: f64) {
        self.0.push(x);
    }

    fn sorted(&self) -> Vec<f64> {
        let mut v = self.0.clone();
        v.sort_by(f64::total_cmp);
        v
    }

    pub(crate) fn median(&self) -> f64 {
        let v = self.sorted();
        if v.is_empty() {
            return f64::NAN;
        }
        let m = v.len() / 2;
        if v.len() % 2 == 1 {
            v[m]
        } else {
            (v[m - 1] + v[m]) / 2.0
        }
    }

    pub(crate) fn min(&self) -> f64 {
        self.sorted().first().copied().unwrap_or(f64::NAN)
    }

    pub(crate) fn max(&self) -> f64 {
        self.sorted().last().copied().unwrap_or(f64::NAN)
    }
}

/// "median (min–max)" with a number format chosen by magnitude.
impl fmt::Display for Runs {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} ({}–{})",
            num(self.median()),
            num(self.min()),
            num(self.max())
        )
    }
}

/// A number printed with sensible precision.
pub(crate) fn num(x: f64) -> String {
    if !x.is_finite() {
        "n/a".into()
    } else if x >= 1000.0 {
        let s = format!("{:.0}", x);
        // thousands separators keep large rates readable
        let mut out = String::new();
        for (i, c) in s.chars().enumerate() {
            if i > 0 && (s.len() - i) % 3 == 0 {
                out.push(',');
            }
            out.push(c);
        }
        out
    } else if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else {
        format!("{x:.2}")
    }
}

/// The `p`-th percentile (0–100) of some latencies, in milliseconds.
pub(crate) fn percentile_ms(lat: &mut [Duration], p: f64) -> f64 {
    if lat.is_empty() {
        return f64::NAN;
    }
    lat.sort_unstable();
    let rank = ((p / 100.0) * lat.len() as f64).ceil() as usize;
    lat[rank.clamp(1, lat.len()) - 1].as_secs_f64() * 1e3
}

/// Median of some durations, in milliseconds.
pub(crate) fn median_ms(lat: &mut [Duration]) -> f64 {
    percentile_ms(lat, 50.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_min_max_of_runs() {
        let r = Runs(vec![3.0, 1.0, 2.0]);
        assert_eq!((r.median(), r.min(), r.max()), (2.0, 1.0, 3.0));
        assert_eq!(Runs(vec![4.0, 1.0, 2.0, 3.0]).median(), 2.5);
        assert!(Runs::default().median().is_nan());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let mut lat: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut lat, 50.0), 50.0);
        assert_eq!(percentile_ms(&mut lat, 99.0), 99.0);
        assert_eq!(percentile_ms(&mut lat, 100.0), 100.0);
        assert!(percentile_ms(&mut [], 50.0).is_nan());
    }

    #[test]
    fn numbers_are_grouped_by_thousands() {
        assert_eq!(num(264_575.4), "264,575");
        assert_eq!(num(1_000.0), "1,000");
        assert_eq!(num(45.12), "45.1");
        assert_eq!(num(2.137), "2.14");
    }
}
