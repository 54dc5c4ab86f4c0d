//! Database and Redis URLs made fit for logs and error messages, whatever
//! characters their passwords hold.
//!
//! A password may hold characters that end a part of a URL (`?`, `/`, `#`,
//! `@`, `:`), unescaped, and a driver that cannot parse such a URL may quote
//! all of it or a piece of it in its error. So the userinfo runs to the
//! *last* `@` after the scheme, and where that is ambiguous (a `?` or `#`
//! before that `@`: a query holding an `@`, or a password holding a `?`)
//! nothing after the scheme is shown.

/// A database or Redis URL fit for logs: the user and password of the
/// authority, and the value of every query parameter that may hold a secret
/// (`password`, `sslpassword`, any name containing `pass`, `secret` or
/// `token`), replaced by `***`, whatever characters the password holds.
///
/// The userinfo runs to the last `@` after the scheme, so a password holding
/// `@`, `/` or `:` is hidden whole. When a `?` or `#` comes before that `@` (a
/// password holding one, or an `@` in the query) the URL cannot be split
/// safely, and only its scheme is shown. `sqlite:` URLs have no userinfo;
/// text that is not a URL at all is shown as `<not a URL>`. A comma-separated
/// list of URLs (the nodes of a Redis Cluster, as `REDIS_URL` may give them)
/// is redacted URL by URL.
///
/// ```
/// use tower_api_keys::store::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:hunter2@db:5432/keys?sslmode=require&password=hunter2"),
///     "postgres://***@db:5432/keys?sslmode=require&password=***",
/// );
/// assert_eq!(redact_url("postgres://app:a/b@c@db/keys"), "postgres://***@db/keys");
/// assert_eq!(redact_url("mysql://app:a?b@db/keys"), "mysql://***");
/// assert_eq!(redact_url("sqlite://api-keys.db"), "sqlite://api-keys.db");
/// assert_eq!(
///     redact_url("redis://:hunter2@node-a:6379,redis://:hunter2@node-b:6379"),
///     "redis://***@node-a:6379,redis://***@node-b:6379",
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    url_list(url)
        .into_iter()
        .map(redact_one)
        .collect::<Vec<_>>()
        .join(",")
}

/// `list` cut at every comma that starts another URL (a comma, optional
/// spaces, then `scheme://`), untrimmed. A comma anywhere else (in a password,
/// between the hosts of a multi-host PostgreSQL URL) does not cut.
pub(crate) fn url_list(list: &str) -> Vec<&str> {
    let mut pieces = Vec::new();
    let mut start = 0;
    for (comma, _) in list.match_indices(',') {
        if starts_with_scheme(list[comma + 1..].trim_start()) {
            pieces.push(&list[start..comma]);
            start = comma + 1;
        }
    }
    pieces.push(&list[start..]);
    pieces
}

/// Whether `text` begins with `scheme://` (RFC 3986: a letter, then letters,
/// digits, `+`, `-` or `.`).
fn starts_with_scheme(text: &str) -> bool {
    let Some((scheme, _)) = text.split_once("://") else {
        return false;
    };
    let mut chars = scheme.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
}

/// One URL of [`redact_url`]'s list, redacted.
fn redact_one(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        // No authority: `sqlite::memory:`, `sqlite:keys.db?…`; anything else
        // is no URL (a password set where a URL belongs, say).
        return if url.starts_with("sqlite:") {
            redact_tail(url)
        } else {
            "<not a URL>".to_owned()
        };
    };
    match userinfo_end(scheme, rest) {
        Some(at) if rest[..at].contains(['?', '#']) => format!("{scheme}://***"),
        Some(at) => format!("{scheme}://***@{}", redact_tail(&rest[at + 1..])),
        None => format!("{scheme}://{}", redact_tail(rest)),
    }
}

/// `text` (an error message, say) with every trace of `url`'s secrets
/// replaced: the URL itself by [`redact_url`]'s form, and the password and
/// secret query values as written, percent-decoded, and each piece of them
/// between the characters that end a part of a URL (a driver that misreads
/// the URL may quote such a piece alone).
///
/// ```
/// use tower_api_keys::store::redact_secrets;
///
/// let url = "redis://:pw?s3cret@cache:6379";
/// assert_eq!(
///     redact_secrets("cannot parse redis://:pw (from redis://:pw?s3cret@cache:6379)", url),
///     "cannot parse redis://:*** (from redis://***)",
/// );
/// ```
pub fn redact_secrets(text: &str, url: &str) -> String {
    // An empty URL holds nothing to hide, and replacing "" would put the
    // replacement between every character. (Any other value that is no URL
    // is hidden wherever it appears: it may be a misplaced password.)
    if url.is_empty() {
        return text.to_owned();
    }
    let mut text = text.replace(url, &redact_url(url));
    let mut secrets = url_secrets(url);
    // Longest first, so that a piece never breaks up a longer secret.
    secrets.sort_by_key(|secret| std::cmp::Reverse(secret.len()));
    for secret in secrets {
        text = text.replace(&secret, "***");
    }
    text
}

