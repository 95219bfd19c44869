//! Rate maths.

/// Events per second over `elapsed_s`; 0 for an empty or invalid interval.
pub fn per_second(delta: u64, elapsed_s: f64) -> f64 {
    if elapsed_s > 0.0 && elapsed_s.is_finite() {
        delta as f64 / elapsed_s
    } else {
        0.0
    }
}

/// `a / b`; 0 when `b` is 0.
pub fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 { 0.0 } else { a as f64 / b as f64 }
}

/// `part` as a percentage of `whole`; 0 when `whole` is 0.
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates() {
        assert!((per_second(10, 2.0) - 5.0).abs() < 1e-9);
        assert!((per_second(3, 0.5) - 6.0).abs() < 1e-9);
        assert_eq!(per_second(10, 0.0), 0.0);
        assert_eq!(per_second(10, f64::NAN), 0.0);
        assert_eq!(per_second(0, 1.0), 0.0);
    }

    #[test]
    fn percents() {
        assert!((percent(1, 4) - 25.0).abs() < 1e-9);
        assert_eq!(percent(5, 0), 0.0);
    }
}
