/// A database URL fit for logs: the user and password of the authority, and the
/// value of every query parameter that may hold a secret (`password`,
/// `sslpassword`, any name containing `pass`, `secret` or `token`), replaced by
/// `***`. A comma-separated list of URLs (the nodes of a Redis Cluster, as
/// `REDIS_URL` may give them) is redacted URL by URL.
///
/// ```
/// use tower_api_keys::store::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:hunter2@db:5432/keys?sslmode=require&password=hunter2"),
///     "postgres://***@db:5432/keys?sslmode=require&password=***",
/// );
/// assert_eq!(redact_url("sqlite://api-keys.db"), "sqlite://api-keys.db");
/// assert_eq!(
///     redact_url("redis://:hunter2@node-a:6379,redis://:hunter2@node-b:6379"),
///     "redis://***@node-a:6379,redis://***@node-b:6379",
/// );
/// ```
pub fn redact_url(url: &str) -> String {
    let mut out = String::with_capacity(url.len());
    for (i, one) in url_list(url).into_iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        redact_one(one, &mut out);
    }
    out
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

/// Appends one URL of [`redact_url`]'s list, redacted, to `out`.
fn redact_one(url: &str, out: &mut String) {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    if let Some(scheme) = scheme {
        out.push_str(scheme);
        out.push_str("://");
        let authority_end = before_query.find('/').unwrap_or(before_query.len());
        match before_query[..authority_end].rfind('@') {
            Some(at) => {
                out.push_str("***");
                out.push_str(&before_query[at..]);
            }
            None => out.push_str(before_query),
        }
    } else {
        out.push_str(before_query);
    }
    if let Some(query) = query {
        out.push('?');
        let (query, fragment) = match query.split_once('#') {
            Some((query, fragment)) => (query, Some(fragment)),
            None => (query, None),
        };
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
        if let Some(fragment) = fragment {
            out.push('#');
            out.push_str(fragment);
        }
    }
}

fn is_secret_parameter(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["pass", "secret", "token"]
        .iter()
        .any(|word| name.contains(word))
}

#[cfg(test)]
mod tests {
    use super::redact_url;

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
            ("mysql://h/db?pass=p#frag", "mysql://h/db?pass=***#frag"),
            (
                "sqlite://api-keys.db?mode=rwc",
                "sqlite://api-keys.db?mode=rwc",
            ),
            ("sqlite::memory:", "sqlite::memory:"),
            (
                "postgres://u:p@h?password=x",
                "postgres://***@h?password=***",
            ),
        ] {
            assert_eq!(redact_url(url), expected, "{url}");
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
    fn an_at_sign_in_the_query_is_not_userinfo() {
        assert_eq!(redact_url("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
    }
}
