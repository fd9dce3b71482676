//! The config error both daemons return from loading and validating their TOML files: it
//! names the file and, for a bad value, the key (with its list index, e.g. `chains[1].name`).

pub mod millis;

use std::path::Path;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("reading {file}: {source}")]
    Read {
        file: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{file}: {source}")]
    Parse {
        file: String,
        #[source]
        source: toml::de::Error,
    },
    #[error("{file}: `{key}` {problem}")]
    Invalid {
        file: String,
        key: String,
        problem: String,
    },
}

impl ConfigError {
    /// A bad value: `key` names it (with list indices), `problem` says what is wrong.
    pub fn invalid(file: &str, key: impl Into<String>, problem: impl Into<String>) -> Self {
        Self::Invalid {
            file: file.to_string(),
            key: key.into(),
            problem: problem.into(),
        }
    }
}

/// Reads a config file into text (the error names the file).
pub fn read(path: &Path) -> Result<String, ConfigError> {
    std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        file: path.display().to_string(),
        source,
    })
}

/// Parses TOML text into `T` (the error names the file and keeps the parser's cause).
pub fn parse_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    file: &str,
) -> Result<T, ConfigError> {
    toml::from_str(text).map_err(|source| ConfigError::Parse {
        file: file.to_string(),
        source,
    })
}
