//! Durations in configuration and on the command line: whole seconds, or a
//! number with a unit (`500ms`, `30s`, `5m`, `1h`, `7d`), optionally negative
//! where the caller allows it (`portcullis token --ttl -1h` mints an expired token).

/// Parse to whole seconds (sub-second values round down).
pub fn parse_seconds(s: &str) -> Result<i64, String> {
    let t = s.trim();
    let (neg, body) = match t.strip_prefix('-') {
        Some(b) => (true, b),
        None => (false, t),
    };
    let split = body
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(body.len());
    let (num, unit) = body.split_at(split);
    let n: i64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (write e.g. 30s, 5m, 1h)"))?;
    let secs = match unit {
        "" | "s" => n,
        "ms" => n / 1000,
        "m" => n.saturating_mul(60),
        "h" => n.saturating_mul(3600),
        "d" => n.saturating_mul(86_400),
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit '{unit}' (use ms, s, m, h or d)"
            ));
        }
    };
    Ok(if neg { -secs } else { secs })
}

/// Parse a non-negative duration to milliseconds (`250ms`, `30s`, `5m`).
pub fn parse_millis(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a duration (write e.g. 500ms, 30s, 5m)"))?;
    let factor = match unit {
        "ms" => 1,
        "" | "s" => 1000,
        "m" => 60_000,
        "h" => 3_600_000,
        _ => {
            return Err(format!(
                "'{s}' has an unknown unit '{unit}' (use ms, s, m or h)"
            ));
        }
    };
    Ok(n.saturating_mul(factor))
}

/// Parse a size in bytes: a number, or with a unit (`KB`, `KiB`, `MB`, `MiB`, `GB`, `GiB`).
pub fn parse_bytes(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("'{s}' is not a size (write e.g. 64KiB, 10MB)"))?;
    let factor: u64 = match unit.trim() {
        "" | "B" => 1,
        "KB" | "kB" => 1000,
        "KiB" => 1024,
        "MB" => 1_000_000,
        "MiB" => 1 << 20,
        "GB" => 1_000_000_000,
        "GiB" => 1 << 30,
        u => {
            return Err(format!(
                "'{s}' has an unknown unit '{u}' (use B, KiB, MiB, GiB, KB, MB or GB)"
            ));
        }
    };
    n.checked_mul(factor)
        .ok_or_else(|| format!("'{s}' is too large"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn units() {
        assert_eq!(parse_seconds("30"), Ok(30));
        assert_eq!(parse_seconds("30s"), Ok(30));
        assert_eq!(parse_seconds("5m"), Ok(300));
        assert_eq!(parse_seconds("1h"), Ok(3600));
        assert_eq!(parse_seconds("-1h"), Ok(-3600));
        assert_eq!(parse_seconds("1500ms"), Ok(1));
        assert!(parse_seconds("1 h").is_err());
        assert!(parse_seconds("h").is_err());
        assert!(parse_seconds("3y").is_err());
    }

    #[test]
    fn millis_and_sizes() {
        assert_eq!(parse_millis("250ms"), Ok(250));
        assert_eq!(parse_millis("30"), Ok(30_000));
        assert_eq!(parse_millis("2m"), Ok(120_000));
        assert!(parse_millis("-1s").is_err());
        assert_eq!(parse_bytes("1024"), Ok(1024));
        assert_eq!(parse_bytes("64KiB"), Ok(65_536));
        assert_eq!(parse_bytes("10MB"), Ok(10_000_000));
        assert_eq!(parse_bytes("1 GiB"), Ok(1 << 30));
        assert!(parse_bytes("10mb").is_err());
        assert!(parse_bytes("99999999999GiB").is_err());
    }
}