/// Whether `url` holds a password (in its userinfo or a secret query
/// parameter).
pub fn url_has_secret(url: &str) -> bool {
    !url_secrets(url).is_empty()
}

/// Every text of `url` that may be secret, as written and percent-decoded,
/// with the pieces between URL delimiters; none empty, none `***`.
fn url_secrets(url: &str) -> Vec<String> {
    let mut values = Vec::new();
    let (scheme, rest) = url.split_once("://").unwrap_or(("", url));
    let sqlite = scheme.eq_ignore_ascii_case("sqlite") || url.starts_with("sqlite:");
    if !sqlite {
        // Each `@` may end the userinfo; the password follows its first `:`.
        for (at, _) in rest.match_indices('@') {
            let userinfo = &rest[..at];
            let userinfo = userinfo.rsplit("://").next().unwrap_or(userinfo);
            if let Some((_, password)) = userinfo.split_once(':') {
                values.push(password);
            }
        }
    }
    // Secret query values, whichever `?` starts the query.
    for (start, _) in url.match_indices('?') {
        for pair in url[start + 1..].split('&') {
            if let Some((name, value)) = pair.split_once('=')
                && is_secret_parameter(name)
            {
                values.push(value);
            }
        }
    }
    let mut secrets = Vec::new();
    for value in values {
        for form in [value.to_owned(), percent_decode(value)] {
            let pieces: Vec<String> = form.split(DELIMITERS).map(str::to_owned).collect();
            secrets.push(form);
            secrets.extend(pieces);
        }
    }
    secrets.retain(|secret| !secret.is_empty() && secret != "***");
    secrets.sort_unstable();
    secrets.dedup();
    secrets
}

/// The characters that end a part of a URL.
const DELIMITERS: [char; 7] = [':', '/', '?', '#', '@', '&', '='];

/// Where the userinfo of `rest` (the URL after `scheme://`) ends: its last
/// `@`; `None` without one, and always for SQLite, whose paths may hold `@`.
fn userinfo_end(scheme: &str, rest: &str) -> Option<usize> {
    if scheme.eq_ignore_ascii_case("sqlite") {
        return None;
    }
    rest.rfind('@')
}

