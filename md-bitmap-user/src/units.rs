//! Sizes and durations as people read them, shared by every text view (the TUI, `predict`,
//! `tune`). JSON keeps exact numbers (bytes, seconds); only text goes through here.

const BINARY: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];

/// Bytes in binary units: `512 B`, `64 KiB`, `1.5 GiB` (no decimal when the value is whole).
pub fn bytes(b: u64) -> String {
    bytes_f(b as f64)
}

/// [`bytes`] for a fractional count (a mean, an axis tick).
pub fn bytes_f(b: f64) -> String {
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < BINARY.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 || v.fract() == 0.0 {
        format!("{v:.0} {}", BINARY[i])
    } else {
        format!("{v:.1} {}", BINARY[i])
    }
}

/// A duration in the unit that reads best: `350 ms`, `42.0 s`, `12.5 min`, `3.2 h`, as
/// /proc/mdstat's `finish=12.5min` does for a running sync. Non-finite or negative: `-`.
pub fn duration(secs: f64) -> String {
    if !secs.is_finite() || secs < 0.0 {
        "-".into()
    } else if secs < 1.0 {
        format!("{:.0} ms", secs * 1e3)
    } else if secs < 120.0 {
        format!("{secs:.1} s")
    } else if secs < 2.0 * 3600.0 {
        format!("{:.1} min", secs / 60.0)
    } else {
        format!("{:.1} h", secs / 3600.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bytes_pick_the_largest_unit_and_drop_a_whole_decimal() {
        assert_eq!(bytes(0), "0 B");
        assert_eq!(bytes(1023), "1023 B");
        assert_eq!(bytes(64 << 10), "64 KiB");
        assert_eq!(bytes(3 << 29), "1.5 GiB");
        assert_eq!(bytes(26_004_684), "24.8 MiB");
        assert_eq!(bytes(u64::MAX), "16384 PiB");
        assert_eq!(bytes_f(1536.0), "1.5 KiB");
        assert_eq!(bytes_f(10.4), "10 B");
    }

    #[test]
    fn durations_read_as_mdstat_would() {
        assert_eq!(duration(0.12), "120 ms");
        assert_eq!(duration(1.0), "1.0 s");
        assert_eq!(duration(119.94), "119.9 s");
        assert_eq!(duration(750.0), "12.5 min");
        assert_eq!(duration(7200.0), "2.0 h");
        assert_eq!(duration(f64::NAN), "-");
        assert_eq!(duration(-1.0), "-");
    }
}
