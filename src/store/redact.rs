/// A database URL fit for logs: the user and password of the authority, and the
/// value of every query parameter that may hold a secret (`password`,
/// `sslpassword`, any name containing `pass`, `secret` or `token`), replaced by
/// `***`.
///
/// ```
/// use tower_api_keys::store::redact_url;
///
/// assert_eq!(
///     redact_url("postgres://app:hunter2@db:5432/keys?sslmode=require&password=hunter2"),
///     "postgres://***@db:5432/keys?sslmode=require&password=***",
/// );
/// assert_eq!(redact_url("sqlite://api-keys.db"), "sqlite://api-keys.db");
/// ```
pub fn redact_url(url: &str) -> String {
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, url),
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let mut out = String::with_capacity(url.len());
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
    out
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
    fn an_at_sign_in_the_query_is_not_userinfo() {
        assert_eq!(redact_url("postgres://h/db?x=a@b"), "postgres://h/db?x=a@b");
    }
}
