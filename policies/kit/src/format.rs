//! Numbers in words an operator reads: requirements, reasons and error messages.

/// Writes a value compactly: up to six decimals without trailing zeros (`0.05`, `12`,
/// `0.333333`), scientific notation for very small or very large magnitudes, and `NaN`, `inf`
/// and `-inf` as such.
pub fn number(value: f64) -> String {
    if value.is_nan() {
        return "NaN".to_string();
    }
    if value.is_infinite() {
        return if value > 0.0 { "inf" } else { "-inf" }.to_string();
    }
    if value == 0.0 {
        return "0".to_string();
    }
    let magnitude = value.abs();
    if !(1e-4..1e12).contains(&magnitude) {
        return format!("{value:e}");
    }
    let fixed = format!("{value:.6}");
    let trimmed = fixed.trim_end_matches('0').trim_end_matches('.');
    if trimmed == "-0" || trimmed.is_empty() {
        "0".to_string()
    } else {
        trimmed.to_string()
    }
}

/// Writes a configured fraction as a percentage, as compactly as [`number`]: 0.05 is `5%`.
pub fn percent(fraction: f64) -> String {
    format!("{}%", number(fraction * 100.0))
}

/// Writes a measured fraction as a percentage with two decimals: 0.0555… is `5.56%`.
pub fn percent_2dp(fraction: f64) -> String {
    format!("{:.2}%", fraction * 100.0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_drop_trailing_zeros() {
        assert_eq!(number(0.05), "0.05");
        assert_eq!(number(12.0), "12");
        assert_eq!(number(-0.5), "-0.5");
        assert_eq!(number(1.0 / 3.0), "0.333333");
    }

    #[test]
    fn numbers_far_from_one_use_scientific_notation() {
        assert_eq!(number(1e-7), "1e-7");
        assert_eq!(number(2.5e13), "2.5e13");
    }

    #[test]
    fn non_finite_numbers_are_named() {
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(number(f64::INFINITY), "inf");
        assert_eq!(number(f64::NEG_INFINITY), "-inf");
    }

    #[test]
    fn configured_fractions_read_as_whole_percentages() {
        assert_eq!(percent(0.05), "5%");
        assert_eq!(percent(0.07), "7%");
        assert_eq!(percent(0.025), "2.5%");
    }

    #[test]
    fn measured_fractions_read_with_two_decimals() {
        assert_eq!(percent_2dp(0.05 / 0.9), "5.56%");
    }
}
