//! Channel definition patterns, as InsForge writes them: segments of
//! `[A-Za-z0-9-]` separated by `:`, with `%` (SQL `LIKE`'s "any run of
//! characters") allowed after the first segment. `_`, `LIKE`'s other
//! wildcard, is refused rather than silently matching one character.

/// Longest pattern accepted, in bytes.
pub const MAX_PATTERN: usize = 255;

/// Why a pattern is refused.
pub fn validate(pattern: &str) -> Result<(), String> {
    if pattern.is_empty() {
        return Err("pattern is empty".into());
    }
    if pattern.len() > MAX_PATTERN {
        return Err(format!("pattern is longer than {MAX_PATTERN} bytes"));
    }
    if pattern.contains('_') {
        return Err("`_` is not allowed in patterns; use `%` as the only wildcard".into());
    }
    for (i, segment) in pattern.split(':').enumerate() {
        if segment.is_empty() {
            return Err("pattern has an empty segment (`::`, or `:` at an end)".into());
        }
        let wildcard_ok = i > 0;
        let bad = segment
            .chars()
            .find(|&c| !(c.is_ascii_alphanumeric() || c == '-' || (c == '%' && wildcard_ok)));
        if let Some(c) = bad {
            return Err(if c == '%' {
                "`%` is allowed after the first segment only (`order:%`, not `%`)".into()
            } else {
                format!(
                    "`{c}` is not allowed: segments are letters, digits and `-`, separated by `:`"
                )
            });
        }
    }
    Ok(())
}

/// Longest channel name a pattern is matched against, in bytes (channel
/// names are at most 128 bytes; this bound keeps the matching's
/// worst case, proportional to both lengths, small whatever it is given).
pub const MAX_MATCHED: usize = 1024;

/// Whether `channel` matches `pattern` (`%` matches any run of characters,
/// `:` included; everything else matches itself, case-sensitively, as
/// PostgreSQL's `LIKE`). A pattern longer than [`MAX_PATTERN`] or a channel
/// longer than [`MAX_MATCHED`] never matches.
pub fn matches(pattern: &str, channel: &str) -> bool {
    if pattern.len() > MAX_PATTERN || channel.len() > MAX_MATCHED {
        return false;
    }
    let p = pattern.as_bytes();
    let c = channel.as_bytes();
    // Classic wildcard matching with one backtrack point.
    let (mut pi, mut ci) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ci < c.len() {
        if pi < p.len() && p[pi] == b'%' {
            star = Some((pi, ci));
            pi += 1;
        } else if pi < p.len() && p[pi] == c[ci] {
            pi += 1;
            ci += 1;
        } else if let Some((sp, sc)) = star {
            pi = sp + 1;
            ci = sc + 1;
            star = Some((sp, sc + 1));
        } else {
            return false;
        }
    }
    p[pi..].iter().all(|&b| b == b'%')
}

/// How specific a pattern is: an exact name beats every wildcard; among
/// wildcards, the longer literal prefix, then the longer pattern. Larger
/// is more specific.
pub fn specificity(pattern: &str) -> (bool, usize, usize) {
    let exact = !pattern.contains('%');
    let prefix = pattern.find('%').unwrap_or(pattern.len());
    (exact, prefix, pattern.len())
}

/// The most specific of `candidates` (patterns, with what they carry)
/// that matches `channel`; ties between equally specific patterns go to
/// the smaller pattern string, so the choice never depends on order.
pub fn most_specific<'a, T>(
    channel: &str,
    candidates: impl IntoIterator<Item = (&'a str, T)>,
) -> Option<(&'a str, T)> {
    candidates
        .into_iter()
        .filter(|(pattern, _)| matches(pattern, channel))
        .max_by(|(a, _), (b, _)| specificity(a).cmp(&specificity(b)).then_with(|| b.cmp(a)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_and_invalid_patterns() {
        for ok in [
            "order",
            "order:123",
            "order:%",
            "chat:room-%:messages",
            "a-b:%:%",
            "x:a%b",
        ] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in [
            "", "%", "%:x", "order:", ":x", "a::b", "order_1", "order:_", "or der", "a.b", "ö",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
        assert!(validate(&"a".repeat(MAX_PATTERN + 1)).is_err());
    }

    #[test]
    fn like_semantics() {
        assert!(matches("order:%", "order:123"));
        assert!(matches("order:%", "order:"));
        assert!(matches("order:%", "order:1:2"));
        assert!(!matches("order:%", "orders:1"));
        assert!(matches("chat:%:messages", "chat:room-1:messages"));
        assert!(!matches("chat:%:messages", "chat:room-1:typing"));
        assert!(matches("a%b%c", "aXXbYYc"));
        assert!(!matches("a%b%c", "aXXbYY"));
        assert!(matches("order", "order"));
        assert!(!matches("order", "Order"));
        assert!(matches("x:%%", "x:"));
        assert!(!matches("%", &"x".repeat(MAX_MATCHED + 1)));
    }

    #[test]
    fn the_most_specific_definition_wins_whatever_the_order() {
        let defs = ["order:%", "order:vip-%", "order:vip-1", "%-never"];
        for rotation in 0..defs.len() {
            let mut order = defs.to_vec();
            order.rotate_left(rotation);
            let pick = |ch: &str| most_specific(ch, order.iter().map(|p| (*p, ()))).map(|(p, _)| p);
            assert_eq!(pick("order:vip-1"), Some("order:vip-1"));
            assert_eq!(pick("order:vip-2"), Some("order:vip-%"));
            assert_eq!(pick("order:3"), Some("order:%"));
            assert_eq!(pick("news"), None);
        }
        // Same literal prefix: the longer pattern.
        let pick = most_specific("a:b:c", [("a:%", 1), ("a:%:c", 2)]);
        assert_eq!(pick, Some(("a:%:c", 2)));
        // Fully tied: the smaller string, in either order.
        assert_eq!(
            most_specific("a:xy", [("a:%y", 1), ("a:x%", 2)]).unwrap().0,
            "a:x%"
        );
        assert_eq!(
            most_specific("a:xy", [("a:x%", 2), ("a:%y", 1)]).unwrap().0,
            "a:x%"
        );
    }

    proptest::proptest! {
        #[test]
        fn matching_agrees_with_a_regex_model(pattern in "[ab%:]{0,8}", channel in "[ab:]{0,10}") {
            // `%` as `.*`, anchored.
            fn model(p: &[u8], c: &[u8]) -> bool {
                match p.split_first() {
                    None => c.is_empty(),
                    Some((b'%', rest)) => (0..=c.len()).any(|i| model(rest, &c[i..])),
                    Some((x, rest)) => c.first() == Some(x) && model(rest, &c[1..]),
                }
            }
            proptest::prop_assert_eq!(matches(&pattern, &channel), model(pattern.as_bytes(), channel.as_bytes()));
        }
    }
}