/// Host and path as they are, then the query with every secret parameter's
/// value (up to the next `&`, a `#` included) replaced by `***`.
fn redact_tail(tail: &str) -> String {
    let Some((before, query)) = tail.split_once('?') else {
        return tail.to_owned();
    };
    let mut out = String::with_capacity(tail.len());
    out.push_str(before);
    out.push('?');
    for (i, pair) in query.split('&').enumerate() {
        if i > 0 {
            out.push('&');
        }
        match pair.split_once('=') {
            Some((name, _)) if is_secret_parameter(name) => {
                out.push_str(name);
                out.push_str("=***");
            }
            _ => out.push_str(pair),
        }
    }
    out
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

/// `%XX` escapes decoded (invalid ones kept as written).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = |b: u8| char::from(b).to_digit(16);
        if bytes[i] == b'%'
            && i + 2 < bytes.len()
            && let (Some(high), Some(low)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
        {
            out.push((high * 16 + low) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_url_leaves_the_message_alone_and_a_non_url_is_hidden() {
        let message = "cannot open hunter2: box is full";
        assert_eq!(redact_secrets(message, ""), message);
        assert_eq!(
            redact_secrets(message, "hunter2"),
            "cannot open <not a URL>: box is full"
        );
    }

    #[test]
    fn passwords_are_redacted_wherever_they_appear() {
        for (url, expected) in [
            ("postgres://u:p@h/db", "postgres://***@h/db"),
            (
                "postgres://u@h/db?password=p",
                "postgres://***@h/db?password=***",
            ),
            (
                "postgres://h/db?user=u&Password=p&sslmode=require",
                "postgres://h/db?user=u&Password=***&sslmode=require",
            ),
            (
                "postgres://h/db?sslpassword=p&application_name=x",
                "postgres://h/db?sslpassword=***&application_name=x",
            ),
            (
                "mysql://root@127.0.0.1:3306/test",
                "mysql://***@127.0.0.1:3306/test",
            ),
            ("mysql://h/db?pass=p#frag", "mysql://h/db?pass=***"),
            (
                "sqlite://api-keys.db?mode=rwc",
                "sqlite://api-keys.db?mode=rwc",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            ("hunter2", "<not a URL>"),
            (
                "redis+unix:///run/redis.sock?pass=s3cret",
                "redis+unix:///run/redis.sock?pass=***",
            ),
            (
                "rediss://:p%40ss@host/0?protocol=resp3",
                "rediss://***@host/0?protocol=resp3",
            ),
            ("sqlite://./a@b.db", "sqlite://./a@b.db"),
            (
                "postgres://u:p@h?password=x",
                "postgres://***@h?password=***",
            ),
            // Delimiters in the password.
            ("postgres://u:a/b@h/db", "postgres://***@h/db"),
            ("postgres://u:a@b@h/db", "postgres://***@h/db"),
            ("postgres://u:a:b@h:5432/db", "postgres://***@h:5432/db"),
            ("postgres://u:a%40b@h/db", "postgres://***@h/db"),
            ("postgres://u:a?b@h/db", "postgres://***"),
            ("postgres://u:a#b@h/db", "postgres://***"),
            ("redis://:a?b@h:6379", "redis://***"),
            (
                "redis://h:1,redis://:a/b@k:2",
                "redis://h:1,redis://***@k:2",
            ),
            // An `@` in the query may end a password: nothing shown.
            ("postgres://h/db?password=a@b", "postgres://***"),
            ("postgres://h/db?x=a@b", "postgres://***"),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn messages_lose_every_piece_of_the_password() {
        for url in [
            "postgres://u:pw?S3CRET@127.0.0.1:1/db",
            "postgres://u:pw/S3CRET@127.0.0.1:1/db",
            "postgres://u:pw@S3CRET@127.0.0.1:1/db",
            "postgres://u:pw#S3CRET@127.0.0.1:1/db",
            "postgres://u:pw:S3CRET@127.0.0.1:1/db",
            "postgres://u:pw%3FS3CRET@127.0.0.1:1/db",
            "postgres://127.0.0.1:1/db?password=pw#S3CRET",
            "postgres://127.0.0.1:1/db?password=pw@S3CRET",
            "redis://:pw?S3CRET@127.0.0.1:1",
        ] {
            let message = format!(
                "cannot connect to '{url}' (parsed as {}, password {})",
                url.split('?').next().unwrap(),
                percent_decode(url)
            );
            let shown = redact_secrets(&message, url);
            assert!(!shown.contains("S3CRET"), "{url}: {shown}");
            assert!(!shown.contains("pw"), "{url}: {shown}");
            assert!(url_has_secret(url), "{url}");
        }
        let url = "redis://user:s3cret@host:1";
        assert_eq!(redact_secrets("auth s3cret failed", url), "auth *** failed");
        let url = "redis+unix:///sock?db=1&pass=s3cret";
        assert_eq!(redact_secrets("x s3cret", url), "x ***");
        for url in ["sqlite://keys.db", "postgres://u@h/db", "redis://h:6379"] {
            assert!(!url_has_secret(url), "{url}");
            assert_eq!(redact_secrets("at u@h", url), "at u@h");
        }
    }

    #[test]
    fn a_list_of_urls_is_redacted_url_by_url() {
        for (url, expected) in [
            (
                "redis://u:p1@a:1,redis://u:p2@b:2",
                "redis://***@a:1,redis://***@b:2",
            ),
            (
                "rediss://:p@a:1, rediss://b:2/0?password=p",
                "rediss://***@a:1, rediss://b:2/0?password=***",
            ),
            // Commas that do not start a URL stay inside one.
            ("redis://:a,b@h:1", "redis://***@h:1"),
            (
                "postgres://u:p@h1:5432,h2:5432/db",
                "postgres://***@h1:5432,h2:5432/db",
            ),
            (
                "redis://:p,redis@h:1,redis://:q@i:2",
                "redis://***@h:1,redis://***@i:2",
            ),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
        }
    }

    #[test]
    fn percent_decoding_survives_bad_escapes() {
        assert_eq!(percent_decode("a%41%zz%4"), "aA%zz%4");
        assert_eq!(percent_decode("%"), "%");
        assert_eq!(percent_decode("%40"), "@");
    }
}
