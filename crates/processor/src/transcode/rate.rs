//! The output frame rate.

use crate::geom::Fraction;

/// The output frame rate: the source's, divided by the smallest integer
/// that brings it under the cap (59.94 → 29.97, 50 → 25, 120 → 30). When
/// that would fall far below the cap (30 under a cap of 24) the cap is used.
/// Unknown or odd rates snap to the nearest common rate within 3 %.
pub(crate) fn output_rate(source: Option<Fraction>, cap: u32) -> Fraction {
    const COMMON: &[(u32, u32)] = &[
        (8, 1),
        (10, 1),
        (12, 1),
        (25, 2),
        (15, 1),
        (20, 1),
        (24000, 1001),
        (24, 1),
        (25, 1),
        (30000, 1001),
        (30, 1),
        (48, 1),
        (50, 1),
        (60000, 1001),
        (60, 1),
        (90, 1),
        (100, 1),
        (120000, 1001),
        (120, 1),
        (240, 1),
    ];
    let capped = Fraction { num: cap, den: 1 };
    let Some(src) = source else { return capped };
    let value = src.as_f64();
    let snapped = COMMON
        .iter()
        .map(|&(num, den)| Fraction { num, den })
        .min_by(|a, b| {
            let da = (a.as_f64() - value).abs();
            let db = (b.as_f64() - value).abs();
            da.total_cmp(&db)
        })
        .filter(|c| (c.as_f64() - value).abs() / value <= 0.03)
        .unwrap_or_else(|| {
            let num = (value * 1000.0).round().max(1.0) as u32;
            let g = gcd(num, 1000);
            Fraction {
                num: num / g,
                den: 1000 / g,
            }
        });
    let cap_f = f64::from(cap);
    if snapped.as_f64() <= cap_f + 1e-9 {
        return snapped;
    }
    let factor = (snapped.as_f64() / cap_f - 1e-9).ceil() as u32;
    let reduced = reduce(Fraction {
        num: snapped.num,
        den: snapped.den * factor,
    });
    if reduced.as_f64() < 0.75 * cap_f {
        capped
    } else {
        reduced
    }
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a.max(1) } else { gcd(b, a % b) }
}

fn reduce(f: Fraction) -> Fraction {
    let g = gcd(f.num, f.den);
    Fraction {
        num: f.num / g,
        den: f.den / g,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(num: u32, den: u32) -> Option<Fraction> {
        Some(Fraction { num, den })
    }

    #[test]
    fn frame_rate_is_capped_by_an_integer_factor() {
        assert_eq!(output_rate(f(60000, 1001), 30), Fraction { num: 30000, den: 1001 });
        assert_eq!(output_rate(f(60, 1), 30), Fraction { num: 30, den: 1 });
        assert_eq!(output_rate(f(120, 1), 30), Fraction { num: 30, den: 1 });
        assert_eq!(output_rate(f(50, 1), 30), Fraction { num: 25, den: 1 });
        assert_eq!(output_rate(f(25, 1), 30), Fraction { num: 25, den: 1 });
        assert_eq!(output_rate(f(15, 1), 30), Fraction { num: 15, den: 1 });
        // 30 under a cap of 24 would halve to 15; the cap is closer.
        assert_eq!(output_rate(f(30, 1), 24), Fraction { num: 24, den: 1 });
        assert_eq!(output_rate(None, 30), Fraction { num: 30, den: 1 });
    }

    #[test]
    fn variable_phone_rates_snap_to_a_common_rate() {
        // An iPhone VFR clip averaging 29.87 fps.
        assert_eq!(output_rate(f(2987, 100), 30), Fraction { num: 30000, den: 1001 });
        // An unusual but steady 17 fps stays 17.
        assert_eq!(output_rate(f(17, 1), 30), Fraction { num: 17, den: 1 });
    }
}
