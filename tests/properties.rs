//! Property tests of the credential format (contract §1) and the hash encoding
//! (§2): every well-formed pair round-trips, everything else is refused, and
//! header extraction never panics.

use http::{HeaderMap, HeaderValue, header::AUTHORIZATION};
use proptest::prelude::*;
use tower_api_keys::{
    Credential, KeyPair, MalformedCredential, Pepper, extract_credential,
    hash::{KeyHasher, SecretHash},
    headers::X_API_KEY,
    key::{PublicKey, SecretKey},
};

/// The contract's shape, written out independently of the crate's parser:
/// `pk_` + 32 `[A-Za-z0-9]`, `:`, `sk_` + 32 `[A-Za-z0-9]`.
fn is_contract_shape(bytes: &[u8]) -> bool {
    fn half(bytes: &[u8], prefix: &[u8]) -> bool {
        bytes.len() == 35
            && &bytes[..3] == prefix
            && bytes[3..]
                .iter()
                .all(|b| matches!(b, b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9'))
    }
    bytes.len() == 71
        && bytes[35] == b':'
        && half(&bytes[..35], b"pk_")
        && half(&bytes[36..], b"sk_")
}

/// Optional whitespace (SP / HTAB) removed at both ends, as HTTP parsing does.
fn trim_ows(value: &[u8]) -> &[u8] {
    let is_ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = value.iter().position(|b| !is_ows(b)).unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|b| !is_ows(b))
        .map_or(start, |i| i + 1);
    &value[start..end]
}

fn body() -> impl Strategy<Value = String> {
    "[A-Za-z0-9]{32}"
}

fn well_formed() -> impl Strategy<Value = String> {
    (body(), body()).prop_map(|(public, secret)| format!("pk_{public}:sk_{secret}"))
}

/// A character that is not `[A-Za-z0-9]`: ASCII punctuation, whitespace and
/// controls, and non-ASCII characters, including Unicode letters and digits
/// (`é`, fullwidth `Ａ`, Arabic-Indic `٣`) that `char::is_alphanumeric` accepts.
fn not_alphanumeric() -> impl Strategy<Value = char> {
    prop_oneof![
        any::<char>().prop_filter("not ASCII alphanumeric", |c| !c.is_ascii_alphanumeric()),
        prop::sample::select(vec![
            ' ', '\t', '\0', '\x7f', ':', '_', '-', '=', '+', '/', '.', 'é', 'ß', 'Ａ', 'ｚ', '٣',
            '𝟘', '\u{200b}', '\u{feff}', '：',
        ]),
    ]
}

/// Fails the property unless `value` is refused by every parsing entry point.
fn assert_refused(value: &str) -> Result<(), TestCaseError> {
    prop_assert_eq!(Credential::parse(value).err(), Some(MalformedCredential));
    prop_assert_eq!(
        Credential::parse_bytes(value.as_bytes()).err(),
        Some(MalformedCredential)
    );
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn every_well_formed_pair_round_trips(public in body(), secret in body()) {
        let public = format!("pk_{public}");
        let secret = format!("sk_{secret}");
        let formatted = format!("{public}:{secret}");
        prop_assert_eq!(formatted.len(), 71);
        let parsed = Credential::parse(&formatted).unwrap();
        prop_assert_eq!(parsed.public_key(), public.as_str());
        prop_assert_eq!(parsed.secret_key(), secret.as_str());
        let again = format!("{}:{}", parsed.public_key(), parsed.secret_key());
        prop_assert_eq!(&again, &formatted);
        let from_bytes = Credential::parse_bytes(formatted.as_bytes()).unwrap();
        prop_assert_eq!(from_bytes.public_key(), public.as_str());
        prop_assert_eq!(from_bytes.secret_key(), secret.as_str());
        let public_key = PublicKey::parse(&public).unwrap();
        prop_assert_eq!(public_key.as_str(), public.as_str());
        let secret_key = SecretKey::parse(&secret).unwrap();
        prop_assert_eq!(secret_key.expose(), secret.as_str());
    }

    #[test]
    fn random_strings_are_accepted_only_in_the_exact_shape(value in any::<String>()) {
        let accepted = Credential::parse(&value).is_ok();
        prop_assert_eq!(accepted, is_contract_shape(value.as_bytes()));
        prop_assert_eq!(Credential::parse_bytes(value.as_bytes()).is_ok(), accepted);
    }

    #[test]
    fn random_bytes_are_accepted_only_in_the_exact_shape(
        value in prop::collection::vec(any::<u8>(), 0..160),
    ) {
        let parsed = Credential::parse_bytes(&value);
        prop_assert_eq!(parsed.is_ok(), is_contract_shape(&value));
        if let Ok(credential) = parsed {
            let joined = format!("{}:{}", credential.public_key(), credential.secret_key());
            prop_assert_eq!(joined.as_bytes(), value.as_slice());
        }
    }

    /// Strings of length 71 around the right alphabet: most random strings fail on
    /// length alone, these reach the character checks.
    #[test]
    fn near_shape_strings_are_accepted_only_in_the_exact_shape(
        value in "(pk|PK|pk-|sk)_[A-Za-z0-9_:é -]{32}[:;][sp]k_[A-Za-z0-9:]{32}",
    ) {
        prop_assert_eq!(Credential::parse(&value).is_ok(), is_contract_shape(value.as_bytes()));
    }

    #[test]
    fn one_character_replaced_by_a_non_alphanumeric_is_refused(
        credential in well_formed(),
        index in 0usize..71,
        replacement in not_alphanumeric(),
    ) {
        let mut chars: Vec<char> = credential.chars().collect();
        // Replacing the `:` by `:` or a `_` by `_` is no mutation.
        prop_assume!(chars[index] != replacement);
        chars[index] = replacement;
        let mutated: String = chars.into_iter().collect();
        assert_refused(&mutated)?;
    }

    #[test]
    fn one_character_inserted_is_refused(
        credential in well_formed(),
        index in 0usize..=71,
        inserted in any::<char>(),
    ) {
        let mut mutated = credential.clone();
        mutated.insert(index, inserted);
        assert_refused(&mutated)?;
    }

    #[test]
    fn one_character_deleted_is_refused(credential in well_formed(), index in 0usize..71) {
        let mut mutated = credential.clone();
        mutated.remove(index);
        assert_refused(&mutated)?;
    }

    #[test]
    fn a_changed_prefix_case_is_refused(
        credential in well_formed(),
        secret_half in any::<bool>(),
        // Bit 0: first letter upper, bit 1: second letter upper; 0 is unchanged.
        pattern in 1u8..4,
    ) {
        let at = if secret_half { 36 } else { 0 };
        let mut bytes = credential.into_bytes();
        if pattern & 1 != 0 {
            bytes[at] = bytes[at].to_ascii_uppercase();
        }
        if pattern & 2 != 0 {
            bytes[at + 1] = bytes[at + 1].to_ascii_uppercase();
        }
        assert_refused(&String::from_utf8(bytes).unwrap())?;
    }

    #[test]
    fn a_changed_prefix_separator_is_refused(
        credential in well_formed(),
        secret_half in any::<bool>(),
        separator in any::<char>().prop_filter("not `_`", |c| *c != '_'),
    ) {
        let at = if secret_half { 38 } else { 2 };
        let mut mutated = credential.clone();
        mutated.replace_range(at..at + 1, separator.encode_utf8(&mut [0; 4]));
        assert_refused(&mutated)?;
    }

    #[test]
    fn a_changed_separator_is_refused(
        credential in well_formed(),
        separator in prop_oneof![
            any::<char>().prop_filter("not `:`", |c| *c != ':').prop_map(String::from),
            prop::sample::select(vec!["", "::", " : ", " :", ": ", "：", ":\u{200b}"])
                .prop_map(String::from),
        ],
    ) {
        let mutated = format!("{}{separator}{}", &credential[..35], &credential[36..]);
        assert_refused(&mutated)?;
    }

    #[test]
    fn swapped_halves_are_refused(credential in well_formed()) {
        assert_refused(&format!("{}:{}", &credential[36..], &credential[..35]))?;
    }

    #[test]
    fn x_api_key_from_arbitrary_bytes_never_panics_and_accepts_only_the_shape(
        value in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..160),
            // Well-formed credentials with junk around them, to reach acceptance.
            (
                prop::collection::vec(prop::sample::select(vec![b' ', b'\t', b'x', b':', 0xff]), 0..3),
                well_formed(),
                prop::collection::vec(prop::sample::select(vec![b' ', b'\t', b'x', b':', 0xff]), 0..3),
            )
                .prop_map(|(before, credential, after)| {
                    [before, credential.into_bytes(), after].concat()
                }),
        ],
    ) {
        // A value `HeaderValue` refuses (controls, CR/LF) never reaches a service.
        let Ok(header) = HeaderValue::from_bytes(&value) else {
            return Ok(());
        };
        let mut map = HeaderMap::new();
        map.insert(X_API_KEY, header);
        let trimmed = trim_ows(&value);
        match extract_credential(&map) {
            Ok(Some(credential)) => {
                prop_assert!(is_contract_shape(trimmed));
                let joined = format!("{}:{}", credential.public_key(), credential.secret_key());
                prop_assert_eq!(joined.as_bytes(), trimmed);
            }
            Ok(None) => prop_assert!(false, "a present X-API-Key is never `no credential`"),
            Err(MalformedCredential) => prop_assert!(!is_contract_shape(trimmed)),
        }
    }

    #[test]
    fn authorization_from_arbitrary_bytes_never_panics_and_accepts_only_bearer_shape(
        value in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..160),
            (
                prop::sample::select(vec!["Bearer ", "bearer  ", "BEARER\t", "Basic ", "Bearer", " Bearer "]),
                well_formed(),
                prop::sample::select(vec!["", " ", "\t", "x", ":"]),
            )
                .prop_map(|(scheme, credential, after)| format!("{scheme}{credential}{after}").into_bytes()),
        ],
    ) {
        let Ok(header) = HeaderValue::from_bytes(&value) else {
            return Ok(());
        };
        let mut map = HeaderMap::new();
        map.insert(AUTHORIZATION, header);
        if let Ok(Some(credential)) = extract_credential(&map) {
            let joined = format!("{}:{}", credential.public_key(), credential.secret_key());
            prop_assert!(is_contract_shape(joined.as_bytes()));
            let trimmed = trim_ows(&value);
            prop_assert!(trimmed.len() > 7 && trimmed[..7].eq_ignore_ascii_case(b"bearer "));
            prop_assert_eq!(trim_ows(&trimmed[7..]), joined.as_bytes());
        }
    }

    #[test]
    fn secret_hash_hex_round_trips(hex in "[0-9a-fA-F]{64}") {
        let hash = SecretHash::from_hex(&hex).unwrap();
        let lower = hash.to_hex();
        prop_assert_eq!(&lower, &hex.to_ascii_lowercase());
        prop_assert!(SecretHash::from_hex(&lower).unwrap().ct_eq(&hash));
    }

    #[test]
    fn computed_hashes_round_trip_through_hex(secret in any::<String>()) {
        let hasher = KeyHasher::new(&Pepper::try_from("property-test-pepper").unwrap());
        let hash = hasher.hash(&secret);
        let hex = hash.to_hex();
        prop_assert_eq!(hex.len(), 64);
        prop_assert!(hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')));
        let back = SecretHash::from_hex(&hex).unwrap();
        prop_assert!(back.ct_eq(&hash));
        prop_assert!(hasher.verify(&secret, &back));
    }

    #[test]
    fn secret_hash_refuses_anything_but_64_hex(value in any::<String>()) {
        let is_hex64 = value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit());
        prop_assert_eq!(SecretHash::from_hex(&value).is_some(), is_hex64);
    }
}

#[test]
fn generated_key_pairs_always_parse() {
    for _ in 0..10_000 {
        let pair = KeyPair::generate().unwrap();
        let credential = pair.credential();
        assert!(is_contract_shape(credential.as_bytes()), "{pair:?}");
        let parsed = Credential::parse(&credential).unwrap();
        assert_eq!(parsed.public_key(), pair.public_key.as_str());
        assert_eq!(parsed.secret_key(), pair.secret_key.expose());
        assert!(PublicKey::parse(pair.public_key.as_str()).is_ok());
        assert!(SecretKey::parse(pair.secret_key.expose()).is_ok());
    }
}
