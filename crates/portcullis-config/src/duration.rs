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
}
