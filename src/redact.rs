//! Connection URLs made safe to print: the one place that hides credentials in logs, error
//! messages and `Debug` output. A leaf: it depends on nothing else in the crate.
//!
//! Two strengths, because URL schemes disagree on what the user part is: in
//! `postgres://app@db` it is a user name (kept, only a password is hidden), while in
//! `nats://s3cret@host` a lone user part is a token (hidden whole).

/// A URL with its password (`user:password@`, `?password=`) replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return if url.contains("password") {
            "<redacted>".to_string()
        } else {
            url.to_string()
        };
    };
    let (authority, tail) = match rest.find(['/', '?']) {
        Some(i) => rest.split_at(i),
        None => (rest, ""),
    };
    let authority = match authority.rsplit_once('@') {
        Some((userinfo, host)) => match userinfo.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{userinfo}@{host}"),
        },
        None => authority.to_string(),
    };
    let tail = match tail.find("password=") {
        Some(i) => {
            let end = tail[i..].find('&').map(|j| i + j).unwrap_or(tail.len());
            format!("{}password=***{}", &tail[..i], &tail[end..])
        }
        None => tail.to_string(),
    };
    format!("{scheme}://{authority}{tail}")
}

/// A comma-separated list of URLs with all user info (user, password or token) replaced by
/// `***`.
pub fn redact_userinfo(urls: &str) -> String {
    urls.split(',')
        .map(|part| {
            let (scheme, rest) = match part.split_once("://") {
                Some((s, r)) => (Some(s), r),
                None => (None, part),
            };
            let authority_end = rest.find('/').unwrap_or(rest.len());
            let redacted = match rest[..authority_end].rfind('@') {
                Some(at) => format!("***{}", &rest[at..]),
                None => rest.to_string(),
            };
            match scheme {
                Some(s) => format!("{s}://{redacted}"),
                None => redacted,
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_hidden_users_kept() {
        assert_eq!(
            redact_url("postgres://u:pw@h:5/db"),
            "postgres://u:***@h:5/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://h/db?user=u&password=pw&x=1"),
            "postgres://h/db?user=u&password=***&x=1"
        );
        assert_eq!(redact_url("host=h password=pw"), "<redacted>");
    }

    #[test]
    fn user_info_is_hidden_whole() {
        assert_eq!(
            redact_userinfo("nats://u:secret@h:4222,tls://tok@h2"),
            "nats://***@h:4222,tls://***@h2"
        );
        assert_eq!(redact_userinfo("nats://h:4222"), "nats://h:4222");
    }
}
