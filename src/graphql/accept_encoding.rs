//! Whether a request accepts a gzip-coded response, read from its `Accept-Encoding` fields
//! as RFC 9110 §12.5.3 defines them: a coding's own weight wins over `*`; `q=0` (in any
//! spelling, `0.0`, `0.000`) means "not acceptable"; a qvalue has at most three decimals and
//! is at most 1; coding and parameter names are case-insensitive; whitespace may surround
//! `;` and `=`; empty list elements are skipped. A request without the field gets no gzip.
//!
//! Why no crate: `headers` 0.4 keeps its `AcceptEncoding` in a disabled module (not
//! exported); `tower-http` keeps its parser private to its compression middleware;
//! `fly-accept-encoding` matches names case-sensitively and only `;q=` without whitespace;
//! `http_encoding_headers` (0.2, one author, pulls in `headers`) rejects `Q=`, whitespace
//! around `=` and empty list elements. The rules above fit in these few lines.

/// True when the fields of `Accept-Encoding` (every occurrence, in order) make gzip
/// acceptable: gzip's weight, or else `*`'s, is above zero. The first element naming a
/// coding is the one that counts; a malformed element (a bad qvalue, a parameter without
/// `=`) is ignored.
pub fn accepts_gzip<'a>(fields: impl IntoIterator<Item = &'a str>) -> bool {
    let mut gzip = None;
    let mut any = None;
    for (coding, q) in fields
        .into_iter()
        .flat_map(|f| f.split(','))
        .filter_map(element)
    {
        if coding.eq_ignore_ascii_case("gzip") {
            gzip.get_or_insert(q);
        } else if coding == "*" {
            any.get_or_insert(q);
        }
    }
    gzip.or(any).is_some_and(|q| q > 0)
}

/// One list element: its coding and weight in thousandths (1000 when absent), or None when
/// it is empty or malformed.
fn element(e: &str) -> Option<(&str, u16)> {
    let mut parts = e.split(';');
    let coding = parts.next()?.trim();
    if coding.is_empty() {
        return None;
    }
    let mut q = 1000;
    for p in parts {
        let (name, value) = p.split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            q = qvalue(value.trim())?;
        }
    }
    Some((coding, q))
}

/// `qvalue = ( "0" [ "." 0*3DIGIT ] ) / ( "1" [ "." 0*3("0") ] )`, in thousandths.
fn qvalue(s: &str) -> Option<u16> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if frac.len() > 3 || !frac.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let thousandths = frac
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0u16, |n, d| n * 10 + u16::from(d - b'0'));
    match int {
        "0" => Some(thousandths),
        "1" if thousandths == 0 => Some(1000),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qvalues() {
        for (s, q) in [
            ("0", Some(0)),
            ("0.", Some(0)),
            ("0.0", Some(0)),
            ("0.000", Some(0)),
            ("0.001", Some(1)),
            ("0.5", Some(500)),
            ("0.25", Some(250)),
            ("1", Some(1000)),
            ("1.000", Some(1000)),
            ("1.001", None),
            ("0.0001", None),
            ("2", None),
            ("", None),
            (".5", None),
            ("0.-1", None),
            ("-0", None),
            ("0x1", None),
        ] {
            assert_eq!(qvalue(s), q, "{s:?}");
        }
    }

    #[test]
    fn gzip_acceptable() {
        // Each case is the header's fields, one per line (so "a\nb" is two fields).
        let accepted = [
            "gzip",
            "GZip",
            "br, gzip;q=0.8",
            "gzip ; q = 0.5",
            "gzip;q=0.001",
            "*",
            "br;q=0, *;q=0.1",
            "br\ngzip",
            "gzip,,br",
            "*;q=0, gzip",
            // A malformed weight is no weight at all: the element is ignored.
            "gzip;q=0.0001, *",
        ];
        let refused = [
            "",
            "gzip;q=0",
            "gzip;q=0.0",
            "gzip;q=0.000",
            "gzip;Q=0",
            "gzip;q=0, *",
            "*, gzip;q=0",
            "*\ngzip;q=0",
            "*;q=0",
            "br, identity",
            "gzip;q=2",
            "gzip;q",
        ];
        assert!(!accepts_gzip([]));
        for (cases, ok) in [(&accepted[..], true), (&refused[..], false)] {
            for fields in cases {
                assert_eq!(accepts_gzip(fields.split('\n')), ok, "{fields:?}");
            }
        }
    }
}
