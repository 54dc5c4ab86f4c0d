//! The pepper: the server-side HMAC key, how it is loaded from the environment
//! or a file, and how a new one is generated.

use std::fmt;

use zeroize::{Zeroize, ZeroizeOnDrop};

use super::RandomSourceError;
use crate::policy::limits::MIN_PEPPER_LEN;

/// The server-side HMAC key.
///
/// Never printed: `Debug` is redacted and the bytes are zeroed on drop.
#[derive(Clone, Zeroize, ZeroizeOnDrop)]
pub struct Pepper(Vec<u8>);

impl Pepper {
    /// Wraps pepper bytes, refusing an empty pepper or one shorter than
    /// [`MIN_PEPPER_LEN`] bytes.
    ///
    /// The reference service uses the UTF-8 bytes of its configured text, so pass
    /// `text.as_bytes()` (or use `Pepper::try_from(&str)`) for compatibility.
    pub fn new(bytes: impl Into<Vec<u8>>) -> Result<Self, PepperError> {
        let bytes = bytes.into();
        match bytes.len() {
            0 => Err(PepperError::Empty),
            len if len < MIN_PEPPER_LEN => Err(PepperError::TooShort { len }),
            _ => Ok(Self(bytes)),
        }
    }

    /// Generates a random pepper: 32 alphanumeric characters from the OS
    /// CSPRNG, about 190 bits (text, so that it can be stored in a file or an
    /// environment variable).
    pub fn generate() -> Result<Self, RandomSourceError> {
        let pair = super::KeyPair::generate()?;
        Ok(Self(pair.secret_key.expose().as_bytes()[3..].to_vec()))
    }

    /// The pepper bytes. Never log them.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// Reads the pepper from a file (UTF-8 text; one trailing newline is
    /// ignored), or, if the file does not exist, generates one and writes it there
    /// with mode `0600`. Returns the pepper and whether it was just generated.
    ///
    /// A new pepper is written whole to a temporary file beside `path` and then
    /// linked into place, so no process ever reads a partly written pepper, a
    /// crash leaves no empty file behind, and of two processes starting at once
    /// the second uses the first one's pepper. An existing file that group or
    /// others may read is used, with a warning.
    pub fn load_or_generate(path: &std::path::Path) -> Result<(Self, bool), PepperFileError> {
        match std::fs::read(path) {
            Ok(bytes) => {
                warn_if_shared(path);
                return Ok((Self::from_file_bytes(bytes)?, false));
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => return Err(PepperFileError::Io(err)),
        }
        let pepper =
            Self::generate().map_err(|err| PepperFileError::Io(std::io::Error::other(err)))?;
        let temporary = write_temporary(path, pepper.expose())?;
        let linked = std::fs::hard_link(&temporary, path);
        let _ = std::fs::remove_file(&temporary);
        match linked {
            Ok(()) => Ok((pepper, true)),
            // Another process won the race: use its pepper.
            Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => {
                Ok((Self::from_file_bytes(std::fs::read(path)?)?, false))
            }
            Err(err) => Err(PepperFileError::Io(err)),
        }
    }

    /// The pepper from the environment variable `var` (its UTF-8 text) if it is
    /// set, or else [`Pepper::load_or_generate`] at `path`. Says where it came from,
    /// so that the caller can log it (never the pepper itself).
    pub fn from_env_or_file(
        var: &str,
        path: &std::path::Path,
    ) -> Result<(Self, PepperSource), PepperFileError> {
        match std::env::var(var) {
            Ok(text) => Self::try_from(text.as_str())
                .map(|pepper| (pepper, PepperSource::Environment))
                .map_err(|err| PepperFileError::Env(var.to_owned(), err)),
            Err(std::env::VarError::NotUnicode(_)) => {
                Err(PepperFileError::EnvNotUtf8(var.to_owned()))
            }
            Err(std::env::VarError::NotPresent) => {
                let (pepper, generated) = Self::load_or_generate(path)?;
                let source = if generated {
                    PepperSource::Generated
                } else {
                    PepperSource::File
                };
                Ok((pepper, source))
            }
        }
    }

    fn from_file_bytes(mut bytes: Vec<u8>) -> Result<Self, PepperFileError> {
        if bytes.ends_with(b"\n") {
            bytes.pop();
            if bytes.ends_with(b"\r") {
                bytes.pop();
            }
        }
        if std::str::from_utf8(&bytes).is_err() {
            bytes.zeroize();
            return Err(PepperFileError::NotUtf8);
        }
        Ok(Self::new(bytes)?)
    }
}

/// Writes `pepper` and a newline to a new file with mode `0600` beside `path`,
/// synced to disk, and returns its path.
fn write_temporary(
    path: &std::path::Path,
    pepper: &[u8],
) -> Result<std::path::PathBuf, PepperFileError> {
    use std::io::Write;
    let name = path
        .file_name()
        .map_or_else(|| "pepper".into(), |name| name.to_string_lossy());
    let nonce = super::KeyPair::generate()
        .map_err(|err| PepperFileError::Io(std::io::Error::other(err)))?;
    let temporary = path.with_file_name(format!(
        ".{name}.{}.tmp",
        &nonce.public_key.as_str()["pk_".len()..]
    ));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(&temporary)?;
    let written = file
        .write_all(pepper)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all());
    if let Err(err) = written {
        let _ = std::fs::remove_file(&temporary);
        return Err(PepperFileError::Io(err));
    }
    Ok(temporary)
}

