//! Helpers shared by the integration tests.

#![allow(dead_code)]

use loadtest::report::RunReport;
use loadtest::runner::{CellRecord, Status};
use loadtest::workload::Kind;

/// A minimal XML well-formedness check: every tag is closed in order, attribute values
/// are quoted, text holds no bare `<` and every `&` starts an entity. Returns the names of
/// the elements seen, in document order.
pub fn check_xml(doc: &str) -> Result<Vec<String>, String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = doc.trim_start();
    let mut roots = 0;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("<?") {
            let end = after.find("?>").ok_or("unterminated <?")?;
            rest = &after[end + 2..];
        } else if let Some(after) = rest.strip_prefix("<!--") {
            let end = after.find("-->").ok_or("unterminated comment")?;
            rest = &after[end + 3..];
        } else if let Some(after) = rest.strip_prefix("</") {
            let end = after.find('>').ok_or("unterminated end tag")?;
            let name = after[..end].trim();
            match stack.pop() {
                Some(open) if open == name => {}
                other => return Err(format!("</{name}> closes {other:?}")),
            }
            rest = &after[end + 1..];
        } else if let Some(after) = rest.strip_prefix('<') {
            // Find the tag's end outside quoted attribute values.
            let mut quote = None;
            let mut end = None;
            for (i, ch) in after.char_indices() {
                match (quote, ch) {
                    (None, '"') | (None, '\'') => quote = Some(ch),
                    (Some(q), c) if c == q => quote = None,
                    (None, '<') => return Err("'<' inside a tag".into()),
                    (None, '>') => {
                        end = Some(i);
                        break;
                    }
                    _ => {}
                }
            }
            let end = end.ok_or("unterminated tag")?;
            let body = &after[..end];
            let self_closing = body.ends_with('/');
            let body = body.trim_end_matches('/');
            let name: String = body.chars().take_while(|c| !c.is_whitespace()).collect();
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_alphanumeric() || ":-_.".contains(c))
            {
                return Err(format!("bad element name {name:?}"));
            }
            check_attributes(&body[name.len()..])?;
            if stack.is_empty() {
                roots += 1;
            }
            seen.push(name.clone());
            if !self_closing {
                stack.push(name);
            }
            rest = &after[end + 1..];
        } else {
            let end = rest.find('<').unwrap_or(rest.len());
            let text = &rest[..end];
            if stack.is_empty() && !text.trim().is_empty() {
                return Err("text outside the root element".into());
            }
            check_entities(text)?;
            rest = &rest[end..];
        }
    }
    if !stack.is_empty() {
        return Err(format!("unclosed elements {stack:?}"));
    }
    if roots != 1 {
        return Err(format!("{roots} root elements"));
    }
    Ok(seen)
}

fn check_attributes(mut s: &str) -> Result<(), String> {
    loop {
        s = s.trim_start();
        if s.is_empty() {
            return Ok(());
        }
        let eq = s
            .find('=')
            .ok_or_else(|| format!("attribute without value: {s:?}"))?;
        let name = s[..eq].trim();
        if name.is_empty() || name.contains(char::is_whitespace) {
            return Err(format!("bad attribute name {name:?}"));
        }
        let v = s[eq + 1..].trim_start();
        let q = v.chars().next().filter(|c| *c == '"' || *c == '\'');
        let q = q.ok_or_else(|| format!("unquoted attribute {name}"))?;
        let close = v[1..].find(q).ok_or("unterminated attribute value")?;
        check_entities(&v[1..1 + close])?;
        s = &v[close + 2..];
    }
}

fn check_entities(text: &str) -> Result<(), String> {
    for (i, _) in text.match_indices('&') {
        let t = &text[i..];
        let ok = ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;", "&#"]
            .iter()
            .any(|e| t.starts_with(e));
        if !ok {
            return Err(format!("bare '&' in {text:?}"));
        }
    }
    Ok(())
}

/// Asserts a throughput cell's numbers are plausible and self-consistent.
pub fn assert_plausible_throughput(c: &CellRecord) {
    assert_eq!(
        c.status,
        Status::Ok,
        "{} {}: {:?}",
        c.series,
        c.label,
        c.reason
    );
    let r = c.result.as_ref().expect("ok cell has a result");
    assert!(r.frames > 0, "{} {}: no frames", c.series, c.label);
    assert_eq!(
        r.bytes,
        r.frames * u64::from(c.frame_size),
        "{} {}",
        c.series,
        c.label
    );
    assert!(
        r.elapsed_s > 0.0 && r.elapsed_s < 60.0,
        "elapsed {}",
        r.elapsed_s
    );
    assert!(
        r.gbps > 0.0 && r.gbps < 10_000.0,
        "{} {}: {} Gbps",
        c.series,
        c.label,
        r.gbps
    );
    let mpps = r.frames as f64 / r.elapsed_s / 1e6;
    assert!(
        (r.mpps - mpps).abs() <= 1e-6 * mpps.max(1.0),
        "mpps {} vs {}",
        r.mpps,
        mpps
    );
    let gbps = r.bytes as f64 * 8.0 / r.elapsed_s / 1e9;
    assert!((r.gbps - gbps).abs() <= 1e-6 * gbps.max(1.0));
    assert!(!r.cpu.is_empty(), "{} has no CPU sides", c.series);
    for s in &r.cpu {
        assert!(s.threads >= 1);
        assert!(s.percent >= 0.0 && s.percent <= 100.0 * f64::from(s.threads) * 1.5 + 5.0);
    }
    assert_eq!(r.drops, 0);
    assert_eq!(r.errors, 0);
    assert!(r.latency.is_none());
}

/// Asserts a latency cell's percentiles are plausible and ordered.
pub fn assert_plausible_latency(c: &CellRecord) {
    assert_eq!(
        c.status,
        Status::Ok,
        "{} {}: {:?}",
        c.series,
        c.label,
        c.reason
    );
    assert!(matches!(c.kind, Kind::Latency(_)));
    let r = c.result.as_ref().expect("ok cell has a result");
    let l = r.latency.as_ref().expect("latency cell has a summary");
    assert!(r.frames > 0);
    assert_eq!(l.samples, r.frames);
    assert!(l.min_us > 0.0);
    assert!(l.min_us <= l.p50_us && l.p50_us <= l.p90_us && l.p90_us <= l.p99_us);
    assert!(l.p99_us <= l.p999_us && l.p999_us <= l.max_us);
    assert!(l.p50_us < 1_000_000.0, "p50 of {} µs", l.p50_us);
}

/// The cell of `series` at `size`.
pub fn cell<'a>(report: &'a RunReport, series: &str, size: u32) -> &'a CellRecord {
    report
        .cells
        .iter()
        .find(|c| c.series == series && c.frame_size == size)
        .unwrap_or_else(|| panic!("no {series} cell at {size} B"))
}

/// Whether the tests run as root.
pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// True if `test` may run (root). Without root: false with a note when
/// PVNET_SKIP_ROOT_TESTS=1 (the project's convention), else a panic that says what to do.
pub fn root_or_skip(test: &str) -> bool {
    if is_root() {
        return true;
    }
    if std::env::var("PVNET_SKIP_ROOT_TESTS").as_deref() == Ok("1") {
        eprintln!("{test}: not run: needs root and PVNET_SKIP_ROOT_TESTS=1 is set");
        return false;
    }
    panic!(
        "{test} needs root (CAP_NET_ADMIN, CAP_SYS_ADMIN) for a network namespace and a \
         TAP: run the tests as root, or set PVNET_SKIP_ROOT_TESTS=1 to skip them"
    );
}