/// Warns when the pepper file may be read by its group or by others.
fn warn_if_shared(path: &std::path::Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(metadata) = std::fs::metadata(path) {
            let mode = metadata.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:03o}"),
                    "the pepper file is readable by group or others; restrict it with chmod 600"
                );
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// Where [`Pepper::from_env_or_file`] found the pepper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PepperSource {
    /// The environment variable.
    Environment,
    /// The pepper file, as it was.
    File,
    /// Generated just now and saved to the pepper file.
    Generated,
}

/// A pepper could not be loaded from the environment or a pepper file.
#[derive(Debug, thiserror::Error)]
pub enum PepperFileError {
    /// The environment variable holds a refused pepper.
    #[error("{0}: {1}")]
    Env(String, PepperError),
    /// The environment variable is not UTF-8 text.
    #[error("{0} is not valid UTF-8 text")]
    EnvNotUtf8(String),
    /// Reading or writing the file failed.
    #[error("pepper file: {0}")]
    Io(#[from] std::io::Error),
    /// The file is not UTF-8 text.
    #[error("pepper file is not UTF-8 text")]
    NotUtf8,
    /// The file's pepper is refused.
    #[error(transparent)]
    Invalid(#[from] PepperError),
}

impl TryFrom<&str> for Pepper {
    type Error = PepperError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        Self::new(value.as_bytes())
    }
}

impl fmt::Debug for Pepper {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Pepper(<redacted>)")
    }
}

/// A pepper was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PepperError {
    /// The pepper is empty.
    #[error("the API key pepper is empty; configure a secret of at least {MIN_PEPPER_LEN} bytes")]
    Empty,
    /// The pepper is shorter than [`MIN_PEPPER_LEN`].
    #[error("the API key pepper is {len} bytes long; it must be at least {MIN_PEPPER_LEN} bytes")]
    TooShort {
        /// Its length in bytes.
        len: usize,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pepper_bounds() {
        assert_eq!(Pepper::new(Vec::new()).err(), Some(PepperError::Empty));
        assert_eq!(Pepper::try_from("").err(), Some(PepperError::Empty));
        assert_eq!(
            Pepper::try_from("fifteen-bytes!!").err(),
            Some(PepperError::TooShort { len: 15 })
        );
        assert!(Pepper::try_from("sixteen-bytes!!!").is_ok());
        let message = PepperError::TooShort { len: 3 }.to_string();
        assert!(message.contains("at least 16 bytes"), "{message}");
    }

    #[test]
    fn pepper_length_counts_bytes_not_characters() {
        // 8 characters, 16 bytes.
        assert!(Pepper::try_from("éééééééé").is_ok());
        assert!(Pepper::try_from("ééééééé").is_err());
    }

    #[test]
    fn generated_pepper_is_long_enough_and_random() {
        let a = Pepper::generate().unwrap();
        let b = Pepper::generate().unwrap();
        assert_eq!(a.expose().len(), 32);
        assert_ne!(a.expose(), b.expose());
    }

    #[test]
    fn pepper_file_is_generated_once_with_mode_0600_and_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys.pepper");
        let (first, created) = Pepper::load_or_generate(&path).unwrap();
        assert!(created);
        let (second, created) = Pepper::load_or_generate(&path).unwrap();
        assert!(!created);
        assert_eq!(first.expose(), second.expose());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        std::fs::write(&path, "a-hand-written-pepper-value\n").unwrap();
        let (read, _) = Pepper::load_or_generate(&path).unwrap();
        assert_eq!(read.expose(), b"a-hand-written-pepper-value");
        std::fs::write(&path, "short\n").unwrap();
        assert!(matches!(
            Pepper::load_or_generate(&path),
            Err(PepperFileError::Invalid(PepperError::TooShort { len: 5 }))
        ));
    }

    #[test]
    fn concurrent_first_starts_agree_on_one_pepper_and_leave_no_temporary_file() {
        for _ in 0..20 {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("api-keys.pepper");
            let peppers: Vec<Vec<u8>> = std::thread::scope(|scope| {
                let handles: Vec<_> = (0..8)
                    .map(|_| scope.spawn(|| Pepper::load_or_generate(&path).unwrap()))
                    .collect();
                handles
                    .into_iter()
                    .map(|handle| handle.join().unwrap().0.expose().to_vec())
                    .collect()
            });
            assert!(peppers.iter().all(|pepper| pepper == &peppers[0]));
            assert_eq!(peppers[0].len(), 32);
            let files: Vec<_> = std::fs::read_dir(dir.path())
                .unwrap()
                .map(|entry| entry.unwrap().file_name())
                .collect();
            assert_eq!(files, vec![std::ffi::OsString::from("api-keys.pepper")]);
        }
    }

    #[test]
    fn a_pepper_file_readable_by_others_is_used_with_a_warning() {
        use std::{
            os::unix::fs::PermissionsExt,
            sync::{Arc, Mutex},
        };
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl std::io::Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> std::io::Result<()> {
                Ok(())
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys.pepper");
        std::fs::write(&path, "a-hand-written-pepper-value\n").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let buffer = Buffer::default();
        let subscriber = tracing_subscriber::fmt()
            .with_writer({
                let buffer = buffer.clone();
                move || buffer.clone()
            })
            .finish();
        let (pepper, generated) = tracing::subscriber::with_default(subscriber, || {
            Pepper::load_or_generate(&path).unwrap()
        });
        assert!(!generated);
        assert_eq!(pepper.expose(), b"a-hand-written-pepper-value");
        let log = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        assert!(log.contains("readable by group or others"), "{log}");
        assert!(log.contains("644"), "{log}");
        assert!(!log.contains("a-hand-written-pepper-value"), "{log}");
    }

    #[test]
    fn from_env_or_file_falls_back_to_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("api-keys.pepper");
        let unset = "TOWER_API_KEYS_TEST_PEPPER_THAT_IS_NEVER_SET";
        let (first, source) = Pepper::from_env_or_file(unset, &path).unwrap();
        assert_eq!(source, PepperSource::Generated);
        let (second, source) = Pepper::from_env_or_file(unset, &path).unwrap();
        assert_eq!(source, PepperSource::File);
        assert_eq!(first.expose(), second.expose());
    }
}
